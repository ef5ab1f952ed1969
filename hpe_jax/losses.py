"""The method's losses (REFERENCE.md 1, "Losses"): each one unweighted, and the training
objective `compute_losses`, their weighted sum; jax.numpy, jit-able, batched.

Each loss is a float32 scalar and stays finite, with finite gradients, when its masks are all zero.

The objective sums the losses of LOSSES, by name. A new loss is a function here, its term (what
it reads of `Inputs`) and a `Loss` entry in LOSSES; a weighted one also gets its weight field in
LossConfig and, under the same name, in default_config.py's train fields; its test goes in
tests/test_losses.py. The PyTorch peer (tools/lib/torch_peer.py) computes every term in torch,
under the same name, for tools/compare_peer.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Callable
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax import joints
from hpe_jax import targets
from hpe_jax.models import interface

_EPS_LENGTH = 1e-8  # inside the bone-length sqrt: a finite gradient at zero length
_EPS_DEPTH = 1e-4  # the reference's normaliser of the depth loss


def heatmap_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """(B, H, W, J) each -> scalar mean squared error over all elements."""
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def smooth_l1(x: jax.Array) -> jax.Array:
  """Elementwise 0.5 x^2 where |x| < 1, else |x| - 0.5 (Huber with delta 1)."""
  abs_x = jnp.abs(x)
  return jnp.where(abs_x < 1.0, 0.5 * jnp.square(x), abs_x - 0.5)


def depth_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """(B, J) each -> scalar sum(mask * smooth_l1(pred - target)) / (sum(mask) + 1e-4)."""
  mask = mask.astype(jnp.float32)
  # Zero the difference where unmasked so a NaN target (no 3D) reaches neither loss nor gradient.
  diff = jnp.where(mask > 0, pred.astype(jnp.float32) - target.astype(jnp.float32), 0.0)
  return jnp.sum(mask * smooth_l1(diff)) / (jnp.sum(mask) + _EPS_DEPTH)


def _bone_arrays():
  """GEOMETRIC_BONE_GROUPS as flat arrays: ends a, b (E,), weights (E,), one-hot groups (E, G)."""
  groups = list(joints.GEOMETRIC_BONE_GROUPS.values())
  bones = [(a, b, w, g) for g, group in enumerate(groups) for (a, b), w in group]
  a, b, weight, group = (np.array(column) for column in zip(*bones))
  return a, b, weight.astype(np.float32), np.eye(len(groups), dtype=np.float32)[group]


_BONE_A, _BONE_B, _BONE_WEIGHT, _BONE_GROUP = _bone_arrays()


def geometric_loss(xy: jax.Array, z: jax.Array, visible: jax.Array, is_2d: jax.Array) -> jax.Array:
  """Bone-length consistency within each group of GEOMETRIC_BONE_GROUPS (weight not applied).

  Bone e = (a, b) has length l_e = w_e sqrt(|xy_a - xy_b|^2 + (z_a - z_b)^2 + eps) and counts
  when both ends are visible. A group with n counted bones and mean length E costs
  sum (l_e - E)^2 / (2 n), 0 if n = 0. The loss sums the groups of the 2D samples and divides by
  the batch size B (all samples).

  Args:
    xy: (B, 16, 2) MPII-16 joints in crop units.
    z: (B, 16) root-relative depth in crop units.
    visible: (B, 16) 1 for usable joints, 0 otherwise.
    is_2d: (B,) bool, the samples the loss applies to.
  Returns:
    Scalar float32.
  """
  xyz = jnp.concatenate([xy, z[..., None]], axis=-1).astype(jnp.float32)
  delta = xyz[:, _BONE_A] - xyz[:, _BONE_B]  # (B, E, 3)
  length = _BONE_WEIGHT * jnp.sqrt(jnp.sum(jnp.square(delta), axis=-1) + _EPS_LENGTH)
  visible = visible.astype(jnp.float32)
  counted = visible[:, _BONE_A] * visible[:, _BONE_B]  # (B, E)
  # Per-group sums as products with the (E, G) one-hot matrix; max(n, 1) keeps empty groups at 0.
  count = jnp.maximum(counted @ _BONE_GROUP, 1.0)  # (B, G)
  mean = (counted * length) @ _BONE_GROUP / count
  deviation = length - mean @ _BONE_GROUP.T  # (B, E)
  per_sample = jnp.sum((counted * jnp.square(deviation)) @ _BONE_GROUP / (2.0 * count), axis=-1)
  return jnp.sum(jnp.where(is_2d, per_sample, 0.0)) / xy.shape[0]


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """How the losses are weighted; sigma is the heatmap Gaussian's, in heatmap pixels."""

  sigma: float = 2.0
  depth_weight: float = 0.0
  geometric_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What the terms read, for one batch: jax arrays here, torch tensors in the PyTorch peer
  (where maps are NCHW)."""

  batch: dict  # the training batch (tools/lib/benchmark.py's random_batch lays it out)
  config: LossConfig
  heatmaps: Any  # (S, B, h, w, J): every supervised output
  size: int  # of the (square) heatmaps
  xy_hm: Any  # (B, J, 2): the ground-truth joints in heatmap pixels
  inside: Any  # (B, J): 1 for annotated joints on the map
  depth: Any  # (B, J): the predicted depth in crop units; None for a model without depth


@dataclasses.dataclass(frozen=True)
class Loss:
  """One loss of the objective."""

  # (inputs, samples: (B,) bool, the ones it applies to; None: all) -> scalar
  term: Callable[[Inputs, Any], Any]
  samples: str  # 'all', '2d' or '3d'
  weight: str | None = None  # the LossConfig field that weights it; None: weight 1
  needs_depth: bool = False  # computed for models with depth output only


def _heatmap_term(x: Inputs, samples: None) -> jax.Array:
  """MSE on every supervised output (summed over hourglass stacks), unannotated joints
  weighted 0."""
  del samples  # all
  target = targets.gaussian_heatmaps(x.xy_hm, x.inside, x.size, x.config.sigma)
  weight = x.batch['joints_mask'][:, None, None, :]
  return sum(heatmap_loss(h * weight, target) for h in x.heatmaps)


def _depth_term(x: Inputs, samples: jax.Array) -> jax.Array:
  """Read at the ground-truth joint locations."""
  return depth_loss(x.depth, x.batch['depth'], x.inside * samples[:, None])


def _geometric_term(x: Inputs, samples: jax.Array) -> jax.Array:
  """Bone-length consistency of the ground-truth xy with the predicted depth."""
  return geometric_loss(x.xy_hm / x.size, x.depth, x.inside, samples)


LOSSES = {
  'heatmap': Loss(_heatmap_term, 'all'),
  'depth': Loss(_depth_term, '3d', 'depth_weight', needs_depth=True),
  'geometric': Loss(_geometric_term, '2d', 'geometric_weight', needs_depth=True),
}


def loss_config(config) -> LossConfig:
  """A run config's LossConfig: data.sigma, and train.<weight> for each weighted loss."""
  return LossConfig(
    sigma=config.data.sigma,
    **{loss.weight: config.train[loss.weight] for loss in LOSSES.values() if loss.weight},
  )


def _samples(batch: dict, which: str):
  """(B,) bool: the batch's samples `which` ('2d' or '3d') names; None for 'all'."""
  if which == 'all':
    return None
  return batch['has_3d'] if which == '3d' else ~batch['has_3d']


def weighted_sum(
  inputs: Inputs, terms: Mapping[str, Callable] | None = None
) -> tuple[Any, dict[str, Any]]:
  """The objective from `inputs`: each loss of LOSSES (by its term, or by `terms`' one of the
  same name) on its samples, weighted and summed in LOSSES' order. -> (total, {'<name>_loss',
  'loss': the total})."""
  total, metrics = None, {}
  for name, loss in LOSSES.items():
    if loss.needs_depth and inputs.depth is None:
      continue
    term = loss.term if terms is None else terms[name]
    value = metrics[f'{name}_loss'] = term(inputs, _samples(inputs.batch, loss.samples))
    weighted = value if loss.weight is None else getattr(inputs.config, loss.weight) * value
    total = weighted if total is None else total + weighted
  metrics['loss'] = total
  return total, metrics


def compute_losses(outputs: dict, batch: dict, config: LossConfig) -> tuple[jax.Array, dict]:
  """The method's objective for one batch (REFERENCE.md 1, "Losses"): the losses of LOSSES
  that the model's outputs allow, weighted by `config` -> (total, metrics: weighted_sum's)."""
  heatmaps = outputs['heatmaps']  # (S, B, h, w, J)
  size = heatmaps.shape[2]
  xy_hm = targets.input_to_heatmap(batch['joints'], batch['image'].shape[1] / size)
  return weighted_sum(
    Inputs(
      batch=batch,
      config=config,
      heatmaps=heatmaps,
      size=size,
      xy_hm=xy_hm,
      inside=targets.inside_heatmap(xy_hm, size) * batch['joints_mask'],
      depth=interface.predicted_depth(outputs, xy_hm),
    )
  )

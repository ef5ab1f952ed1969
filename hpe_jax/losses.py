"""The method's losses (REFERENCE.md 1, "Losses"), unweighted; jax.numpy, jit-able, batched.

Each loss is a float32 scalar and stays finite, with finite gradients, when its masks are all zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax import joints

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

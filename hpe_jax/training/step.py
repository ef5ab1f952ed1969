"""The jit-compiled train and predict steps.

The model and optimiser are split once into static graph definitions and array state; the steps
are plain `jax.jit` functions of that state (no per-step graph traversal), with the state
donated and replicated and the batch sharded along the mesh's `data` axis. Under jit, BatchNorm
over the sharded batch uses global batch statistics, so N devices compute what 1 device would.
"""

from __future__ import annotations

import dataclasses
import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpe_jax import losses
from hpe_jax import targets

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """How the losses are weighted; sigma is the heatmap Gaussian's, in heatmap pixels."""

  sigma: float = 2.0
  depth_weight: float = 0.0
  geometric_weight: float = 0.0


def normalize_images(images: jax.Array, dtype) -> jax.Array:
  """(B, H, W, 3) uint8 RGB -> ImageNet-normalised `dtype` (done on the device: 4x less to ship)."""
  return ((images.astype(jnp.float32) - _IMAGENET_MEAN) / _IMAGENET_STD).astype(dtype)


def predicted_depth(outputs: dict, xy_hm: jax.Array) -> jax.Array | None:
  """(B, J) depth in crop units: read from the depth map at `xy_hm`, or the regressed vector."""
  if 'depth_map' in outputs:
    return targets.gather_at(outputs['depth_map'], xy_hm)
  return outputs.get('depth')


def compute_losses(outputs: dict, batch: dict, config: LossConfig) -> tuple[jax.Array, dict]:
  """The method's losses for one batch (REFERENCE.md 1, "Losses").

  Heatmaps: MSE on every supervised output (summed over hourglass stacks), unannotated joints
  weighted 0. Depth: on 3D samples, read at the ground-truth joint locations. Geometric: on 2D
  samples, bone-length consistency of ground-truth xy with the predicted depth.
  """
  heatmaps = outputs['heatmaps']  # (S, B, h, w, J)
  size = heatmaps.shape[2]
  xy_hm = targets.input_to_heatmap(batch['joints'], batch['image'].shape[1] / size)
  annotated = batch['joints_mask']
  inside = targets.inside_heatmap(xy_hm, size) * annotated
  target = targets.gaussian_heatmaps(xy_hm, inside, size, config.sigma)
  weight = annotated[:, None, None, :]
  heatmap = sum(losses.heatmap_loss(h * weight, target) for h in heatmaps)
  metrics = {'heatmap_loss': heatmap}
  total = heatmap
  depth = predicted_depth(outputs, xy_hm)
  if depth is not None:
    has_3d = batch['has_3d']
    metrics['depth_loss'] = losses.depth_loss(depth, batch['depth'], inside * has_3d[:, None])
    metrics['geometric_loss'] = losses.geometric_loss(xy_hm / size, depth, inside, ~has_3d)
    total = (total + config.depth_weight * metrics['depth_loss']
             + config.geometric_weight * metrics['geometric_loss'])
  metrics['loss'] = total
  return total, metrics


def train_step(model_def: nnx.GraphDef, optimizer_def: nnx.GraphDef, state: dict, batch: dict,
               *, loss_config: LossConfig, dtype) -> tuple[dict, dict]:
  """One optimisation step. state = {'model': ..., 'optimizer': ...} -> (new state, metrics)."""
  model = nnx.merge(model_def, state['model'])
  optimizer = nnx.merge(optimizer_def, state['optimizer'])
  images = normalize_images(batch['image'], dtype)

  def loss_fn(model):
    return compute_losses(model(images), batch, loss_config)

  grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
  (_, metrics), grads = grad_fn(model)
  optimizer.update(model, grads)
  metrics['grad_norm'] = optax.global_norm(grads)
  return {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}, metrics


def predict_step(model_def: nnx.GraphDef, model_state, images: jax.Array, *, dtype) -> dict:
  """Inference: sub-pixel heatmap peaks as input-image pixels `pred_xy` (B, J, 2), their heatmap
  values `pred_peak` (B, J), and `pred_depth` (B, J) in crop units read at those peaks (models
  with depth)."""
  outputs = nnx.merge(model_def, model_state)(normalize_images(images, dtype))
  heatmaps = outputs['heatmaps'][-1]
  xy_hm, peak = targets.heatmap_peaks(heatmaps, subpixel=True)
  prediction = {
      'pred_xy': targets.heatmap_to_input(xy_hm, images.shape[1] / heatmaps.shape[1]),
      'pred_peak': peak}
  depth = predicted_depth(outputs, xy_hm)
  if depth is not None:
    prediction['pred_depth'] = depth
  return prediction


def jit_steps(model_def, eval_model_def, optimizer_def, state, mesh, loss_config, dtype):
  """Compiles the steps for `mesh`: state replicated (and donated), batch split along 'data'."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state_sharding = jax.tree.map(lambda _: replicated, state)
  train = jax.jit(
      functools.partial(train_step, model_def, optimizer_def, loss_config=loss_config,
                        dtype=dtype),
      donate_argnums=0, out_shardings=(state_sharding, replicated))
  predict = jax.jit(functools.partial(predict_step, eval_model_def, dtype=dtype),
                    out_shardings=replicated)
  return train, predict

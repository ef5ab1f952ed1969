"""The jit-compiled train step, compiled beside inference's predict step (inference/readout.py)
for the periodic evaluation.

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
import optax

from hpe_jax import losses
from hpe_jax import models
from hpe_jax import targets
from hpe_jax.inference import readout
from hpe_jax.models import interface
from hpe_jax.models import xla_cpu
from hpe_jax.training import optimizer as optimizer_lib


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """How the losses are weighted; sigma is the heatmap Gaussian's, in heatmap pixels."""

  sigma: float = 2.0
  depth_weight: float = 0.0
  geometric_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class GraphDefs:
  """The static halves of the split model (train and eval mode) and optimiser."""

  model: nnx.GraphDef
  eval_model: nnx.GraphDef
  optimizer: nnx.GraphDef


def init_state(config) -> tuple[GraphDefs, dict]:
  """Builds the model and optimiser `config` describes -> (graph defs, state {'model',
  'optimizer'}), for a config that passed `default_config.validate`."""
  model = models.create_model(
    config.model, with_depth=config.model.depth, rngs=nnx.Rngs(config.seed)
  )
  optimizer = nnx.Optimizer(model, optimizer_lib.make_optimizer(config.train), wrt=nnx.Param)
  model.eval()
  eval_model_def = nnx.graphdef(model)
  model.train()
  model_def, model_state = nnx.split(model)
  optimizer_def, optimizer_state = nnx.split(optimizer)
  return (
    GraphDefs(model_def, eval_model_def, optimizer_def),
    {'model': model_state, 'optimizer': optimizer_state},
  )


def loss_config(config) -> LossConfig:
  return LossConfig(
    sigma=config.data.sigma,
    depth_weight=config.train.depth_weight,
    geometric_weight=config.train.geometric_weight,
  )


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
  depth = interface.predicted_depth(outputs, xy_hm)
  if depth is not None:
    has_3d = batch['has_3d']
    metrics['depth_loss'] = losses.depth_loss(depth, batch['depth'], inside * has_3d[:, None])
    metrics['geometric_loss'] = losses.geometric_loss(xy_hm / size, depth, inside, ~has_3d)
    total = (
      total
      + config.depth_weight * metrics['depth_loss']
      + config.geometric_weight * metrics['geometric_loss']
    )
  metrics['loss'] = total
  return total, metrics


def train_step(
  model_def: nnx.GraphDef,
  optimizer_def: nnx.GraphDef,
  state: dict,
  batch: dict,
  *,
  loss_config: LossConfig,
  dtype,
) -> tuple[dict, dict]:
  """One optimisation step. state = {'model': ..., 'optimizer': ...} -> (new state, metrics).

  metrics['finite'] says whether the loss, the gradient norm and the whole new state are finite:
  the train loop reads it at its next host sync and stops a diverged run before it saves.
  """
  model = nnx.merge(model_def, state['model'])
  optimizer = nnx.merge(optimizer_def, state['optimizer'])
  images = interface.normalize_images(batch['image'], dtype)

  def loss_fn(model):
    return compute_losses(model(images), batch, loss_config)

  grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
  (_, metrics), grads = grad_fn(model)
  optimizer.update(model, grads)
  metrics['grad_norm'] = optax.tree.norm(grads)
  new_state = {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}
  metrics['finite'] = (
    jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm']) & all_finite(new_state)
  )
  return new_state, metrics


def all_finite(tree) -> jax.Array:
  """() bool: every floating-point value in `tree` is finite."""
  checks = [
    jnp.isfinite(x).all()
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(jnp.result_type(x), jnp.floating)
  ]
  return jnp.stack(checks).all() if checks else jnp.bool_(True)


def jit_steps(defs: GraphDefs, state: dict, mesh, config):
  """Compiles the steps for `mesh`: state replicated (and donated), batch split along 'data'.
  -> (train(state, batch) -> (state, metrics), predict(model_state, images) -> prediction with
  the config's eval.flip_test and eval.subpixel, and the reference's readout for the legacy
  MPJPE)."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state_sharding = jax.tree.map(lambda _: replicated, state)
  dtype = jnp.dtype(config.model.dtype)
  train = jax.jit(
    functools.partial(
      train_step, defs.model, defs.optimizer, loss_config=loss_config(config), dtype=dtype
    ),
    donate_argnums=0,
    out_shardings=(state_sharding, replicated),
    compiler_options=xla_cpu.compiler_options(mesh),
  )
  predict = readout.jit_predict(
    defs.eval_model,
    mesh,
    dtype,
    flip_test=config.eval.flip_test,
    subpixel=config.eval.subpixel,
    reference_readout=True,
  )
  return train, predict

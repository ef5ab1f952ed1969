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
from hpe_jax.inference import readout
from hpe_jax.models import interface
from hpe_jax.models import xla_cpu
from hpe_jax.training import optimizer as optimizer_lib


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


def train_step(
  model_def: nnx.GraphDef,
  optimizer_def: nnx.GraphDef,
  state: dict,
  batch: dict,
  *,
  loss_config: losses.LossConfig,
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
    return losses.compute_losses(model(images), batch, loss_config)

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
      train_step, defs.model, defs.optimizer, loss_config=losses.loss_config(config), dtype=dtype
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

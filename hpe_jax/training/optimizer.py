"""The optimiser: Adam with the reference's step schedule and optional gradient clipping."""

from __future__ import annotations

import ml_collections
import optax


def learning_rate_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
  """Constant `lr`, multiplied by `lr_drop_factor` at each step of `lr_drop_steps`."""
  drops = sorted(int(step) for step in train_config.lr_drop_steps)
  return optax.piecewise_constant_schedule(
    train_config.lr, {step: train_config.lr_drop_factor for step in drops}
  )


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (weight decay 0, as the reference), after clipping the global norm if `grad_clip`."""
  adam = optax.adam(learning_rate_schedule(train_config))
  if train_config.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(train_config.grad_clip), adam)
  return adam

"""Heatmaps are rendered inside the jitted step from joint coordinates (16x2 floats shipped per
sample instead of 16x64x64): the targets equal host-rendered ones and the training loss is the
one host-rendered heatmaps would give, step after step."""

from __future__ import annotations

import functools

from conftest import tiny_config
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax import default_config
from hpe_jax import losses as losses_lib
from hpe_jax import targets
from hpe_jax.data import pipeline
from hpe_jax.models import interface
from hpe_jax.training import step as step_lib


def _host_heatmaps(joints_input, mask, image_size, map_size, sigma):
  """Numpy: (B, J, 2) input pixels -> (B, h, w, J) Gaussians, zero where masked or off the map."""
  stride = image_size / map_size
  xy = (joints_input + 0.5) / stride - 0.5  # pixel centres onto pixel centres
  pixel = np.floor(xy + 0.5)
  on_map = np.all((pixel >= 0) & (pixel < map_size), axis=-1) & (mask > 0)
  grid = np.arange(map_size)
  dx = grid[None, None, :] - xy[..., 0, None]  # (B, J, w)
  dy = grid[None, None, :] - xy[..., 1, None]  # (B, J, h)
  maps = np.exp(-(dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (2 * sigma**2))
  return np.transpose(maps * on_map[..., None, None], (0, 2, 3, 1)).astype(np.float32)


@pytest.mark.slow
def test_device_targets_and_losses_equal_host_rendered_ones(data_dir):
  config = tiny_config(data_dir, depth=True)
  defs, state = step_lib.init_state(config)
  loss_config = losses_lib.loss_config(config)
  train = jax.jit(
    functools.partial(
      step_lib.train_step, defs.model, defs.optimizer, loss_config=loss_config, dtype=jnp.float32
    )
  )

  @jax.jit
  def outputs_and_losses(model_state, batch):
    model = nnx.merge(defs.model, model_state)
    outputs = model(interface.normalize_images(batch['image'], jnp.float32))
    size = outputs['heatmaps'].shape[2]
    xy_hm = targets.input_to_heatmap(batch['joints'], batch['image'].shape[1] / size)
    device_targets = targets.gaussian_heatmaps(
      xy_hm, targets.inside_heatmap(xy_hm, size) * batch['joints_mask'], size, loss_config.sigma
    )
    return (
      outputs['heatmaps'],
      device_targets,
      losses_lib.compute_losses(outputs, batch, loss_config)[1],
    )

  iterator = iter(pipeline.train_dataset(default_config.describe(config)))
  for _ in range(3):  # a short run: the loss at every step
    batch = jax.tree.map(jnp.asarray, next(iterator))
    heatmaps, device_targets, losses = outputs_and_losses(state['model'], batch)
    host_targets = _host_heatmaps(
      np.asarray(batch['joints']),
      np.asarray(batch['joints_mask']),
      config.data.image_size,
      heatmaps.shape[2],
      config.data.sigma,
    )
    np.testing.assert_allclose(device_targets, host_targets, atol=1e-6)
    weight = np.asarray(batch['joints_mask'])[:, None, None, :]
    host_loss = np.mean((np.asarray(heatmaps[-1], np.float64) * weight - host_targets) ** 2)
    np.testing.assert_allclose(losses['heatmap_loss'], host_loss, rtol=1e-5)
    state, metrics = train(state, batch)
    np.testing.assert_allclose(metrics['heatmap_loss'], losses['heatmap_loss'], rtol=1e-6)

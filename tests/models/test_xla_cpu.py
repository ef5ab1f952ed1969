"""The layers' platform switch: the train step lowered for GPU and TPU runs stock lax ops only,
the one lowered for CPU keeps the XLA:CPU forms, and both compute the same losses and gradients."""

from __future__ import annotations

import functools
import re

from conftest import tiny_config
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax import losses
from hpe_jax.models import layers
from hpe_jax.models import xla_cpu
from hpe_jax.training import step

PLATFORMS = ('cuda', 'tpu', 'cpu')
# A forward convolution (NHWC x HWIO, where gradients swap or move dimensions) of an input
# dilated by 2: a transposed convolution's stock form.
DILATED_FORWARD_CONV = (
  r'stablehlo\.convolution[^\n]*\[b, 0, 1, f\]x\[0, 1, i, o\]->\[b, 0, 1, f\]'
  r'[^\n]*lhs_dilate = \[2, 2\]'
)


def random_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
  """A batch with the fields and dtypes the input pipeline yields; half the samples 3D."""
  rng = np.random.default_rng(seed)
  b, size, j = config.train.batch_size, config.data.image_size, 16
  return {
    'image': rng.integers(0, 256, (b, size, size, 3), np.uint8),
    'joints': rng.uniform(0, size, (b, j, 2)).astype(np.float32),
    'joints_mask': (rng.uniform(size=(b, j)) < 0.9).astype(np.float32),
    'has_3d': np.arange(b) % 2 == 0,
    'depth': rng.normal(size=(b, j)).astype(np.float32),
  }


@pytest.fixture(scope='module')
def tiny():
  """A ResNet-18 of width 8 with a depth head, 64 px, batch 8: (config, defs, state, batch)."""
  config = tiny_config('', depth=True)
  defs, state = step.init_state(config)
  return config, defs, state, random_batch(config)


@pytest.fixture(scope='module')
def programs(tiny) -> dict[str, str]:
  """The train step exported with `jax.export` for each platform: platform -> StableHLO text."""
  config, defs, state, batch = tiny
  train = jax.jit(
    functools.partial(
      step.train_step,
      defs.model,
      defs.optimizer,
      loss_config=losses.loss_config(config),
      dtype=jnp.float32,
    )
  )
  return {
    platform: jax.export.export(train, platforms=(platform,))(state, batch).mlir_module()
    for platform in PLATFORMS
  }


def count(op: str, text: str) -> int:
  return len(re.findall(rf'\bstablehlo\.{op}\b', text))


def activation_dots(text: str) -> list[str]:
  """The dot_generals with an operand of rank 4 or more: a convolution's gradient written as
  dots over (B, H, W, C) activations, which only the CPU forms do."""
  dots = re.findall(r'stablehlo\.dot_general [^\n]*?: \(([^)]*)\)', text)
  return [d for d in dots if any(t.count('x') >= 4 for t in d.split(', '))]


def num_convolutions(defs, state) -> int:
  """The model's convolution layers (transposed ones included)."""
  model = nnx.merge(defs.model, state['model'])
  return sum(
    isinstance(node, (nnx.Conv, layers.ConvTranspose)) for _, node in nnx.iter_graph(model)
  )


@pytest.mark.parametrize('platform', ['cuda', 'tpu'])
def test_gpu_and_tpu_programs_run_stock_ops(programs, tiny, platform):
  text = programs[platform]
  assert count('optimization_barrier', text) == 0  # nothing keeps XLA from fusing
  # Each convolution and its gradients are convolutions: forward, kernel gradient and input
  # gradient (but the first's: the images are not differentiated), no per-tap dots.
  assert count('convolution', text) == 3 * num_convolutions(*tiny[1:3]) - 1
  assert not activation_dots(text)
  # ResNet's one max pool: reduce_window, differentiated into select_and_scatter.
  assert count('reduce_window', text) == count('select_and_scatter', text) == 1
  # The transposed convolutions are one input-dilated convolution each, not four phase convs.
  assert len(re.findall(DILATED_FORWARD_CONV, text)) == 3
  assert not re.findall(r'stablehlo\.convolution[^\n]*tensor<2x2x\d+x\d+x', text)


def test_cpu_program_keeps_the_cpu_forms(programs):
  text = programs['cpu']
  assert count('optimization_barrier', text) == 2  # max pool: forward and gradient
  assert count('select_and_scatter', text) == count('reduce_window', text) == 0
  assert activation_dots(text)  # tap-dot input gradients, 1 x 1 kernel gradients
  # Each transposed convolution is four 2 x 2 phase convolutions.
  assert (
    len(re.findall(r'stablehlo\.convolution\([^\n]*, tensor<2x2x\d+x\d+xf32>\) ->', text)) == 4 * 3
  )
  assert not re.findall(DILATED_FORWARD_CONV, text)


def test_stock_ops_forces_the_stock_forms_on_cpu():
  x = jnp.ones((2, 8, 8, 4))
  grad = jax.jit(jax.grad(lambda x: layers.max_pool(x, 3, 2, 1).sum()))
  cpu = grad.lower(x).as_text()
  with xla_cpu.stock_ops():
    stock = grad.lower(x).as_text()  # traced again: the switch is part of the jit cache key
  assert count('optimization_barrier', cpu) == 2 and count('select_and_scatter', cpu) == 0
  assert count('optimization_barrier', stock) == 0 and count('select_and_scatter', stock) == 1
  assert grad.lower(x).as_text() == cpu


@pytest.mark.slow
def test_cpu_and_stock_forms_give_the_same_losses_and_gradients(tiny):
  config, defs, state, batch = tiny
  loss_config = losses.loss_config(config)

  @jax.jit
  def losses_and_grads(model_state, batch):
    model = nnx.merge(defs.model, model_state)
    images = (batch['image'].astype(jnp.float32) - 128) / 64  # roughly normalised
    loss_fn = lambda model: losses.compute_losses(model(images), batch, loss_config)
    (_, metrics), grads = nnx.value_and_grad(
      loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True
    )(model)
    return metrics, nnx.to_pure_dict(grads)

  cpu = losses_and_grads(state['model'], batch)
  with xla_cpu.stock_ops():
    stock = losses_and_grads(state['model'], batch)
  assert set(cpu[0]) >= {'heatmap_loss', 'depth_loss', 'geometric_loss', 'loss'}
  for key, value in cpu[0].items():
    np.testing.assert_allclose(stock[0][key], value, rtol=1e-6, err_msg=key)
  cpu_grads = dict(jax.tree_util.tree_flatten_with_path(cpu[1])[0])
  stock_grads = dict(jax.tree_util.tree_flatten_with_path(stock[1])[0])
  assert cpu_grads.keys() == stock_grads.keys()
  for path, grad in cpu_grads.items():
    largest = np.abs(grad).max()  # each parameter's own: small gradients are checked as closely
    assert largest > 0, jax.tree_util.keystr(path)
    np.testing.assert_allclose(
      stock_grads[path], grad, rtol=0, atol=1e-4 * largest, err_msg=jax.tree_util.keystr(path)
    )

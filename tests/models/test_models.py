"""Model zoo tests: the layers (stock and XLA:CPU forms), shapes, dtypes, BatchNorm modes,
grafting keys."""

from __future__ import annotations

import contextlib
import inspect
import math
import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax import default_config
from hpe_jax import models
from hpe_jax.errors import ConfigError
from hpe_jax.models import layers
from hpe_jax.models import xla_cpu

J = 16


@pytest.fixture(params=['cpu', 'stock'])
def form(request):
  """Runs a layer test with each form of the layers: on this CPU, 'cpu' is the default (the
  `xla_cpu` forms), 'stock' forces the lax/flax ones that GPUs and TPUs run."""
  with xla_cpu.stock_ops() if request.param == 'stock' else contextlib.nullcontext():
    yield request.param


def tiny_config(name: str, **overrides):
  c = default_config.base_config().model
  c.update(name=name, width=8, head_channels=16, num_stacks=1, hourglass_features=16, image_size=64)
  c.update(overrides)
  return c


def abstract_model(config, with_depth: bool):
  """The model with ShapeDtypeStruct leaves: builds in milliseconds, allocates nothing."""
  return nnx.eval_shape(
    lambda: models.create_model(config, with_depth=with_depth, rngs=nnx.Rngs(0))
  )


def flat_shapes(tree) -> dict[tuple, tuple]:
  return {
    path: tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(tree))[0]
  }


def images(batch: int = 2, size: int = 64, seed: int = 0) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3), jnp.float32)


def transposed_conv_reference(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """PyTorch ConvTranspose2d(4, stride=2, padding=1) by its definition: input pixel (i, j) adds
  x[i, j] @ kernel[ky, kx] to output pixel (2i + ky - 1, 2j + kx - 1)."""
  b, h, w, _ = x.shape
  full = np.zeros((b, 2 * h + 2, 2 * w + 2, kernel.shape[-1]))
  for i in range(h):
    for j in range(w):
      full[:, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += np.einsum(
        'bi,yxio->byxo', x[:, i, j], kernel
      )
  return full[:, 1:-1, 1:-1]  # padding=1 crops one pixel on each side


def lax_transposed_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The same with lax: no kernel flip (transpose_kernel), PyTorch padding p -> k - 1 - p = 2."""
  return jax.lax.conv_transpose(
    x,
    kernel.swapaxes(2, 3),
    (2, 2),
    ((2, 2), (2, 2)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    transpose_kernel=True,
  )


def test_transposed_conv_is_pytorchs(form):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  kernel = rng.normal(size=(4, 4, 3, 6)).astype(np.float32)
  cotangent = rng.normal(size=(2, 10, 14, 6)).astype(np.float32)
  layer = layers.ConvTranspose(3, 6, dtype=jnp.float32, rngs=nnx.Rngs(0))
  layer.kernel[...] = jnp.asarray(kernel)
  with jax.default_matmul_precision('highest'):  # no TF32 on GPUs
    out = layer(x)
    assert out.shape == (2, 10, 14, 6)
    np.testing.assert_allclose(out, transposed_conv_reference(x, kernel), atol=1e-5)
    np.testing.assert_allclose(out, lax_transposed_conv(x, kernel), atol=1e-5)
    # Gradients wrt the input and the kernel, through a random cotangent.
    loss = lambda y: jnp.sum(y * cotangent)
    got = (
      jax.grad(lambda x: loss(layer(x)))(x),
      nnx.to_pure_dict(nnx.grad(lambda layer: loss(layer(x)))(layer))['kernel'],
    )
    want = jax.grad(lambda x, k: loss(lax_transposed_conv(x, k)), argnums=(0, 1))(x, kernel)
  for g, w in zip(got, want):
    assert g.shape == w.shape and np.abs(w).max() > 1  # not trivially zero
    np.testing.assert_allclose(g, w, atol=1e-4)


def conv_reference(x, kernel, strides, padding, cotangent):
  """numpy: the convolution (B, H, W, I) x (kh, kw, I, O) and the gradients of
  sum(conv * cotangent) wrt x and kernel, tap by tap."""
  (top, bottom), (left, right) = padding
  padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  out_h, out_w = cotangent.shape[1:3]
  sy, sx = strides
  y = np.zeros(cotangent.shape)
  dx_padded, dkernel = np.zeros(padded.shape), np.zeros(kernel.shape)
  for ky in range(kernel.shape[0]):
    for kx in range(kernel.shape[1]):
      rows = slice(ky, ky + sy * (out_h - 1) + 1, sy)
      cols = slice(kx, kx + sx * (out_w - 1) + 1, sx)
      y += np.einsum('bhwi,io->bhwo', padded[:, rows, cols], kernel[ky, kx])
      dkernel[ky, kx] = np.einsum('bhwi,bhwo->io', padded[:, rows, cols], cotangent)
      dx_padded[:, rows, cols] += np.einsum('bhwo,io->bhwi', cotangent, kernel[ky, kx])
  return y, dx_padded[:, top : top + x.shape[1], left : left + x.shape[2]], dkernel


# The comments say which gradients the CPU form changes.
@pytest.mark.parametrize(
  'batch, size, kernel_size, stride, padding',
  [
    (2, 6, 3, 1, ((1, 1), (1, 1))),  # input gradient by tap dots (72 positions)
    (2, 7, 3, 2, ((1, 1), (1, 1))),  # strided, odd size: the last input row is unused
    (2, 9, 7, 2, ((3, 3), (3, 3))),  # the ResNet stem
    (2, 6, 1, 2, ((0, 0), (0, 0))),  # 1 x 1 downsampling: the kernel gradient as a dot
    (2, 5, 2, 1, ((1, 0), (0, 1))),  # a sub-pixel deconvolution phase
    (5, 16, 3, 1, ((1, 1), (1, 1))),  # 1280 positions: XLA's transposed convolution
  ],
)
def test_conv2d_and_its_gradients_match_numpy(form, batch, size, kernel_size, stride, padding):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
  kernel = rng.normal(size=(kernel_size, kernel_size, 3, 4)).astype(np.float32)
  out_shape = jax.eval_shape(lambda: layers.conv2d(x, kernel, (stride, stride), padding)).shape
  cotangent = rng.normal(size=out_shape).astype(np.float32)
  with jax.default_matmul_precision('highest'):
    y, vjp = jax.vjp(lambda x, k: layers.conv2d(x, k, (stride, stride), padding), x, kernel)
    dx, dkernel = jax.jit(vjp)(cotangent)
  want = conv_reference(
    x.astype(np.float64),
    kernel.astype(np.float64),
    (stride, stride),
    padding,
    cotangent.astype(np.float64),
  )
  for got, expected in zip((y, dx, dkernel), want):
    assert got.shape == expected.shape and np.abs(expected).max() > 1
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())


def max_pool_reference(x, window, stride, padding, cotangent):
  """numpy: PyTorch's MaxPool2d and its gradient (to each window's first maximum)."""
  padded = np.pad(
    x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=-np.inf
  )
  y = np.zeros(cotangent.shape)
  dx_padded = np.zeros(padded.shape)
  for b, i, j, c in np.ndindex(*cotangent.shape):
    patch = padded[b, stride * i : stride * i + window, stride * j : stride * j + window, c]
    ky, kx = np.unravel_index(np.argmax(patch), patch.shape)  # argmax: the first maximum
    y[b, i, j, c] = patch[ky, kx]
    dx_padded[b, stride * i + ky, stride * j + kx, c] += cotangent[b, i, j, c]
  return y, dx_padded[:, padding : padding + x.shape[1], padding : padding + x.shape[2]]


@pytest.mark.parametrize(
  'size, window, stride, padding', [(8, 3, 2, 1), (9, 3, 2, 1), (8, 2, 2, 0)]
)
def test_max_pool_and_its_gradient_match_pytorch_semantics(form, size, window, stride, padding):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
  x[0, :4, :4] = 0.5  # ties, as ReLU's zeros make them: the first maximum takes the gradient
  x[1, :, :, 1] = -3.0  # all tied, next to the padding, which must never win
  out_size = (size + 2 * padding - window) // stride + 1
  cotangent = rng.normal(size=(2, out_size, out_size, 3)).astype(np.float32)
  y, vjp = jax.vjp(lambda x: layers.max_pool(x, window, stride, padding), x)
  (dx,) = jax.jit(vjp)(cotangent)
  want_y, want_dx = max_pool_reference(x, window, stride, padding, cotangent)
  np.testing.assert_array_equal(y, want_y)
  np.testing.assert_allclose(dx, want_dx, atol=1e-6)
  # Each window's gradient lands exactly once.
  np.testing.assert_allclose(dx.sum(), cotangent.sum(), atol=1e-5)


def output_shapes(model, size: int) -> dict[str, tuple]:
  """Traces the forward pass only; checks every output is float32."""
  out = nnx.eval_shape(
    lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  )
  assert all(v.dtype == jnp.float32 for v in out.values())
  return {k: v.shape for k, v in out.items()}


@pytest.mark.parametrize(
  'name, with_depth',
  [
    ('resnet18', False),
    ('resnet18', True),
    ('resnet34', True),
    ('resnet50', False),
    ('resnet50', True),
    # The deepest two only trace longer (about 3 and 6 s): slow.
    pytest.param('resnet101', True, marks=pytest.mark.slow),
    pytest.param('resnet152', True, marks=pytest.mark.slow),
  ],
)
def test_resnet_output_shapes(name, with_depth):
  want = {'heatmaps': (1, 2, 16, 16, J)} | ({'depth_map': (2, 16, 16, J)} if with_depth else {})
  assert output_shapes(abstract_model(tiny_config(name), with_depth), 64) == want


@pytest.mark.parametrize(
  'num_stacks, with_depth, size',
  [
    (1, False, 64),
    (1, True, 64),
    pytest.param(2, False, 64, marks=pytest.mark.slow),  # two stacks trace twice as long
    pytest.param(2, True, 64, marks=pytest.mark.slow),
    (1, True, 128),
  ],
)
def test_hourglass_output_shapes(num_stacks, with_depth, size):
  config = tiny_config('hourglass', num_stacks=num_stacks, image_size=size)
  hm = size // 4
  want = {'heatmaps': (num_stacks, 2, hm, hm, J)} | ({'depth': (2, J)} if with_depth else {})
  assert output_shapes(abstract_model(config, with_depth), size) == want


def test_hourglass_depth_needs_its_image_size():
  model = abstract_model(tiny_config('hourglass', image_size=128), True)
  with pytest.raises(ValueError, match='model.image_size'):
    output_shapes(model, 64)


def test_num_upsample_sets_output_stride():
  shapes = output_shapes(abstract_model(tiny_config('resnet18', num_upsample=2), True), 64)
  assert shapes == {'heatmaps': (1, 2, 8, 8, J), 'depth_map': (2, 8, 8, J)}


@pytest.mark.parametrize('name', models.NAMES)
def test_every_backbone_is_what_its_registry_entry_says(name):
  """Its constructor takes the fields its entry lists (config fields with defaults) and the
  common arguments; image sizes off its size multiple are refused; a multiply-adds count where
  it has one. (Each backbone's outputs: its shape tests above.)"""
  backbone = models.BACKBONES[name]
  # The module's __init__, less self and what a functools.partial binds (nnx wraps the class's).
  module = getattr(backbone.constructor, 'func', backbone.constructor)
  bound = len(getattr(backbone.constructor, 'args', ()))
  parameters = list(inspect.signature(module.__init__).parameters)[1 + bound :]
  assert set(parameters) == set(backbone.fields) | {'num_joints', 'with_depth', 'dtype', 'rngs'}
  assert {field.name for field in backbone.fields.values()} <= set(
    default_config.base_config().model
  )
  models.check_config(tiny_config(name, image_size=2 * backbone.size_multiple))
  with pytest.raises(ConfigError, match='must be a multiple of'):
    models.check_config(tiny_config(name, image_size=backbone.size_multiple * 3 // 2))
  assert (models.multiply_adds(tiny_config(name)) > 0) == (backbone.multiply_adds is not None)


@pytest.mark.parametrize('name', ['resnet18', pytest.param('hourglass', marks=pytest.mark.slow)])
def test_bfloat16_compute_float32_params_and_outputs(name):
  f32 = models.create_model(tiny_config(name), with_depth=True, rngs=nnx.Rngs(0))
  bf16 = models.create_model(tiny_config(name, dtype='bfloat16'), with_depth=True, rngs=nnx.Rngs(1))
  nnx.update(bf16, nnx.state(f32))
  assert {x.dtype for x in jax.tree.leaves(nnx.state(bf16))} == {jnp.dtype(jnp.float32)}
  f32.eval()  # fresh running statistics: batch statistics of a tiny batch amplify rounding
  bf16.eval()
  x = images()
  want, got = nnx.jit(lambda a, b: (a(x), b(x)))(f32, bf16)
  for key in want:
    assert got[key].dtype == jnp.float32
    assert not np.array_equal(got[key], want[key])  # it did compute in bfloat16
    assert np.linalg.norm(got[key] - want[key]) < 0.05 * np.linalg.norm(want[key])


@pytest.mark.parametrize('name', ['resnet50', pytest.param('hourglass', marks=pytest.mark.slow)])
def test_depth_model_only_adds_depth_parameters(name):
  config = tiny_config(name, num_stacks=2)
  plain = flat_shapes(nnx.state(abstract_model(config, False)))
  deep = flat_shapes(nnx.state(abstract_model(config, True)))
  extra = set(deep) - set(plain)
  assert set(plain) <= set(deep)
  assert extra and all('depth' in '/'.join(map(str, path)) for path in extra)
  assert all(deep[path] == shape for path, shape in plain.items())
  assert all('depth' not in '/'.join(map(str, path)) for path in plain)


@pytest.mark.parametrize('name', ['resnet18', 'hourglass'])
def test_model_holds_no_rng_keys(name):
  model = abstract_model(tiny_config(name), True)
  assert not nnx.state(model, nnx.RngState)
  state = nnx.state(model)
  assert not any(jnp.issubdtype(x.dtype, jax.dtypes.prng_key) for x in jax.tree.leaves(state))


def test_batchnorm_train_and_eval_modes(form):
  model = models.create_model(tiny_config('resnet18'), with_depth=False, rngs=nnx.Rngs(0))
  x = images(batch=4)
  stats = lambda: [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]
  run = nnx.jit(lambda m, x: m(x)['heatmaps'])
  initial = stats()

  # Inference, through a view (the model itself stays in training mode) and model.eval():
  # running statistics are used and left alone, so each sample's output ignores the rest.
  view = nnx.view(model, use_running_average=True)
  assert not model.backbone.stem_bn.use_running_average
  by_view = run(view, x)
  model.eval()
  by_eval = run(model, x)
  np.testing.assert_array_equal(by_view, by_eval)
  np.testing.assert_allclose(run(model, x[:2]), by_eval[:, :2], rtol=1e-5, atol=1e-9)
  assert all(np.array_equal(a, b) for a, b in zip(initial, stats()))

  # Training: batch statistics normalise (outputs depend on the batch) and the running ones move.
  model.train()
  by_train = run(model, x)
  assert not np.allclose(by_train, by_eval)
  assert not np.allclose(run(model, x[:2]), by_train[:, :2])
  assert all(not np.array_equal(a, b) for a, b in zip(initial, stats()))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_batchnorm_training_pass_matches_numpy_and_flax_gradients(form, dtype):
  rng = np.random.default_rng(2)
  x = (rng.normal(size=(4, 5, 5, 6)) * 3 + 2).astype(np.float32)
  scale, bias = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
  cotangent = rng.normal(size=x.shape).astype(np.float32)
  ours = layers.batch_norm(6, dtype=dtype, rngs=nnx.Rngs(0))
  theirs = nnx.BatchNorm(6, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=nnx.Rngs(0))
  for bn in (ours, theirs):
    bn.scale[...], bn.bias[...] = jnp.asarray(scale), jnp.asarray(bias)
  loss = lambda bn, x: jnp.sum(bn(x).astype(jnp.float32) * cotangent)
  (grad_ours, dx_ours), (grad_theirs, dx_theirs) = (
    nnx.grad(loss, argnums=(0, 1))(bn, jnp.asarray(x, dtype)) for bn in (ours, theirs)
  )

  mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
  want = (x - mean) / np.sqrt(var + 1e-5) * scale + bias
  tolerance = 1e-5 if dtype == jnp.float32 else 3e-2
  for bn in (ours, theirs):
    np.testing.assert_allclose(
      bn(jnp.asarray(x, dtype)).astype(np.float32), want, atol=tolerance * 10
    )
  # Two training calls moved the running statistics from (0, 1) twice, by momentum 0.9.
  np.testing.assert_allclose(ours.mean[...], (1 - 0.9**2) * mean, rtol=tolerance)
  np.testing.assert_allclose(ours.var[...], 0.9**2 + (1 - 0.9**2) * var, rtol=tolerance)
  np.testing.assert_allclose(
    np.asarray(dx_ours, np.float32),
    np.asarray(dx_theirs, np.float32),
    atol=tolerance * np.abs(np.asarray(dx_theirs, np.float32)).max(),
  )
  for name in ('scale', 'bias'):
    got, expected = nnx.to_pure_dict(grad_ours)[name], nnx.to_pure_dict(grad_theirs)[name]
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
  ours.eval(), theirs.eval()
  np.testing.assert_array_equal(ours(jnp.asarray(x, dtype)), theirs(jnp.asarray(x, dtype)))


def test_resnet50_backbone_matches_torchvision():
  config = tiny_config('resnet50', width=64, head_channels=256, image_size=256)
  model = abstract_model(config, False)
  params = jax.tree.leaves(nnx.state(model.backbone, nnx.Param))
  assert sum(math.prod(p.shape) for p in params) == 23_508_032  # torchvision resnet50 minus fc
  assert output_shapes(model, 256) == {'heatmaps': (1, 2, 64, 64, J)}


@pytest.mark.parametrize(
  'field, value',
  [
    ('dtype', 'float16'),
    ('width', 0),
    ('head_channels', 0),
    ('num_upsample', -1),
    ('num_stacks', 0),
    ('hourglass_features', 15),
    ('image_size', 96),
  ],
)
def test_invalid_config_raises(field, value):
  config = tiny_config('hourglass')
  config[field] = value
  with pytest.raises(ValueError, match=re.escape(f'model.{field}={value!r}')):
    models.create_model(config, with_depth=False, rngs=nnx.Rngs(0))


def test_invalid_name_lists_allowed_values():
  message = (
    "model.name='resnet19' is not one of resnet18, resnet34, resnet50, resnet101, "
    'resnet152, hourglass'
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    models.create_model(tiny_config('resnet19'), with_depth=False, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('name', ['resnet18', 'resnet50'])
def test_multiply_adds_count_the_models_convolutions(name):
  """resnet.multiply_adds (what the study's cost table scales by) against XLA's own count of the
  traced forward pass, at 256 px where border padding is a small share: 2 x multiply-adds, within
  the few percent of BatchNorm and activations XLA also counts."""
  from hpe_jax.models import resnet  # pylint: disable=g-import-not-at-top

  config = default_config.base_config().model
  config.name, config.width, config.head_channels, config.image_size = name, 8, 16, 256
  model = nnx.eval_shape(lambda: models.create_model(config, with_depth=True, rngs=nnx.Rngs(0)))
  model.eval()
  graph, state = nnx.split(model)
  forward = jax.jit(lambda s, x: nnx.merge(graph, s)(x))
  flops = forward.lower(state, jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32))
  counted = 2 * resnet.multiply_adds(name, 256, width=8, head_channels=16)
  assert models.multiply_adds(config) == counted // 2
  assert 0.95 < flops.cost_analysis()['flops'] / counted < 1.06
  # Twice the width, nearly four times the work (the stem and 1x1 heads grow twice); the depth
  # head adds its 1x1 conv only.
  wider = resnet.multiply_adds(name, 256, width=16, head_channels=32)
  assert 3.0 < wider / resnet.multiply_adds(name, 256, width=8, head_channels=16) < 4.0
  assert resnet.multiply_adds(name, 256) - resnet.multiply_adds(name, 256, with_depth=False) == (
    64 * 64 * 256 * 16
  )

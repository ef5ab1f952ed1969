"""The XLA:CPU forms of the model's layers, and the one switch that picks them.

The models are written with stock lax/flax layers (`layers`): what GPUs and TPUs run, where the
compiler fuses freely and cuDNN has tuned kernels for each op. XLA:CPU lowers some of those ops
slowly (a convolution's gradients through kernel and activation transposes, max pool's gradient
`select_and_scatter` through an argmax over index arrays, a strided transposed convolution's
backward pass), so on CPU each such layer runs a form written here instead, forward pass and
gradient together:

- `conv_general_dilated`: lax's convolution whose gradients are per-tap dots where XLA:CPU's
  transposes cost more than the arithmetic;
- `max_pool`: a max over the window's strided slices that stores each window's first maximum;
- `batch_norm_train`: training-mode BatchNorm with its gradient written out;
- `conv_transpose_4x4_stride2`: PyTorch's ConvTranspose2d(4, 2, 1) as four 2x2 convolutions.

Each computes what the stock layer does (same parameters, same values up to rounding, gradients
to the same elements). `switch(cpu_form, stock_form, *operands)` stages both and lets the
lowering platform choose, so a program exported for GPU or TPU holds only the stock forms;
`stock_ops()` forces the stock forms on CPU too, to compare. `compiler_options` holds XLA:CPU's
options for the compiled steps. Shapes: images NHWC, kernels HWIO.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
import contextlib
import functools

import jax
import jax.numpy as jnp

# True inside `stock_ops()`. A jit cache key, so a function traced with one value is traced
# again, not reused, under the other.
_STOCK = jax.make_user_context(default_value=False)

# XLA:CPU hands convolutions to YNNPACK by default, whose kernels were slower than XLA's own
# (Eigen) ones for our layers, forward and gradients (BENCHMARKS.md): YNNPACK keeps only the
# dots and reductions (BatchNorm statistics), where it is the faster. A jaxlib that drops the
# option fails at compilation, naming it (tests/training/test_train.py checks it).
_YNN_FUSIONS = ('LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT', 'LIBRARY_FUSION_TYPE_REDUCE')
CPU_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ','.join(_YNN_FUSIONS)}

_NHWC = ('NHWC', 'HWIO', 'NHWC')
# Up to this many output positions (batch x height x width), a convolution's input gradient runs
# as one dot per kernel tap instead of XLA:CPU's transposed convolution, which first copies the
# kernel flipped and transposed: for small, wide layers (ResNet's 512-channel 4 x 4 ones) that
# copy cost more than the convolution; from 2048 positions on, XLA's own was the faster.
_MAX_POSITIONS_FOR_TAP_DOTS = 1024

Padding = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))


def compiler_options(mesh: jax.sharding.Mesh) -> dict[str, str]:
  """XLA options (`jax.jit(compiler_options=...)`) for a step compiled for `mesh`'s platform."""
  return dict(CPU_COMPILER_OPTIONS) if mesh.devices.flat[0].platform == 'cpu' else {}


@contextlib.contextmanager
def stock_ops() -> Iterator[None]:
  """Within it, functions traced (jitted, exported) run the stock forms on CPU as well."""
  with _STOCK(True):
    yield


def switch(cpu_form: Callable, stock_form: Callable, *operands, **static):
  """`cpu_form(*operands, **static)` in programs lowered for CPU (unless in `stock_ops()`),
  `stock_form(*operands, **static)` for any other platform. Operands are arrays (pytrees of);
  `static` are the forms' static arguments, hashable."""
  if _STOCK.value:
    return stock_form(*operands, **static)
  static = tuple(sorted(static.items()))
  return jax.lax.platform_dependent(
    *operands, cpu=_bind(cpu_form, static), default=_bind(stock_form, static)
  )


@functools.cache
def _bind(form: Callable, static: tuple[tuple[str, object], ...]) -> Callable:
  # One function object per form and static arguments: jax caches the branches' traces (and
  # their derivatives) by function, so layers of the same shapes are traced once.
  return functools.partial(form, **dict(static))


def _lax_conv(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding
) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  **kwargs,
) -> jax.Array:
  """`jax.lax.conv_general_dilated`, as `conv2d` where that changes the gradient: plain NHWC
  convolutions with a 1 x 1 kernel or at most `_MAX_POSITIONS_FOR_TAP_DOTS` output positions."""
  nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  plain = (
    jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
    and not isinstance(padding, str)
    and feature_group_count == 1
    and all(d in (None, 1) or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
    and all(v is None for v in kwargs.values())
  )
  if plain:
    strides, padding = tuple(window_strides), tuple(map(tuple, padding))
    out_h, out_w = (
      (size + low + high - k) // stride + 1
      for size, (low, high), k, stride in zip(lhs.shape[1:3], padding, rhs.shape[:2], strides)
    )
    # A symbolic batch (jax.export's) cannot tell its size: lax's own gradient, which inference
    # never takes (the forward pass is the same).
    batch = lhs.shape[0]
    few = isinstance(batch, int) and batch * out_h * out_w <= _MAX_POSITIONS_FOR_TAP_DOTS
    if rhs.shape[:2] == (1, 1) or few:
      return conv2d(lhs, rhs, strides, padding)
  return jax.lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    **kwargs,
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding
) -> jax.Array:
  """lax's NHWC x HWIO convolution, (B, H, W, I) x (kh, kw, I, O) -> (B, Ho, Wo, O), whose
  gradients avoid XLA:CPU's kernel and activation transposes where those cost more than the
  arithmetic: the input gradient as one dot per kernel tap up to `_MAX_POSITIONS_FOR_TAP_DOTS`
  output positions, a 1 x 1 kernel's gradient as one dot."""
  return _lax_conv(x, kernel, strides, padding)


def _conv2d_fwd(x, kernel, strides, padding):
  return _lax_conv(x, kernel, strides, padding), (x, kernel)


def _window_taps(
  x: jax.Array,
  window: tuple[int, int],
  strides: tuple[int, int],
  padding: Padding,
  pad_value: float = 0.0,
) -> list[jax.Array]:
  """(B, H, W, C) -> what each tap of a sliding (kh, kw) window meets, taps in row-major order:
  (B, Ho, Wo, C) strided slices of x padded ((top, bottom), (left, right)) with `pad_value`.
  Tap (ky, kx) of output (i, j) is padded input (ky + sy * i, kx + sx * j)."""
  (top, bottom), (left, right) = padding
  padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad_value)
  out_h = (padded.shape[1] - window[0]) // strides[0] + 1
  out_w = (padded.shape[2] - window[1]) // strides[1] + 1
  return [
    jax.lax.slice(
      padded,
      (0, ky, kx, 0),
      (
        x.shape[0],
        ky + strides[0] * (out_h - 1) + 1,
        kx + strides[1] * (out_w - 1) + 1,
        x.shape[3],
      ),
      (1, *strides, 1),
    )
    for ky in range(window[0])
    for kx in range(window[1])
  ]


def _sum_at_taps(
  per_tap: list[jax.Array],
  window: tuple[int, int],
  strides: tuple[int, int],
  padding: Padding,
  x_shape,
) -> jax.Array:
  """The transpose of `_window_taps`: one (B, Ho, Wo, C) array per tap -> (B, H, W, C), each
  added at the input positions its tap read (a pad with interior padding); what falls on the
  padding is dropped."""
  (top, bottom), (left, right) = padding
  _, height, width, _ = x_shape
  padded_h, padded_w = height + top + bottom, width + left + right
  _, out_h, out_w, _ = per_tap[0].shape
  zero = jnp.zeros((), per_tap[0].dtype)
  total = None
  for tap, value in enumerate(per_tap):
    ky, kx = divmod(tap, window[1])
    placed = jax.lax.pad(
      value,
      zero,
      (
        (0, 0, 0),
        (ky, padded_h - ky - strides[0] * (out_h - 1) - 1, strides[0] - 1),
        (kx, padded_w - kx - strides[1] * (out_w - 1) - 1, strides[1] - 1),
        (0, 0, 0),
      ),
    )
    total = placed if total is None else total + placed
  return total[:, top : top + height, left : left + width]


def _conv2d_bwd(strides, padding, residuals, grad):
  x, kernel = residuals
  _, lax_vjp = jax.vjp(lambda x, kernel: _lax_conv(x, kernel, strides, padding), x, kernel)
  dx, dkernel = lax_vjp(grad)  # what is replaced below is dropped from the program
  if kernel.shape[:2] == (1, 1):
    (x_tap,) = _window_taps(x, (1, 1), strides, padding)
    dkernel = jax.lax.dot_general(x_tap, grad, (((0, 1, 2), (0, 1, 2)), ((), ())))[
      None, None
    ].astype(kernel.dtype)
  if grad.shape[0] * grad.shape[1] * grad.shape[2] <= _MAX_POSITIONS_FOR_TAP_DOTS:
    # One (B*Ho*Wo, O) x (O, I) dot per kernel tap, added where the tap read.
    per_tap = [
      jax.lax.dot_general(grad, kernel[ky, kx], (((3,), (1,)), ((), ())))
      for ky in range(kernel.shape[0])
      for kx in range(kernel.shape[1])
    ]
    dx = _sum_at_taps(per_tap, kernel.shape[:2], strides, padding, x.shape)
  return dx, dkernel


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _pool_window_taps(x, window, stride, padding):
  return _window_taps(
    x, (window, window), (stride, stride), ((padding, padding),) * 2, pad_value=-jnp.inf
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
  """PyTorch's MaxPool2d, (B, H, W, C) -> (B, Ho, Wo, C), as `layers.max_pool`, written out: a
  max over the window's strided slices, and its gradient (to each window's first maximum in
  row-major order) as their padded sum. XLA:CPU expands the stock gradient, select_and_scatter,
  into an argmax reduce-window over four index arrays and a scatter, a sizeable share of a
  ResNet train step."""
  return functools.reduce(jnp.maximum, _pool_window_taps(x, window, stride, padding))


def _max_pool_fwd(x, window, stride, padding):
  # The barrier keeps XLA from fusing x's producer (BatchNorm, ReLU) into each of the taps,
  # which recomputed it window**2 times.
  taps = _pool_window_taps(jax.lax.optimization_barrier(x), window, stride, padding)
  y, first = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
  for tap, value in enumerate(taps[1:], 1):
    # Strictly greater: ties keep the earlier tap. Storing the index (rather than finding it
    # again in the backward pass) halves the backward's time: XLA fused that search into each
    # of the taps' pads.
    greater = value > y
    y, first = jnp.where(greater, value, y), jnp.where(greater, jnp.int8(tap), first)
  return y, (first, x.shape)


def _max_pool_bwd(window, stride, padding, residuals, grad):
  first, x_shape = residuals
  first = jax.lax.optimization_barrier(first)  # stored, not searched again inside each tap
  zero = jnp.zeros((), grad.dtype)
  per_tap = [jnp.where(first == tap, grad, zero) for tap in range(window * window)]
  return (
    _sum_at_taps(per_tap, (window, window), (stride, stride), ((padding, padding),) * 2, x_shape),
  )


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(
  x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`layers.batch_norm_train` (y, mean, var), with its gradient written out (two per-channel
  sums and one pass over x, as cuDNN's and PyTorch's are) rather than differentiated through
  the statistics' reductions, which XLA:CPU ran as several more passes over x."""
  return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.float32)
  mean = x32.mean(axes)
  var = jnp.maximum((x32 * x32).mean(axes) - mean * mean, 0.0)  # flax's fast variance
  inv_std = jax.lax.rsqrt(var + epsilon)
  y = ((x32 - mean) * (inv_std * scale) + bias).astype(x.dtype)
  return (y, mean, var), (x, mean, inv_std, scale)


def _batch_norm_train_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, mean, inv_std, scale = residuals
  grad_y, grad_mean, grad_var = cotangents
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  centred = x.astype(jnp.float32) - mean
  grad_y = grad_y.astype(jnp.float32)
  grad_bias = grad_y.sum(axes)
  grad_scale = (grad_y * centred).sum(axes) * inv_std
  grad_x = (scale * inv_std / count) * (
    count * grad_y - grad_bias - centred * (inv_std * grad_scale)
  )
  # The statistics' own cotangents (zero when they only feed the running averages).
  grad_x += grad_mean / count + grad_var * (2 / count) * centred
  return grad_x.astype(x.dtype), grad_scale, grad_bias


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


def phase_kernels(kernel: jax.Array) -> list[list[jax.Array]]:
  """Transposed-conv kernel (4, 4, I, O) -> kernels[ry][rx] (2, 2, I, O) of its output phases.

  Output pixel 2m + r of a kernel-4, stride-2, padding-1 transposed conv sums input pixels
  m + r - 1 + a (a in 0, 1) times kernel tap 3 - r - 2a: a 2x2 conv per phase.
  """
  # Taps 3 - r and 1 - r are taps r and r + 2 of the reversed kernel: static strided slices,
  # whose gradients are pads (an index array's gradient is a scatter-add, slow on XLA:CPU).
  reversed_kernel = kernel[::-1, ::-1]
  return [[reversed_kernel[ry::2, rx::2] for rx in range(2)] for ry in range(2)]


def conv_transpose_4x4_stride2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`layers.conv_transpose_4x4_stride2`, (B, H, W, I) x (4, 4, I, O) -> (B, 2H, 2W, O), as one
  2x2 conv per output phase (`phase_kernels`), interleaved: the transposed convolution's
  multiply-adds (a single 3x3 conv over all phases would do 9/4 of them), without its backward
  pass, which XLA:CPU ran many times slower."""
  b, h, w, _ = x.shape
  # Phase r's window starts at input pixel m + r - 1: pad 1 - r before and r after.
  phases = [
    [
      conv2d(x, phase_kernel, (1, 1), ((1 - ry, ry), (1 - rx, rx)))
      for rx, phase_kernel in enumerate(row)
    ]
    for ry, row in enumerate(phase_kernels(kernel))
  ]
  y = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (B, H, ry, W, rx, O)
  return y.reshape(b, 2 * h, 2 * w, y.shape[-1])

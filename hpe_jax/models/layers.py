"""Layers shared by the models: PyTorch-style convolutions and BatchNorm, pooling, upsampling and
PyTorch's 4x4 stride-2 transposed convolution.

Each layer is the stock lax/flax op, what GPUs and TPUs run; on CPU, `xla_cpu.switch` swaps in
the XLA:CPU form of the layers that have one (`xla_cpu`). Every layer computes in `dtype` and
keeps float32 parameters. Images are NHWC, kernels HWIO.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from hpe_jax.models import xla_cpu

# torchvision's conv init (kaiming_normal_, fan_out, relu); the heads use normal(0.001) instead.
HE_NORMAL = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
HEAD_INIT = nnx.initializers.normal(0.001)

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def conv_general_dilated(
  lhs: jax.Array, rhs: jax.Array, window_strides, padding, **options
) -> jax.Array:
  """nnx.Conv's convolution: `jax.lax.conv_general_dilated` (`options` are its keywords), on
  CPU `xla_cpu.conv_general_dilated`."""
  if not isinstance(padding, str):
    padding = tuple(map(tuple, padding))  # hashable, as `switch` wants
  return xla_cpu.switch(
    xla_cpu.conv_general_dilated,
    jax.lax.conv_general_dilated,
    lhs,
    rhs,
    window_strides=tuple(window_strides),
    padding=padding,
    **options,
  )


def conv2d(
  x: jax.Array,
  kernel: jax.Array,
  strides: tuple[int, int],
  padding: tuple[tuple[int, int], tuple[int, int]],
) -> jax.Array:
  """(B, H, W, I) x (kh, kw, I, O) -> (B, Ho, Wo, O), `padding` ((top, bottom), (left, right))."""
  return conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def conv(
  in_features: int,
  out_features: int,
  kernel_size: int,
  stride: int = 1,
  *,
  use_bias: bool = False,
  kernel_init=HE_NORMAL,
  dtype,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  """A k x k convolution padded k // 2 on each side, as PyTorch's ('SAME' pads a stride-2
  conv asymmetrically, which would shift the features of imported weights)."""
  return nnx.Conv(
    in_features,
    out_features,
    (kernel_size, kernel_size),
    stride,
    padding=kernel_size // 2,
    use_bias=use_bias,
    kernel_init=kernel_init,
    dtype=dtype,
    param_dtype=jnp.float32,
    conv_general_dilated=conv_general_dilated,
    rngs=rngs,
  )


def _batch_norm_train(
  x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.float32)
  mean = x32.mean(axes)
  var = jnp.maximum((x32 * x32).mean(axes) - mean * mean, 0.0)  # flax's fast variance
  y = (x32 - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias
  return y.astype(x.dtype), mean, var


def batch_norm_train(
  x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm over all axes but the last, flax's math: (..., C) -> (y like x,
  mean (C,), biased variance (C,)), statistics in float32."""
  return xla_cpu.switch(
    xla_cpu.batch_norm_train, _batch_norm_train, x, scale, bias, epsilon=epsilon
  )


class BatchNorm(nnx.BatchNorm):
  """nnx.BatchNorm over the last axis whose training-mode pass is `batch_norm_train`; the same
  variables (scale, bias, running mean and var), so checkpoints and imports are unchanged."""

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *, mask=None):
    if use_running_average is None:
      use_running_average = self.use_running_average
    if use_running_average or mask is not None or self.axis_name is not None:
      return super().__call__(x, use_running_average, mask=mask)
    y, mean, var = batch_norm_train(
      x.astype(self.dtype), self.scale[...], self.bias[...], self.epsilon
    )
    self.mean[...] = jax.lax.stop_gradient(
      self.momentum * self.mean[...] + (1 - self.momentum) * mean
    )
    self.var[...] = jax.lax.stop_gradient(self.momentum * self.var[...] + (1 - self.momentum) * var)
    return y


def batch_norm(features: int, *, dtype, rngs: nnx.Rngs) -> BatchNorm:
  """PyTorch's BatchNorm2d defaults (its momentum 0.1 is flax's 0.9)."""
  return BatchNorm(
    features, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
  )


def _max_pool(x: jax.Array, *, window: int, stride: int, padding: int) -> jax.Array:
  # Padded with -inf, reduce_window's identity for max, so the padding never wins; jax
  # differentiates it into select_and_scatter, whose `>=` selection keeps the first maximum.
  return jax.lax.reduce_window(
    x,
    -jnp.inf,
    jax.lax.max,
    (1, window, window, 1),
    (1, stride, stride, 1),
    ((0, 0), (padding, padding), (padding, padding), (0, 0)),
  )


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
  """PyTorch's MaxPool2d, (B, H, W, C) -> (B, Ho, Wo, C): the padding never wins the max, and
  the gradient goes to the first maximum of each window in row-major order, as PyTorch's does."""
  return xla_cpu.switch(
    xla_cpu.max_pool, _max_pool, x, window=window, stride=stride, padding=padding
  )


def upsample_nearest(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, 2H, 2W, C), nearest neighbour."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _conv_transpose_4x4_stride2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  # The transposed conv as a convolution: input dilated by 2, padded 4 - 1 - 1 = 2 on each side,
  # kernel flipped spatially (a transposed conv scatters where a convolution gathers).
  return jax.lax.conv_general_dilated(
    x, kernel[::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2), dimension_numbers=_NHWC
  )


def conv_transpose_4x4_stride2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """PyTorch's ConvTranspose2d(kernel_size=4, stride=2, padding=1), (B, H, W, I) x (4, 4, I, O)
  -> (B, 2H, 2W, O): input pixel (i, j) adds x[i, j] @ kernel[ky, kx] to output pixel
  (2i + ky - 1, 2j + kx - 1)."""
  return xla_cpu.switch(xla_cpu.conv_transpose_4x4_stride2, _conv_transpose_4x4_stride2, x, kernel)


class ConvTranspose(nnx.Module):
  """PyTorch's ConvTranspose2d(kernel_size=4, stride=2, padding=1, bias=False):
  (B, H, W, I) -> (B, 2H, 2W, O). The parameter is its kernel,
  `kernel[ky, kx, i, o] = torch_weight[i, o, ky, kx]` (taps unflipped)."""

  def __init__(
    self, in_features: int, out_features: int, *, kernel_init=HEAD_INIT, dtype, rngs: nnx.Rngs
  ):
    self.kernel = nnx.Param(
      kernel_init(rngs.params(), (4, 4, in_features, out_features), jnp.float32)
    )
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    return conv_transpose_4x4_stride2(x.astype(self.dtype), self.kernel[...].astype(self.dtype))

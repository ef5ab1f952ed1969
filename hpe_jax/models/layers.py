"""Layers shared by the models: PyTorch-style convolutions and BatchNorm, pooling, upsampling,
and the sub-pixel form of PyTorch's 4x4 stride-2 transposed convolution.

Every layer computes in `dtype` and keeps float32 parameters. Images are NHWC.
"""

from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp

# torchvision's conv init (kaiming_normal_, fan_out, relu); the heads use normal(0.001) instead.
HE_NORMAL = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
HEAD_INIT = nnx.initializers.normal(0.001)


_NHWC = ('NHWC', 'HWIO', 'NHWC')
# Up to this many output positions (batch x height x width), a convolution's input gradient runs
# as one dot per kernel tap instead of XLA:CPU's transposed convolution, which first copies the
# kernel flipped and transposed: for ResNet-18's 512-channel 4x4 layers at batch 8 that copy
# cost more than the convolution (dx 5.5 -> 1.8 ms); from 2048 positions on, XLA's is faster.
_MAX_POSITIONS_FOR_TAP_DOTS = 1024


def _lax_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
           padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """lax's NHWC x HWIO convolution, (B, H, W, I) x (kh, kw, I, O) -> (B, Ho, Wo, O), with
  `padding` ((top, bottom), (left, right)); on CPU its gradients avoid XLA's kernel and
  activation transposes where those cost more than the arithmetic (`_MAX_POSITIONS_FOR_TAP_DOTS`,
  and 1 x 1 kernels' gradients as dots)."""
  return _lax_conv(x, kernel, strides, padding)


def _conv2d_fwd(x, kernel, strides, padding):
  return _lax_conv(x, kernel, strides, padding), (x, kernel)


def _window_taps(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]],
                 pad_value: float = 0.0) -> list[jax.Array]:
  """(B, H, W, C) -> what each tap of a sliding (kh, kw) window meets, taps in row-major order:
  (B, Ho, Wo, C) strided slices of x padded ((top, bottom), (left, right)) with `pad_value`.
  Tap (ky, kx) of output (i, j) is padded input (ky + sy * i, kx + sx * j)."""
  (top, bottom), (left, right) = padding
  padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad_value)
  out_h = (padded.shape[1] - window[0]) // strides[0] + 1
  out_w = (padded.shape[2] - window[1]) // strides[1] + 1
  return [jax.lax.slice(padded, (0, ky, kx, 0),
                        (x.shape[0], ky + strides[0] * (out_h - 1) + 1,
                         kx + strides[1] * (out_w - 1) + 1, x.shape[3]), (1, *strides, 1))
          for ky in range(window[0]) for kx in range(window[1])]


def _sum_at_taps(per_tap: list[jax.Array], window: tuple[int, int], strides: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]], x_shape) -> jax.Array:
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
    placed = jax.lax.pad(value, zero, (
        (0, 0, 0),
        (ky, padded_h - ky - strides[0] * (out_h - 1) - 1, strides[0] - 1),
        (kx, padded_w - kx - strides[1] * (out_w - 1) - 1, strides[1] - 1),
        (0, 0, 0)))
    total = placed if total is None else total + placed
  return total[:, top:top + height, left:left + width]


def _conv2d_bwd(strides, padding, residuals, grad):
  x, kernel = residuals
  _, lax_vjp = jax.vjp(lambda x, kernel: _lax_conv(x, kernel, strides, padding), x, kernel)
  dx, dkernel = lax_vjp(grad)  # what XLA does not need below is dropped from the program
  on_cpu = {}
  if kernel.shape[:2] == (1, 1):
    (x_tap,) = _window_taps(x, (1, 1), strides, padding)
    on_cpu['dkernel'] = jax.lax.dot_general(
        x_tap, grad, (((0, 1, 2), (0, 1, 2)), ((), ())))[None, None].astype(kernel.dtype)
  if grad.shape[0] * grad.shape[1] * grad.shape[2] <= _MAX_POSITIONS_FOR_TAP_DOTS:
    # One (B*Ho*Wo, O) x (O, I) dot per kernel tap, added where the tap read.
    per_tap = [jax.lax.dot_general(grad, kernel[ky, kx], (((3,), (1,)), ((), ())))
               for ky in range(kernel.shape[0]) for kx in range(kernel.shape[1])]
    on_cpu['dx'] = _sum_at_taps(per_tap, kernel.shape[:2], strides, padding, x.shape)
  if on_cpu:
    lax_grads = {'dx': dx, 'dkernel': dkernel}
    cpu_grads = jax.lax.platform_dependent(
        cpu=lambda: {**lax_grads, **on_cpu}, default=lambda: lax_grads)
    dx, dkernel = cpu_grads['dx'], cpu_grads['dkernel']
  return dx, dkernel


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, **kwargs):
  """`jax.lax.conv_general_dilated` for nnx.Conv: `conv2d` for the plain NHWC convolutions our
  models use, lax's own for anything else."""
  plain = (dimension_numbers == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
           and not isinstance(padding, str) and feature_group_count == 1
           and all(d in (None, 1) or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
           and all(v is None for v in kwargs.values()))
  if plain:
    return conv2d(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)))
  return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                      rhs_dilation, dimension_numbers, feature_group_count,
                                      **kwargs)


def conv(in_features: int, out_features: int, kernel_size: int, stride: int = 1, *,
         use_bias: bool = False, kernel_init=HE_NORMAL, dtype, rngs: nnx.Rngs) -> nnx.Conv:
  """A k x k convolution padded k // 2 on each side, as PyTorch's ('SAME' pads a stride-2
  conv asymmetrically, which would shift the features of imported weights)."""
  return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), stride,
                  padding=kernel_size // 2, use_bias=use_bias, kernel_init=kernel_init,
                  dtype=dtype, param_dtype=jnp.float32, conv_general_dilated=conv_general_dilated,
                  rngs=rngs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array,
                     epsilon: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm over all axes but the last: (..., C) -> (y like x, mean (C,),
  biased variance (C,)), statistics in float32.

  Its gradient is written out (two per-channel sums and one pass over x, as cuDNN's and
  PyTorch's are) instead of differentiated through the statistics' reductions.
  """
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
      count * grad_y - grad_bias - centred * (inv_std * grad_scale))
  # The statistics' own cotangents (zero when they only feed the running averages).
  grad_x += grad_mean / count + grad_var * (2 / count) * centred
  return grad_x.astype(x.dtype), grad_scale, grad_bias


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nnx.BatchNorm):
  """nnx.BatchNorm over the last axis whose training-mode pass is `batch_norm_train`; the same
  variables (scale, bias, running mean and var), so checkpoints and imports are unchanged."""

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *, mask=None):
    if use_running_average is None:
      use_running_average = self.use_running_average
    if use_running_average or mask is not None or self.axis_name is not None:
      return super().__call__(x, use_running_average, mask=mask)
    y, mean, var = batch_norm_train(x.astype(self.dtype), self.scale[...], self.bias[...],
                                    self.epsilon)
    self.mean[...] = jax.lax.stop_gradient(
        self.momentum * self.mean[...] + (1 - self.momentum) * mean)
    self.var[...] = jax.lax.stop_gradient(
        self.momentum * self.var[...] + (1 - self.momentum) * var)
    return y


def batch_norm(features: int, *, dtype, rngs: nnx.Rngs) -> BatchNorm:
  """PyTorch's BatchNorm2d defaults (its momentum 0.1 is flax's 0.9)."""
  return BatchNorm(features, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
                   rngs=rngs)


def _pool_window_taps(x, window, stride, padding):
  return _window_taps(x, (window, window), (stride, stride), ((padding, padding),) * 2,
                      pad_value=-jnp.inf)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
  """PyTorch's MaxPool2d, (B, H, W, C) -> (B, Ho, Wo, C): the padding never wins the max, and
  the gradient goes to the first maximum of each window in row-major order, as PyTorch's does.

  Written out (a max over the window's strided slices, and its gradient as their padded sum)
  because XLA:CPU expands reduce_window's gradient, select_and_scatter, into an argmax
  reduce-window over four index arrays and a scatter: ~35 ms of a 330 ms ResNet-18 step.
  """
  return functools.reduce(jnp.maximum, _pool_window_taps(x, window, stride, padding))


def _max_pool_fwd(x, window, stride, padding):
  # The barrier keeps XLA from fusing x's producer (BatchNorm, ReLU) into each of the taps,
  # which recomputed it window**2 times (ResNet-18 stem fwd + bwd: 21 -> 18 ms).
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
  return (_sum_at_taps(per_tap, (window, window), (stride, stride), ((padding, padding),) * 2,
                       x_shape),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def upsample_nearest(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, 2H, 2W, C), nearest neighbour."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


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
  """PyTorch's ConvTranspose2d(kernel_size=4, stride=2, padding=1), (B, H, W, I) x (4, 4, I, O)
  -> (B, 2H, 2W, O), as one 2x2 conv per output phase (`phase_kernels`), interleaved."""
  b, h, w, _ = x.shape
  # Phase r's window starts at input pixel m + r - 1: pad 1 - r before and r after.
  phases = [[conv2d(x, phase_kernel, (1, 1), ((1 - ry, ry), (1 - rx, rx)))
             for rx, phase_kernel in enumerate(row)]
            for ry, row in enumerate(phase_kernels(kernel))]
  y = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (B, H, ry, W, rx, O)
  return y.reshape(b, 2 * h, 2 * w, y.shape[-1])


class SubPixelConvTranspose(nnx.Module):
  """PyTorch's ConvTranspose2d(kernel_size=4, stride=2, padding=1, bias=False):
  (B, H, W, I) -> (B, 2H, 2W, O).

  The parameter is the transposed conv's own kernel, `kernel[ky, kx, i, o] =
  torch_weight[i, o, ky, kx]`, but it runs as four 2x2 convs, one per output phase
  (`phase_kernels`), interleaved: the same multiply-adds as the transposed conv, whose own
  backward pass was ~12x slower on XLA:CPU (and a single 3x3 conv over all phases does 9/4 of
  the work).
  """

  def __init__(self, in_features: int, out_features: int, *, kernel_init=HEAD_INIT, dtype,
               rngs: nnx.Rngs):
    self.kernel = nnx.Param(kernel_init(rngs.params(), (4, 4, in_features, out_features),
                                        jnp.float32))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    return conv_transpose_4x4_stride2(x.astype(self.dtype), self.kernel[...].astype(self.dtype))

"""Layers shared by the models: PyTorch-style convolutions and BatchNorm, pooling, upsampling,
and the sub-pixel form of PyTorch's 4x4 stride-2 transposed convolution.

Every layer computes in `dtype` and keeps float32 parameters. Images are NHWC.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

# torchvision's conv init (kaiming_normal_, fan_out, relu); the heads use normal(0.001) instead.
HE_NORMAL = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
HEAD_INIT = nnx.initializers.normal(0.001)


def conv(in_features: int, out_features: int, kernel_size: int, stride: int = 1, *,
         use_bias: bool = False, kernel_init=HE_NORMAL, dtype, rngs: nnx.Rngs) -> nnx.Conv:
  """A k x k convolution padded k // 2 on each side, as PyTorch's ('SAME' pads a stride-2
  conv asymmetrically, which would shift the features of imported weights)."""
  return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), stride,
                  padding=kernel_size // 2, use_bias=use_bias, kernel_init=kernel_init,
                  dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def batch_norm(features: int, *, dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """PyTorch's BatchNorm2d defaults (its momentum 0.1 is flax's 0.9)."""
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, dtype=dtype,
                       param_dtype=jnp.float32, rngs=rngs)


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
  """PyTorch's MaxPool2d: the padding never wins the max."""
  return nnx.max_pool(x, (window, window), (stride, stride), ((padding, padding),) * 2)


def upsample_nearest(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, 2H, 2W, C), nearest neighbour."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def depth_to_space(x: jax.Array) -> jax.Array:
  """(B, H, W, 2 * 2 * C) with channels ordered (row phase, column phase, c) -> (B, 2H, 2W, C)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c // 4)


# Output pixel 2m + r of a kernel-4, stride-2, padding-1 transposed conv sums input pixel
# m + t - 1 times kernel tap r + 3 - 2t, for the taps t in 0..2 where that lies in 0..3.
# _TAPS[t, r] is that kernel tap, or 4 (an appended zero tap) where there is none.
_TAPS = np.array([[r + 3 - 2 * t if 0 <= r + 3 - 2 * t <= 3 else 4 for r in range(2)]
                  for t in range(3)])


def subpixel_kernel(kernel: jax.Array) -> jax.Array:
  """Transposed-conv kernel (4, 4, I, O) -> the equivalent 3x3 conv kernel (3, 3, I, 4 O), its
  output channels ordered (row phase, column phase, o) for `depth_to_space`."""
  i, o = kernel.shape[2:]
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  taps = padded[_TAPS[:, :, None, None], _TAPS[None, None]]  # (ty, ry, tx, rx, I, O)
  return taps.transpose(0, 2, 4, 1, 3, 5).reshape(3, 3, i, 4 * o)


class SubPixelConvTranspose(nnx.Module):
  """PyTorch's ConvTranspose2d(kernel_size=4, stride=2, padding=1, bias=False):
  (B, H, W, I) -> (B, 2H, 2W, O).

  The parameter is the transposed conv's own kernel, `kernel[ky, kx, i, o] =
  torch_weight[i, o, ky, kx]`, but it runs as one 3x3 conv with 4 O outputs (one group per output
  phase, zero taps where a phase sees only 2x2 inputs) and a depth-to-space: the transposed conv's
  backward pass was ~12x slower on XLA:CPU, which outweighs the 9/4 extra multiply-adds.
  """

  def __init__(self, in_features: int, out_features: int, *, kernel_init=HEAD_INIT, dtype,
               rngs: nnx.Rngs):
    self.kernel = nnx.Param(kernel_init(rngs.params(), (4, 4, in_features, out_features),
                                        jnp.float32))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = subpixel_kernel(self.kernel[...]).astype(self.dtype)
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return depth_to_space(y)

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


def phase_kernels(kernel: jax.Array) -> list[list[jax.Array]]:
  """Transposed-conv kernel (4, 4, I, O) -> kernels[ry][rx] (2, 2, I, O) of its output phases.

  Output pixel 2m + r of a kernel-4, stride-2, padding-1 transposed conv sums input pixels
  m + r - 1 + a (a in 0, 1) times kernel tap 3 - r - 2a: a 2x2 conv per phase.
  """
  taps = lambda r: np.array([3 - r, 1 - r])  # the tap of window position a = 0, 1
  return [[kernel[taps(ry)][:, taps(rx)] for rx in range(2)] for ry in range(2)]


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
    b, h, w, _ = x.shape
    x = x.astype(self.dtype)
    # Phase r's window starts at input pixel m + r - 1: pad 1 - r before and r after.
    phases = [[jax.lax.conv_general_dilated(
        x, kernel.astype(self.dtype), (1, 1), ((1 - ry, ry), (1 - rx, rx)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
               for rx, kernel in enumerate(row)]
              for ry, row in enumerate(phase_kernels(self.kernel[...]))]
    y = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (B, H, ry, W, rx, O)
    return y.reshape(b, 2 * h, 2 * w, y.shape[-1])

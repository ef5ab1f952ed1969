"""Stacked hourglass (Newell et al. 2016) with Zhou et al.'s (ICCV'17) depth regressor."""

from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from hpe_jax.errors import ConfigError
from hpe_jax.models import layers

HOURGLASS_DEPTH = 4  # recursion depth: features shrink 16x inside an hourglass
DEPTH_LEVELS = 4  # regressor levels of [2 residual blocks + max-pool 2]
# Input sizes must be multiples of this: stem /4, then /16 inside the hourglass (or regressor).
SIZE_MULTIPLE = 4 * 2**HOURGLASS_DEPTH


def check_config(model_config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError where the hourglass cannot take model.hourglass_features."""
  if model_config.hourglass_features % 2:
    raise ConfigError(
      f'model.hourglass_features={model_config.hourglass_features} must be even '
      '(residual blocks halve it)'
    )


class Residual(nnx.Module):
  """Pre-activation bottleneck: [BN, ReLU, conv] x (1x1 to half, 3x3 half, 1x1 to out), plus the
  input, through a 1x1 conv when the widths differ."""

  def __init__(self, in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs):
    half = out_features // 2
    conv = functools.partial(layers.conv, use_bias=True, dtype=dtype, rngs=rngs)
    bn = functools.partial(layers.batch_norm, dtype=dtype, rngs=rngs)
    self.bn1, self.conv1 = bn(in_features), conv(in_features, half, 1)
    self.bn2, self.conv2 = bn(half), conv(half, half, 3)
    self.bn3, self.conv3 = bn(half), conv(half, out_features, 1)
    self.skip = conv(in_features, out_features, 1) if in_features != out_features else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x
    for bn, conv in ((self.bn1, self.conv1), (self.bn2, self.conv2), (self.bn3, self.conv3)):
      y = conv(nnx.relu(bn(y)))
    return y + (x if self.skip is None else self.skip(x))


class Hourglass(nnx.Module):
  """up1(x) + upsample(low3(low2(low1(max_pool(x))))), low2 an hourglass one level shallower."""

  def __init__(self, depth: int, features: int, *, dtype, rngs: nnx.Rngs):
    residual = functools.partial(Residual, features, features, dtype=dtype, rngs=rngs)
    self.up1 = residual()
    self.low1 = residual()
    self.low2 = Hourglass(depth - 1, features, dtype=dtype, rngs=rngs) if depth > 1 else residual()
    self.low3 = residual()

  def __call__(self, x: jax.Array) -> jax.Array:
    low = self.low3(self.low2(self.low1(layers.max_pool(x, 2, 2))))
    return self.up1(x) + layers.upsample_nearest(low)


class Stack(nnx.Module):
  """hourglass -> residual -> conv1x1 + BN + ReLU = features; heatmap conv1x1 -> J channels."""

  def __init__(self, features: int, num_joints: int, *, dtype, rngs: nnx.Rngs):
    self.hourglass = Hourglass(HOURGLASS_DEPTH, features, dtype=dtype, rngs=rngs)
    self.residual = Residual(features, features, dtype=dtype, rngs=rngs)
    self.conv = layers.conv(features, features, 1, use_bias=True, dtype=dtype, rngs=rngs)
    self.bn = layers.batch_norm(features, dtype=dtype, rngs=rngs)
    self.heatmap_conv = layers.conv(features, num_joints, 1, use_bias=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    features = nnx.relu(self.bn(self.conv(self.residual(self.hourglass(x)))))
    return features, self.heatmap_conv(features)


class Remap(nnx.Module):
  """The next stack's (or the depth regressor's) input:
  x + conv1x1(features) + conv1x1(heatmaps)."""

  def __init__(self, features: int, num_joints: int, *, dtype, rngs: nnx.Rngs):
    self.features = layers.conv(features, features, 1, use_bias=True, dtype=dtype, rngs=rngs)
    self.heatmaps = layers.conv(num_joints, features, 1, use_bias=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, features: jax.Array, heatmaps: jax.Array) -> jax.Array:
    return x + self.features(features) + self.heatmaps(heatmaps)


class StackedHourglass(nnx.Module):
  """(B, H, W, 3) -> {'heatmaps': (num_stacks, B, H/4, W/4, J), 'depth': (B, J) if with_depth},
  float32. H and W must be multiples of 64; with depth, both must equal `image_size` (the size
  the regressor's dense layer was built for)."""

  def __init__(
    self,
    *,
    num_stacks: int,
    features: int,
    num_joints: int,
    with_depth: bool,
    image_size: int,
    dtype,
    rngs: nnx.Rngs,
  ):
    self.stem_conv = layers.conv(3, 64, 7, 2, use_bias=True, dtype=dtype, rngs=rngs)
    self.stem_bn = layers.batch_norm(64, dtype=dtype, rngs=rngs)
    self.stem_res1 = Residual(64, 128, dtype=dtype, rngs=rngs)
    self.stem_res2 = Residual(128, 128, dtype=dtype, rngs=rngs)
    self.stem_res3 = Residual(128, features, dtype=dtype, rngs=rngs)
    self.stacks = nnx.List(
      [Stack(features, num_joints, dtype=dtype, rngs=rngs) for _ in range(num_stacks)]
    )
    self.remaps = nnx.List(
      [Remap(features, num_joints, dtype=dtype, rngs=rngs) for _ in range(num_stacks - 1)]
    )
    self.image_size = image_size
    if with_depth:
      self.depth_remap = Remap(features, num_joints, dtype=dtype, rngs=rngs)
      self.depth_blocks = nnx.List(
        [Residual(features, features, dtype=dtype, rngs=rngs) for _ in range(2 * DEPTH_LEVELS)]
      )
      cells = (image_size // SIZE_MULTIPLE) ** 2
      self.depth_dense = nnx.Linear(
        cells * features, num_joints, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
      )
    else:
      self.depth_remap = self.depth_blocks = self.depth_dense = None

  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    size = images.shape[1:3]
    if any(s % SIZE_MULTIPLE for s in size):
      raise ValueError(f'hourglass input size {size} is not a multiple of {SIZE_MULTIPLE}')
    if self.depth_dense is not None and size != (self.image_size,) * 2:
      raise ValueError(
        f'the hourglass depth regressor was built for {self.image_size}^2 inputs '
        f'(model.image_size), got {size}'
      )
    x = nnx.relu(self.stem_bn(self.stem_conv(images)))
    x = self.stem_res3(self.stem_res2(layers.max_pool(self.stem_res1(x), 2, 2)))
    heatmaps = []
    for i, stack in enumerate(self.stacks):
      features, stack_heatmaps = stack(x)
      heatmaps.append(stack_heatmaps)
      if i < len(self.remaps):
        x = self.remaps[i](x, features, stack_heatmaps)
    out = {'heatmaps': jnp.stack(heatmaps)}
    if self.depth_dense is not None:
      x = self.depth_remap(x, features, stack_heatmaps)
      for i, block in enumerate(self.depth_blocks):
        x = block(x)
        if i % 2:
          x = layers.max_pool(x, 2, 2)
      out['depth'] = self.depth_dense(x.reshape(x.shape[0], -1))
    return {k: v.astype(jnp.float32) for k, v in out.items()}

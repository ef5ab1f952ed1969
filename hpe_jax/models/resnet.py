"""ResNet + deconvolution head (Xiao et al.'s simple baselines; the reference's v2 model).

Names follow torchvision so its state_dicts map over directly: `backbone.stem_conv` is `conv1`,
`backbone.stem_bn` is `bn1`, `backbone.layer{1-4}[i].{conv,bn}{1-3}` and `.downsample_{conv,bn}`
are `layer{1-4}.i.{conv,bn}{1-3}` and `.downsample.{0,1}` (conv kernels transposed OIHW -> HWIO).
"""

from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp

from hpe_jax.models import layers

# Input sizes must be multiples of this: the backbone's output stride.
SIZE_MULTIPLE = 32
# name -> (bottleneck blocks?, blocks per stage)
ARCHITECTURES = {
  'resnet18': (False, (2, 2, 2, 2)),
  'resnet34': (False, (3, 4, 6, 3)),
  'resnet50': (True, (3, 4, 6, 3)),
  'resnet101': (True, (3, 4, 23, 3)),
  'resnet152': (True, (3, 8, 36, 3)),
}


def multiply_adds(
  name: str,
  image_size: int,
  *,
  width: int = 64,
  head_channels: int = 256,
  num_upsample: int = 3,
  num_joints: int = 16,
  with_depth: bool = True,
) -> int:
  """Multiply-adds of one image's forward pass through PoseResNet's convolutions (the bulk of
  its compute; BatchNorm, ReLU and pooling left out): a conv costs output pixels x kernel taps x
  in x out channels, a 4x4 stride-2 transposed conv input pixels x 16 x in x out. What a step
  of one backbone costs next to another's (a training step is about 3 forward passes)."""
  bottleneck, stage_blocks = ARCHITECTURES[name]
  side = image_size // 2
  total = side * side * 49 * 3 * width  # the 7x7 stride-2 stem
  side //= 2  # max pool
  features = width
  for stage, num_blocks in enumerate(stage_blocks):
    planes = width * 2**stage
    for i in range(num_blocks):
      stride = 2 if stage and not i else 1
      out_side = side // stride
      if bottleneck:
        convs = [(side, 1, features, planes), (out_side, 9, planes, planes)]
        convs.append((out_side, 1, planes, 4 * planes))
        out_features = 4 * planes
      else:
        convs = [(out_side, 9, features, planes), (out_side, 9, planes, planes)]
        out_features = planes
      if stride != 1 or features != out_features:
        convs.append((out_side, 1, features, out_features))  # the projection shortcut
      total += sum(s * s * taps * cin * cout for s, taps, cin, cout in convs)
      side, features = out_side, out_features
  for _ in range(num_upsample):
    total += side * side * 16 * features * head_channels
    side, features = 2 * side, head_channels
  return total + side * side * features * num_joints * (2 if with_depth else 1)


class Block(nnx.Module):
  """A torchvision residual block: basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 to 4x `features`),
  the stride on the 3x3 conv, and a 1x1 conv + BN projection when the shape changes."""

  def __init__(
    self, in_features: int, features: int, stride: int, *, bottleneck: bool, dtype, rngs: nnx.Rngs
  ):
    if bottleneck:
      specs = ((1, 1, features), (3, stride, features), (1, 1, 4 * features))
    else:
      specs = ((3, stride, features), (3, 1, features))
    self.num_convs = len(specs)
    self.out_features = specs[-1][2]
    width = in_features
    for i, (kernel_size, conv_stride, out) in enumerate(specs, 1):
      setattr(
        self, f'conv{i}', layers.conv(width, out, kernel_size, conv_stride, dtype=dtype, rngs=rngs)
      )
      setattr(self, f'bn{i}', layers.batch_norm(out, dtype=dtype, rngs=rngs))
      width = out
    if stride != 1 or in_features != self.out_features:
      self.downsample_conv = layers.conv(
        in_features, self.out_features, 1, stride, dtype=dtype, rngs=rngs
      )
      self.downsample_bn = layers.batch_norm(self.out_features, dtype=dtype, rngs=rngs)
    else:
      self.downsample_conv = self.downsample_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x
    for i in range(1, self.num_convs + 1):
      y = getattr(self, f'bn{i}')(getattr(self, f'conv{i}')(y))
      if i < self.num_convs:
        y = nnx.relu(y)
    shortcut = x if self.downsample_conv is None else self.downsample_bn(self.downsample_conv(x))
    return nnx.relu(y + shortcut)


class ResNet(nnx.Module):
  """The backbone, no classifier: (B, H, W, 3) -> (B, H/32, W/32, `out_features`).

  Stage widths are width * (1, 2, 4, 8) (times 4 for bottlenecks); width 64 is the standard one.
  """

  def __init__(self, name: str, width: int, *, dtype, rngs: nnx.Rngs):
    bottleneck, stage_blocks = ARCHITECTURES[name]
    self.stem_conv = layers.conv(3, width, 7, 2, dtype=dtype, rngs=rngs)
    self.stem_bn = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    features = width
    for stage, num_blocks in enumerate(stage_blocks):
      blocks = []
      for i in range(num_blocks):
        blocks.append(
          Block(
            features,
            width * 2**stage,
            2 if stage and not i else 1,
            bottleneck=bottleneck,
            dtype=dtype,
            rngs=rngs,
          )
        )
        features = blocks[-1].out_features
      setattr(self, f'layer{stage + 1}', nnx.List(blocks))
    self.out_features = features

  def __call__(self, x: jax.Array) -> jax.Array:
    x = layers.max_pool(nnx.relu(self.stem_bn(self.stem_conv(x))), 3, 2, padding=1)
    for stage in range(1, 5):
      for block in getattr(self, f'layer{stage}'):
        x = block(x)
    return x


class DeconvBlock(nnx.Module):
  """x2 upsampling: ConvTranspose2d(4, stride 2, padding 1, no bias) + BN + ReLU."""

  def __init__(self, in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs):
    self.deconv = layers.ConvTranspose(in_features, out_features, dtype=dtype, rngs=rngs)
    self.bn = layers.batch_norm(out_features, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.deconv(x)))


class PoseResNet(nnx.Module):
  """ResNet, `num_upsample` deconv blocks, 1x1 heatmap conv (and 1x1 depth-map conv).

  (B, H, W, 3) -> {'heatmaps': (1, B, h, w, J), 'depth_map': (B, h, w, J) if with_depth}, float32,
  h = H / 32 * 2**num_upsample.
  """

  def __init__(
    self,
    name: str,
    *,
    width: int,
    head_channels: int,
    num_upsample: int,
    num_joints: int,
    with_depth: bool,
    dtype,
    rngs: nnx.Rngs,
  ):
    self.backbone = ResNet(name, width, dtype=dtype, rngs=rngs)
    features = self.backbone.out_features
    blocks = []
    for _ in range(num_upsample):
      blocks.append(DeconvBlock(features, head_channels, dtype=dtype, rngs=rngs))
      features = head_channels
    self.head = nnx.List(blocks)
    head_conv = functools.partial(
      layers.conv,
      features,
      num_joints,
      1,
      use_bias=True,
      kernel_init=layers.HEAD_INIT,
      dtype=dtype,
      rngs=rngs,
    )
    self.heatmap_conv = head_conv()
    self.depth_conv = head_conv() if with_depth else None

  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    x = self.backbone(images)
    for block in self.head:
      x = block(x)
    out = {'heatmaps': self.heatmap_conv(x)[None]}
    if self.depth_conv is not None:
      out['depth_map'] = self.depth_conv(x)
    return {k: v.astype(jnp.float32) for k, v in out.items()}

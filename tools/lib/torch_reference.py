"""The reference's ResNet pose network in torch.nn, with its parameter names, and the fixtures of
the weight-import tests made with it (this module needs torch).

tests/models/test_import_weights.py checks hpe_jax.models.torch_import against this network without
torch: `make_fixtures` runs tiny randomised ones and keeps their weights, an input and their
outputs as arrays, which `python tools/make_torch_fixtures.py` writes to
tests/fixtures/torch_import:
- {name}.npz for each name in MODELS: the network's state_dict (float32; BatchNorm's
  num_batches_tracked int64), its keys prefixed with 'module.' as in the reference's released
  checkpoints (DataParallel);
- outputs.npz: 'images' (B, H, W, 3) float32 and, for each name in MODELS, '{name}.heatmaps' and
  '{name}.depth_map' (B, h, w, J) float32: torch's eval-mode outputs on those images, moved from
  NCHW to our NHWC.

Every value comes from torch's CPU generator with fixed seeds, so each run makes the same weights
and images; the outputs agree to float32 rounding (the order of a convolution's sums differs
across CPUs and torch versions).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from hpe_jax import joints
from hpe_jax.models import resnet

# File stem -> (ResNet name, width, head channels, weight seed). Widths of 2 keep the files small
# (69 and 162 kB); the names, layouts and arithmetic under test do not depend on the width.
MODELS = {
  'reference_resnet18': ('resnet18', 2, 8, 0),
  'reference_resnet50': ('resnet50', 2, 8, 1),
}
NUM_UPSAMPLE = 3  # the reference's head: three x2 deconvolutions, 64 px in -> 16 px maps
IMAGES_SHAPE = (1, 64, 64, 3)  # (B, H, W, 3)
IMAGES_SEED = 100
OUTPUTS = 'outputs'  # the file stem of the images and outputs
PREFIX = 'module.'


class Block(nn.Module):
  """torchvision's BasicBlock (3x3, 3x3) or Bottleneck (1x1, 3x3, 1x1 to 4x `features`), with
  its parameter names (conv{i}, bn{i}, downsample.{0,1})."""

  def __init__(self, in_features: int, features: int, stride: int, bottleneck: bool):
    super().__init__()
    out = 4 * features if bottleneck else features
    specs = (
      [(in_features, features, 1, 1), (features, features, 3, stride), (features, out, 1, 1)]
      if bottleneck
      else [(in_features, features, 3, stride), (features, features, 3, 1)]
    )
    self.num_convs = len(specs)
    for i, (cin, cout, k, s) in enumerate(specs, 1):
      setattr(self, f'conv{i}', nn.Conv2d(cin, cout, k, s, k // 2, bias=False))
      setattr(self, f'bn{i}', nn.BatchNorm2d(cout))
    self.downsample = None
    if stride != 1 or in_features != out:
      self.downsample = nn.Sequential(
        nn.Conv2d(in_features, out, 1, stride, bias=False), nn.BatchNorm2d(out)
      )
    self.out_features = out

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = x
    for i in range(1, self.num_convs + 1):
      y = getattr(self, f'bn{i}')(getattr(self, f'conv{i}')(y))
      if i < self.num_convs:
        y = torch.relu(y)
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class PoseResNet(nn.Module):
  """The reference's model: a torchvision ResNet (conv1, bn1, layer1-4), `deconv_layers`
  (num_upsample x [ConvTranspose2d 4x4 stride 2, BatchNorm2d, ReLU]) and the `hm` and `depth`
  1x1 convs.

  (B, 3, H, W) -> (heatmaps, depth maps), each (B, J, h, w), h = H / 32 * 2**num_upsample.
  """

  def __init__(self, arch: str, width: int, head_channels: int, num_upsample: int):
    super().__init__()
    bottleneck, stage_blocks = resnet.ARCHITECTURES[arch]
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    features = width
    for stage, num_blocks in enumerate(stage_blocks):
      blocks = []
      for i in range(num_blocks):
        blocks.append(Block(features, width * 2**stage, 2 if stage and not i else 1, bottleneck))
        features = blocks[-1].out_features
      setattr(self, f'layer{stage + 1}', nn.Sequential(*blocks))
    deconvs = []
    for _ in range(num_upsample):
      deconvs += [
        nn.ConvTranspose2d(features, head_channels, 4, 2, 1, 0, bias=False),
        nn.BatchNorm2d(head_channels),
        nn.ReLU(),
      ]
      features = head_channels
    self.deconv_layers = nn.Sequential(*deconvs)
    self.hm = nn.Conv2d(features, joints.NUM_JOINTS, 1)
    self.depth = nn.Conv2d(features, joints.NUM_JOINTS, 1)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    for stage in range(1, 5):
      x = getattr(self, f'layer{stage}')(x)
    x = self.deconv_layers(x)
    return self.hm(x), self.depth(x)


def randomised(module: nn.Module, seed: int) -> nn.Module:
  """`module` in eval mode with random weights, biases and BatchNorm running statistics drawn
  from a generator seeded with `seed` (the same values on every machine)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, value in module.state_dict().items():
      if not value.is_floating_point():
        continue
      if name.endswith('running_var'):
        value.copy_(0.5 + torch.rand(value.shape, generator=generator))
      elif name.endswith(('running_mean', 'bias')):
        value.copy_(0.1 * torch.randn(value.shape, generator=generator))
      elif value.ndim == 1:  # BatchNorm scale
        value.copy_(0.5 + torch.rand(value.shape, generator=generator))
      else:  # He-scaled, so activations keep their size through the depth
        # A stride-2 transposed conv (I, O, 4, 4) sums I x 2 x 2 terms per output pixel.
        fan_in = value.shape[0] * 4 if 'deconv' in name else value[0].numel()
        value.copy_(torch.randn(value.shape, generator=generator) * (2 / fan_in) ** 0.5)
      value.copy_(_short(value))
  return module.eval()


def _short(values: torch.Tensor) -> torch.Tensor:
  """`values` rounded to bfloat16's 8-bit significands, kept float32: the zero low bits
  compress, so the .npz files take a quarter less space (317 kB in all, not 425)."""
  return values.bfloat16().float()


def make_fixtures() -> dict[str, dict[str, np.ndarray]]:
  """The fixtures, as arrays: file stem -> {array name: array} (see the module docstring)."""
  generator = torch.Generator().manual_seed(IMAGES_SEED)
  images = _short(torch.randn(IMAGES_SHAPE, generator=generator))
  fixtures = {OUTPUTS: {'images': images.numpy()}}
  for name, (arch, width, head_channels, seed) in MODELS.items():
    model = randomised(PoseResNet(arch, width, head_channels, NUM_UPSAMPLE), seed)
    fixtures[name] = {
      PREFIX + key: value.numpy().copy() for key, value in model.state_dict().items()
    }
    with torch.no_grad():
      heatmaps, depth_map = model(images.permute(0, 3, 1, 2))
    fixtures[OUTPUTS][f'{name}.heatmaps'] = heatmaps.permute(0, 2, 3, 1).numpy().copy()
    fixtures[OUTPUTS][f'{name}.depth_map'] = depth_map.permute(0, 2, 3, 1).numpy().copy()
  return fixtures


def write_fixtures(directory: str) -> list[str]:
  """Writes `make_fixtures` to `directory`/{stem}.npz (np.savez stamps no time: the same arrays
  give the same bytes). -> the paths written."""
  os.makedirs(directory, exist_ok=True)
  paths = []
  for stem, arrays in make_fixtures().items():
    paths.append(os.path.join(directory, f'{stem}.npz'))
    np.savez_compressed(paths[-1], **arrays)
  return paths

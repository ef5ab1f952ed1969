"""A PyTorch peer of hpe_jax's models and train step, for speed comparisons.

The reference architectures in torch.nn, layer for layer and parameter for parameter as
hpe_jax.models builds them (NCHW where hpe_jax is NHWC), and the method's losses (REFERENCE.md 1)
as vectorised torch, equal to hpe_jax.losses.compute_losses (tests/tools/test_torch_peer.py), so
both systems train the same network on the same objective with Adam. torch stays optional: only
compare_peer.py (tools/compare_peer.py) and tests import this module.

Train-step modes (`PeerTrainStep`):
- eager: float32, NCHW, no compilation: how the reference trains;
- tuned: channels_last, torch.compile of the forward pass with the losses and of the Adam update,
  and bfloat16 autocast when the config computes in bfloat16. A part that fails to compile runs
  eagerly instead, with a printed note.

  python tools/compare_peer.py --config=configs/finetune.py --config.model.width=64 \\
      --config.model.head_channels=256 --config.data.image_size=128 --config.train.batch_size=8
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
from torch import nn
from torch.utils import flop_counter

from hpe_jax import joints
from hpe_jax import losses
from hpe_jax import models
from hpe_jax.errors import ConfigError
from hpe_jax.models import hourglass as jax_hourglass
from hpe_jax.models import resnet as jax_resnet

_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_EPS_LENGTH = 1e-8  # inside the bone-length sqrt, as hpe_jax.losses
_EPS_DEPTH = 1e-4  # the reference's normaliser of the depth loss
_HEAD_STD = 0.001  # the reference's head init: normal(0, 0.001), bias 0


def _conv(
  in_features: int, out_features: int, kernel_size: int, stride: int = 1, *, bias: bool = False
) -> nn.Conv2d:
  return nn.Conv2d(in_features, out_features, kernel_size, stride, kernel_size // 2, bias=bias)


# ResNet + deconvolution head (hpe_jax.models.resnet).


class Block(nn.Module):
  """torchvision's BasicBlock (3x3, 3x3) or Bottleneck (1x1, 3x3, 1x1 to 4x `features`), stride
  on the 3x3 conv, a 1x1 conv + BN projection when the shape changes."""

  def __init__(self, in_features: int, features: int, stride: int, bottleneck: bool):
    super().__init__()
    if bottleneck:
      specs = ((1, 1, features), (3, stride, features), (1, 1, 4 * features))
    else:
      specs = ((3, stride, features), (3, 1, features))
    layers = []
    width = in_features
    for i, (kernel_size, conv_stride, out) in enumerate(specs):
      layers += [_conv(width, out, kernel_size, conv_stride), nn.BatchNorm2d(out)]
      if i < len(specs) - 1:
        layers.append(nn.ReLU(inplace=True))
      width = out
    self.body = nn.Sequential(*layers)
    self.out_features = width
    self.downsample = None
    if stride != 1 or in_features != width:
      self.downsample = nn.Sequential(_conv(in_features, width, 1, stride), nn.BatchNorm2d(width))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    shortcut = x if self.downsample is None else self.downsample(x)
    return torch.relu(self.body(x) + shortcut)


class PoseResNet(nn.Module):
  """ResNet `name` (stage widths width * (1, 2, 4, 8), x4 for bottlenecks), `num_upsample` x
  [ConvTranspose2d(4, stride 2, padding 1, no bias), BN, ReLU], 1x1 heatmap conv (and depth conv).

  (B, 3, H, W) -> {'heatmaps': (1, B, J, h, w), 'depth_map': (B, J, h, w) if with_depth},
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
  ):
    super().__init__()
    bottleneck, stage_blocks = jax_resnet.ARCHITECTURES[name]
    layers = [
      _conv(3, width, 7, 2),
      nn.BatchNorm2d(width),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(3, 2, 1),
    ]
    features = width
    for stage, num_blocks in enumerate(stage_blocks):
      for i in range(num_blocks):
        layers.append(Block(features, width * 2**stage, 2 if stage and not i else 1, bottleneck))
        features = layers[-1].out_features
    for _ in range(num_upsample):
      layers += [
        nn.ConvTranspose2d(features, head_channels, 4, 2, 1, bias=False),
        nn.BatchNorm2d(head_channels),
        nn.ReLU(inplace=True),
      ]
      features = head_channels
    self.body = nn.Sequential(*layers)
    self.heatmap_conv = nn.Conv2d(features, num_joints, 1)
    self.depth_conv = nn.Conv2d(features, num_joints, 1) if with_depth else None
    _init_weights(self, heads=(self.heatmap_conv, self.depth_conv))

  def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
    x = self.body(images)
    out = {'heatmaps': self.heatmap_conv(x)[None]}
    if self.depth_conv is not None:
      out['depth_map'] = self.depth_conv(x)
    return out


# Stacked hourglass with the depth regressor (hpe_jax.models.hourglass).


class Residual(nn.Module):
  """Pre-activation bottleneck: [BN, ReLU, conv] x (1x1 to half, 3x3 half, 1x1 to out), plus the
  input, through a 1x1 conv when the widths differ. Convs have biases."""

  def __init__(self, in_features: int, out_features: int):
    super().__init__()
    half = out_features // 2
    layers = []
    for cin, cout, kernel_size in (
      (in_features, half, 1),
      (half, half, 3),
      (half, out_features, 1),
    ):
      layers += [nn.BatchNorm2d(cin), nn.ReLU(), _conv(cin, cout, kernel_size, bias=True)]
    self.body = nn.Sequential(*layers)
    self.skip = (
      _conv(in_features, out_features, 1, bias=True) if in_features != out_features else None
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.body(x) + (x if self.skip is None else self.skip(x))


class Hourglass(nn.Module):
  """up1(x) + upsample(low3(low2(low1(max_pool(x))))), low2 an hourglass one level shallower."""

  def __init__(self, depth: int, features: int):
    super().__init__()
    self.up1 = Residual(features, features)
    self.low1 = Residual(features, features)
    self.low2 = Hourglass(depth - 1, features) if depth > 1 else Residual(features, features)
    self.low3 = Residual(features, features)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    low = self.low3(self.low2(self.low1(nn.functional.max_pool2d(x, 2, 2))))
    return self.up1(x) + nn.functional.interpolate(low, scale_factor=2, mode='nearest')


class Stack(nn.Module):
  """hourglass -> residual -> conv1x1 + BN + ReLU = features; heatmap conv1x1 -> J channels."""

  def __init__(self, features: int, num_joints: int):
    super().__init__()
    self.features = nn.Sequential(
      Hourglass(jax_hourglass.HOURGLASS_DEPTH, features),
      Residual(features, features),
      _conv(features, features, 1, bias=True),
      nn.BatchNorm2d(features),
      nn.ReLU(),
    )
    self.heatmap_conv = _conv(features, num_joints, 1, bias=True)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = self.features(x)
    return features, self.heatmap_conv(features)


class Remap(nn.Module):
  """The next stack's (or the depth regressor's) input:
  x + conv1x1(features) + conv1x1(heatmaps)."""

  def __init__(self, features: int, num_joints: int):
    super().__init__()
    self.features = _conv(features, features, 1, bias=True)
    self.heatmaps = _conv(num_joints, features, 1, bias=True)

  def forward(self, x, features, heatmaps):
    return x + self.features(features) + self.heatmaps(heatmaps)


class StackedHourglass(nn.Module):
  """(B, 3, H, W) -> {'heatmaps': (num_stacks, B, J, H/4, W/4), 'depth': (B, J) if with_depth};
  with depth, H = W = `image_size` (the regressor's dense layer is built for it)."""

  def __init__(
    self, *, num_stacks: int, features: int, num_joints: int, with_depth: bool, image_size: int
  ):
    super().__init__()
    self.stem = nn.Sequential(
      _conv(3, 64, 7, 2, bias=True),
      nn.BatchNorm2d(64),
      nn.ReLU(),
      Residual(64, 128),
      nn.MaxPool2d(2, 2),
      Residual(128, 128),
      Residual(128, features),
    )
    self.stacks = nn.ModuleList([Stack(features, num_joints) for _ in range(num_stacks)])
    self.remaps = nn.ModuleList([Remap(features, num_joints) for _ in range(num_stacks - 1)])
    self.depth_remap = self.depth_blocks = self.depth_dense = None
    if with_depth:
      self.depth_remap = Remap(features, num_joints)
      blocks = []
      for _ in range(jax_hourglass.DEPTH_LEVELS):
        blocks += [Residual(features, features), Residual(features, features), nn.MaxPool2d(2, 2)]
      self.depth_blocks = nn.Sequential(*blocks)
      cells = (image_size // jax_hourglass.SIZE_MULTIPLE) ** 2
      self.depth_dense = nn.Linear(cells * features, num_joints)
    _init_weights(self, heads=())

  def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
    x = self.stem(images)
    heatmaps = []
    for i, stack in enumerate(self.stacks):
      features, stack_heatmaps = stack(x)
      heatmaps.append(stack_heatmaps)
      if i < len(self.remaps):
        x = self.remaps[i](x, features, stack_heatmaps)
    out = {'heatmaps': torch.stack(heatmaps)}
    if self.depth_dense is not None:
      x = self.depth_blocks(self.depth_remap(x, features, stack_heatmaps))
      out['depth'] = self.depth_dense(x.flatten(1))
    return out


def _init_weights(module: nn.Module, heads) -> None:
  """hpe_jax's init: convs He-normal (fan_out, as torchvision), `heads` (and every transposed
  conv) normal(0, 0.001), biases 0."""
  heads = [head for head in heads if head is not None]
  for layer in module.modules():
    if isinstance(layer, nn.ConvTranspose2d) or any(layer is head for head in heads):
      nn.init.normal_(layer.weight, std=_HEAD_STD)
    elif isinstance(layer, nn.Conv2d):
      nn.init.kaiming_normal_(layer.weight, mode='fan_out', nonlinearity='relu')
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and layer.bias is not None:
      nn.init.zeros_(layer.bias)


# The peer of each hpe_jax.models backbone, by model.name: called as that backbone's constructor
# is (hpe_jax.models.arguments), less dtype and rngs.
PEERS = {
  **{name: functools.partial(PoseResNet, name) for name in jax_resnet.ARCHITECTURES},
  'hourglass': StackedHourglass,
}


def create_model(
  model_config, *, num_joints: int = joints.NUM_JOINTS, with_depth: bool
) -> nn.Module:
  """The peer of hpe_jax.models.create_model(model_config, ...), in training mode."""
  if model_config.name not in PEERS:
    raise ConfigError(
      f'model.name={model_config.name!r} has no PyTorch peer; those with one: {", ".join(PEERS)}'
    )
  return PEERS[model_config.name](
    **models.arguments(model_config), num_joints=num_joints, with_depth=with_depth
  )


# Targets and losses (hpe_jax.targets, hpe_jax.losses).


def _bone_tensors():
  """GEOMETRIC_BONE_GROUPS as flat tensors: ends a, b (E,), weights (E,), one-hot groups (E, G)."""
  groups = list(joints.GEOMETRIC_BONE_GROUPS.values())
  bones = [(a, b, w, g) for g, group in enumerate(groups) for (a, b), w in group]
  a, b, weight, group = (np.array(column) for column in zip(*bones))
  one_hot = np.eye(len(groups), dtype=np.float32)[group]
  return (
    torch.from_numpy(a),
    torch.from_numpy(b),
    torch.from_numpy(weight.astype(np.float32)),
    torch.from_numpy(one_hot),
  )


_BONE_A, _BONE_B, _BONE_WEIGHT, _BONE_GROUP = _bone_tensors()


def _pixel(xy: torch.Tensor) -> torch.Tensor:
  """(..., 2) coordinates -> (..., 2) int64 index of the pixel that contains them."""
  return torch.floor(xy + 0.5).long()


def inside_heatmap(xy_hm: torch.Tensor, size: int) -> torch.Tensor:
  """(B, J, 2) heatmap pixels -> (B, J) float32: 1 where the joint's pixel lies on the (square)
  map."""
  pixel = _pixel(xy_hm)
  return ((pixel >= 0) & (pixel < size)).all(dim=-1).float()


def gaussian_heatmaps(
  xy_hm: torch.Tensor, mask: torch.Tensor, size: int, sigma: float
) -> torch.Tensor:
  """(B, J, 2) heatmap pixels, (B, J) mask -> (B, J, size, size) unnormalised Gaussians, peak 1;
  zeros for joints with mask 0 or off the map."""
  keep = mask * inside_heatmap(xy_hm, size)
  xy_hm = torch.where(keep[..., None] > 0, xy_hm, torch.zeros_like(xy_hm))
  grid = torch.arange(size, dtype=torch.float32, device=xy_hm.device)
  # Separable: (B, J, n) profiles along y and x, their outer product per joint.
  profile_x, profile_y = (
    torch.exp(-torch.square(grid - xy_hm[..., axis, None]) / (2 * sigma**2)) for axis in (0, 1)
  )
  return profile_y[..., :, None] * (profile_x * keep[..., None])[..., None, :]


def gather_at(maps: torch.Tensor, xy_hm: torch.Tensor) -> torch.Tensor:
  """(B, J, H, W) maps, (B, J, 2) heatmap pixels -> (B, J): channel j read at joint j's pixel
  (clipped to the map)."""
  batch, num_joints, height, width = maps.shape
  pixel = _pixel(xy_hm)
  x = pixel[..., 0].clamp(0, width - 1)
  y = pixel[..., 1].clamp(0, height - 1)
  return maps[
    torch.arange(batch, device=maps.device)[:, None],
    torch.arange(num_joints, device=maps.device)[None, :],
    y,
    x,
  ]


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
  """Same-shape tensors -> scalar mean squared error over all elements."""
  return torch.mean(torch.square(pred.float() - target.float()))


def smooth_l1(x: torch.Tensor) -> torch.Tensor:
  abs_x = x.abs()
  return torch.where(abs_x < 1.0, 0.5 * torch.square(x), abs_x - 0.5)


def depth_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """(B, J) each -> scalar sum(mask * smooth_l1(pred - target)) / (sum(mask) + 1e-4)."""
  diff = torch.where(mask > 0, pred.float() - target.float(), torch.zeros_like(target))
  return torch.sum(mask * smooth_l1(diff)) / (torch.sum(mask) + _EPS_DEPTH)


def geometric_loss(
  xy: torch.Tensor, z: torch.Tensor, visible: torch.Tensor, is_2d: torch.Tensor
) -> torch.Tensor:
  """Bone-length consistency within each bone group (hpe_jax.losses.geometric_loss).

  xy (B, 16, 2) crop units, z (B, 16) crop units, visible (B, 16), is_2d (B,) bool -> scalar:
  (1/B) sum over 2D samples and groups of sum_e (l_e - mean)^2 / (2 n).
  """
  device = xy.device
  bone_a, bone_b = _BONE_A.to(device), _BONE_B.to(device)
  bone_group = _BONE_GROUP.to(device)
  xyz = torch.cat([xy, z[..., None]], dim=-1).float()
  delta = xyz[:, bone_a] - xyz[:, bone_b]  # (B, E, 3)
  length = _BONE_WEIGHT.to(device) * torch.sqrt(torch.sum(torch.square(delta), -1) + _EPS_LENGTH)
  counted = visible[:, bone_a] * visible[:, bone_b]  # (B, E)
  count = torch.clamp(counted @ bone_group, min=1.0)  # (B, G)
  mean = (counted * length) @ bone_group / count
  deviation = length - mean @ bone_group.T
  per_sample = torch.sum((counted * torch.square(deviation)) @ bone_group / (2.0 * count), -1)
  return torch.sum(torch.where(is_2d, per_sample, torch.zeros_like(per_sample))) / xy.shape[0]


def _heatmap_term(x: losses.Inputs, samples: None) -> torch.Tensor:
  del samples  # all
  target = gaussian_heatmaps(x.xy_hm, x.inside, x.size, x.config.sigma)
  weight = x.batch['joints_mask'][:, :, None, None]
  return sum(heatmap_loss(h * weight, target) for h in x.heatmaps)


def _depth_term(x: losses.Inputs, samples: torch.Tensor) -> torch.Tensor:
  return depth_loss(x.depth, x.batch['depth'], x.inside * samples[:, None])


def _geometric_term(x: losses.Inputs, samples: torch.Tensor) -> torch.Tensor:
  return geometric_loss(x.xy_hm / x.size, x.depth.float(), x.inside, samples)


# hpe_jax.losses.LOSSES' terms, by the same names.
TERMS = {'heatmap': _heatmap_term, 'depth': _depth_term, 'geometric': _geometric_term}


def compute_losses(outputs: dict, batch: dict, loss_config) -> tuple[torch.Tensor, dict]:
  """hpe_jax.losses.compute_losses on torch tensors: heatmaps (S, B, J, h, w), depth_map
  (B, J, h, w) or depth (B, J); the batch as benchmark.random_batch lays it out;
  `loss_config` a hpe_jax LossConfig. -> (weighted total, {'loss', '<name>_loss' for each of
  hpe_jax.losses.LOSSES the outputs allow})."""
  heatmaps = outputs['heatmaps']
  size = heatmaps.shape[-1]
  xy_hm = (batch['joints'] + 0.5) / (batch['image'].shape[1] / size) - 0.5
  return losses.weighted_sum(
    losses.Inputs(
      batch=batch,
      config=loss_config,
      heatmaps=heatmaps,
      size=size,
      xy_hm=xy_hm,
      inside=inside_heatmap(xy_hm, size) * batch['joints_mask'],
      depth=(
        gather_at(outputs['depth_map'].float(), xy_hm)
        if 'depth_map' in outputs
        else outputs.get('depth')
      ),
    ),
    TERMS,
  )


def normalize_images(images: torch.Tensor, memory_format) -> torch.Tensor:
  """(B, H, W, 3) uint8 RGB -> ImageNet-normalised float32 (B, 3, H, W) in `memory_format`."""
  mean = torch.tensor(_IMAGENET_MEAN, device=images.device)
  std = torch.tensor(_IMAGENET_STD, device=images.device)
  normalized = ((images.float() - mean) / std).permute(0, 3, 1, 2)
  return normalized.contiguous(memory_format=memory_format)


# The train step.


def default_device() -> torch.device:
  return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
  return {
    key: torch.from_numpy(np.ascontiguousarray(value)).to(device) for key, value in batch.items()
  }


class PeerTrainStep:
  """The peer's train step (forward, losses, backward, Adam) for a config, on a fixed batch.

  `step()` runs one step and returns the loss (sync on it with `sync`). In tuned mode the first
  step compiles; `notes` then says what was compiled and what fell back to eager.
  """

  def __init__(
    self,
    config,
    batch: dict[str, np.ndarray],
    loss_config,
    *,
    mode: str,
    device: torch.device | None = None,
  ):
    if mode not in ('eager', 'tuned'):
      raise ValueError(f'peer mode {mode!r}: use eager or tuned')
    self.device = device or default_device()
    tuned = mode == 'tuned'
    self.memory_format = torch.channels_last if tuned else torch.contiguous_format
    self.model = (
      create_model(config.model, with_depth=config.model.depth)
      .to(self.device, memory_format=self.memory_format)
      .train()
    )
    self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.train.lr)
    self.batch = to_tensors(batch, self.device)
    self.loss_config = loss_config
    self.autocast_dtype = torch.bfloat16 if tuned and config.model.dtype == 'bfloat16' else None
    self.notes = (['channels_last'] if tuned else []) + (
      ['bfloat16 autocast'] if self.autocast_dtype is not None else []
    )
    # The two parts of a step, each compiled in tuned mode, and their eager fallbacks.
    self._eager_parts = {
      'forward+losses+backward': self._forward_backward,
      'adam': self.optimizer.step,
    }
    self._parts = dict(self._eager_parts)
    self._settled = set(self._parts)  # parts known to run
    if tuned:
      self._parts = {
        'forward+losses+backward': functools.partial(
          self._forward_backward, torch.compile(self._forward_losses)
        ),
        'adam': torch.compile(self.optimizer.step),
      }
      self._settled = set()

  def _forward_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    images = normalize_images(batch['image'], self.memory_format)
    autocast = (
      torch.autocast(self.device.type, dtype=self.autocast_dtype)
      if self.autocast_dtype is not None
      else contextlib.nullcontext()
    )
    with autocast:
      outputs = self.model(images)
    # float32 outputs, as hpe_jax's models return
    outputs = {key: value.float() for key, value in outputs.items()}
    return compute_losses(outputs, batch, self.loss_config)[0]

  def _forward_backward(self, forward_losses=None) -> torch.Tensor:
    loss = (forward_losses or self._forward_losses)(self.batch)
    loss.backward()
    return loss.detach()

  def _run_part(self, part: str):
    """Runs one part; the first time, a part whose compilation fails goes back to eager."""
    if part in self._settled:
      return self._parts[part]()
    self._settled.add(part)
    try:
      result = self._parts[part]()
    except Exception as e:  # noqa: BLE001 (whatever the compiler raises: fall back, say why)
      print(
        f'NOTE: torch.compile of {part} failed, running it eagerly: {type(e).__name__}: '
        f'{str(e).splitlines()[0][:300] if str(e) else ""}',
        flush=True,
      )
      self.notes.append(f'{part} eager (compile failed: {type(e).__name__})')
      self._parts[part] = self._eager_parts[part]
      if part != 'adam':  # a half-run backward may have left gradients
        self.optimizer.zero_grad(set_to_none=True)
      return self._parts[part]()
    self.notes.append(f'{part} compiled')
    return result

  def step(self) -> torch.Tensor:
    self.optimizer.zero_grad(set_to_none=True)
    loss = self._run_part('forward+losses+backward')
    self._run_part('adam')
    return loss

  def forward_losses(self) -> torch.Tensor:
    """The forward pass and losses alone (train mode, autograd recording), as in a step."""
    self.optimizer.zero_grad(set_to_none=True)
    return self._forward_losses(self.batch).detach()

  def forward_backward(self) -> torch.Tensor:
    """Forward, losses and backward, without the Adam update (eager parts)."""
    self.optimizer.zero_grad(set_to_none=True)
    return self._forward_backward()

  def step_flops(self) -> int:
    """Runs one step under torch's FlopCounterMode -> its matmul and convolution FLOPs
    (2 per multiply-add, forward and backward): the model's cost, whatever the formulation."""
    with flop_counter.FlopCounterMode(display=False) as counter:
      self.step()
    return counter.get_total_flops()

  def sync(self, loss: torch.Tensor) -> None:
    """Waits for the step that returned `loss` (CPU ops are synchronous already)."""
    del loss
    if self.device.type == 'cuda':
      torch.cuda.synchronize(self.device)

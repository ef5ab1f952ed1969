"""PyTorch state_dicts -> our ResNet parameter trees, in numpy (torch only reads .pth files).

Source names accepted (after a leading prefix such as 'module.' is stripped, see `find_prefix`):
- the torchvision ResNet: `conv1.weight`, `bn1.{weight,bias,running_mean,running_var}`,
  `layer{1-4}.{i}.conv{1-3}.weight`, `layer{1-4}.{i}.bn{1-3}.*`,
  `layer{1-4}.{i}.downsample.{0,1}.*`; `fc.*` (the classifier) is never used;
- the reference's deconvolution head: `deconv_layers.{3k}.weight` (ConvTranspose2d, no bias) and
  `deconv_layers.{3k+1}.*` (its BatchNorm2d) for the k-th x2 upsampling;
- its 1x1 output convs (weight (J, C, 1, 1) and bias): any other module of that shape, the one
  whose name contains 'depth' (e.g. `depth`) giving the depth map and the other (e.g. `hm`,
  `final_layer`, `heatmaps`) the heatmaps; see `find_heads`;
- `*.num_batches_tracked` entries are ignored.

Layouts: Conv2d weight (O, I, kH, kW) -> kernel (kH, kW, I, O); ConvTranspose2d weight
(I, O, kH, kW) -> kernel (kH, kW, I, O), taps unflipped (`layers.ConvTranspose` keeps
PyTorch's); BatchNorm weight, bias, running_mean, running_var -> scale, bias, mean, var (both
sides use eps 1e-5). Our keys are '/'-joined paths of the model's pure dict, e.g.
'backbone/layer1/0/downsample_conv/kernel'. Errors are `errors.ConfigError` one-liners.

`convert_imagenet` writes an ImageNet ResNet's backbone arrays to an .npz that `model.init` reads
without torch (hpe-import-weights imagenet); hpe_jax.training.reference_run turns the reference's
released models into runs.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable
from typing import NamedTuple

from flax import nnx
import numpy as np

from hpe_jax import trees
from hpe_jax.errors import ConfigError
from hpe_jax.models import resnet

# Leaf names: ours -> PyTorch's.
_LEAVES = {
  'kernel': 'weight',
  'scale': 'weight',
  'bias': 'bias',
  'mean': 'running_mean',
  'var': 'running_var',
}
# Backbone module names: ours -> torchvision's.
_MODULES = {
  'stem_conv': 'conv1',
  'stem_bn': 'bn1',
  'downsample_conv': 'downsample.0',
  'downsample_bn': 'downsample.1',
}
_OUTPUT_CONVS = ('heatmap_conv', 'depth_conv')
# Top-level source modules that belong to the ResNet or the deconv head, never an output conv.
_BODY_MODULES = ('conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4', 'fc', 'deconv_layers')
_STEM = 'conv1.weight'
# The input normalisation of torchvision's ImageNet models and ours (interface.normalize_images).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


# torchvision's ImageNet ResNet files, named <arch>-<first 8 hex digits of the file's SHA-256>.pth
# and downloaded from TORCHVISION_URL + name. torchvision 0.10 re-saved them in PyTorch's zip
# format under new names (pytorch/vision PR #3620, fixing issue #2068: "weights are unchanged,
# but the files can now be properly unpickled"): both files of an arch hold the same tensors.
# The first names are the files the reference loaded in its day; the second what
# ResNet*_Weights.IMAGENET1K_V1 downloads today.
TORCHVISION_IMAGENET_FILES = {
  'resnet18': ('resnet18-5c106cde.pth', 'resnet18-f37072fd.pth'),
  'resnet34': ('resnet34-333f7ec4.pth', 'resnet34-b627a593.pth'),
  'resnet50': ('resnet50-19c8e357.pth', 'resnet50-0676ba61.pth'),
  'resnet101': ('resnet101-5d3b4d8f.pth', 'resnet101-63fe2227.pth'),
  'resnet152': ('resnet152-b121ed2d.pth', 'resnet152-394f9c45.pth'),
}
TORCHVISION_URL = 'https://download.pytorch.org/models/'
# The .npz entry where convert_imagenet records its source file's SHA-256 (not a weight).
_SOURCE_SHA256 = '__source_sha256__'


def file_sha256(path: str) -> str:
  """The hex SHA-256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def describe_sha256(sha256: str) -> str:
  """Which weights a file of this SHA-256 holds, as far as torchvision's published names say:
  "SHA-256 0676ba61...: torchvision's ImageNet resnet50 (resnet50-0676ba61.pth, the same
  tensors as resnet50-19c8e357.pth)", or that it is none of them."""
  for arch, names in TORCHVISION_IMAGENET_FILES.items():
    for index, name in enumerate(names):
      if name.removesuffix('.pth').rsplit('-', 1)[1] == sha256[:8]:
        return (
          f"SHA-256 {sha256[:8]}...: torchvision's ImageNet {arch} ({name}, the same tensors "
          f'as {names[1 - index]})'
        )
  return f"SHA-256 {sha256[:8]}...: not one of torchvision's ImageNet ResNet files"


def weights_origin(path: str) -> str:
  """`describe_sha256` of a weights file: of the .pth itself, or of the file an .npz of
  `convert_imagenet` was made from (as the .npz records it)."""
  if path.endswith('.npz'):
    with np.load(path) as arrays:
      if _SOURCE_SHA256 not in arrays.files:
        return 'an .npz that records no source file'
      return 'converted from a file of ' + describe_sha256(str(arrays[_SOURCE_SHA256]))
  return describe_sha256(file_sha256(path))


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A PyTorch checkpoint (.pth/.pt/.tar: a state_dict, or a dict holding one under
  'state_dict' or 'model'; needs torch) or an .npz that `convert_imagenet` wrote -> the
  arrays by name."""
  if not os.path.isfile(path):
    raise ConfigError(f'no weights file {path!r}')
  if path.endswith('.npz'):
    with np.load(path) as arrays:
      return {name: arrays[name] for name in arrays.files if name != _SOURCE_SHA256}
  try:
    import torch  # pylint: disable=import-outside-toplevel  (optional: only for .pth files)
  except ImportError as e:
    raise ConfigError(
      f'{path!r} is a PyTorch file and torch is not installed: pip install -e .[torch], or '
      'convert it once with hpe-import-weights imagenet SRC.pth OUT.npz'
    ) from e
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pickle, zip and weights_only errors alike: not a usable state_dict
    raise ConfigError(
      f'cannot read {path!r} as a PyTorch state_dict: {str(e).splitlines()[0]}'
    ) from e
  for wrapper in ('state_dict', 'model'):  # training scripts save {'epoch', 'state_dict', ...}
    if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
      loaded = loaded[wrapper]
  if not isinstance(loaded, dict):
    raise ConfigError(f'{path!r} holds a {type(loaded).__name__}, not a state_dict')
  return {
    name: value.detach().float().numpy()
    for name, value in loaded.items()
    if isinstance(value, torch.Tensor)
  }


def load_state_dict(
  path: str, *, prefix: str | None = None, arch: str | None = None
) -> tuple[dict[str, np.ndarray], str]:
  """`read_state_dict`, its prefix (found, or `prefix`) stripped -> (state_dict, the ResNet
  name), checked against `arch` if given."""
  state_dict = read_state_dict(path)
  state_dict = strip_prefix(state_dict, find_prefix(state_dict) if prefix is None else prefix)
  found = detect_architecture(state_dict)
  if arch and arch != found:
    raise ConfigError(f'{path} holds a {found}, not --arch={arch}')
  return state_dict, found


def find_prefix(keys) -> str:
  """The prefix in front of the ResNet's names, e.g. 'module.' (DataParallel) or ''."""
  keys = set(keys)
  prefixes = sorted(
    key[: -len(_STEM)]
    for key in keys
    if key.endswith(_STEM) and key[: -len(_STEM)] + 'layer1.0.conv1.weight' in keys
  )
  if len(prefixes) != 1:
    found = f'several ({prefixes})' if prefixes else 'none'
    raise ConfigError(
      f'cannot find the ResNet in the state_dict: looked for one prefix P with P{_STEM} and '
      f'Player1.0.conv1.weight, found {found} (first keys: {sorted(keys)[:4]}); convert it '
      'with hpe-import-weights --prefix=P'
    )
  return prefixes[0]


def strip_prefix(state_dict: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """Drops `prefix` from the keys that have it (others stay as they are) and the BatchNorm
  `num_batches_tracked` counters."""
  return {
    key.removeprefix(prefix): value
    for key, value in state_dict.items()
    if not key.endswith('num_batches_tracked')
  }


def detect_architecture(state_dict: dict[str, np.ndarray]) -> str:
  """The resnet.ARCHITECTURES name whose block counts and block type the source has."""
  blocks = tuple(
    len(
      {
        key.split('.')[1]
        for key in state_dict
        if key.startswith(f'layer{stage}.') and key.endswith('.conv1.weight')
      }
    )
    for stage in range(1, 5)
  )
  bottleneck = 'layer1.0.conv3.weight' in state_dict
  for name, spec in resnet.ARCHITECTURES.items():
    if spec == (bottleneck, blocks):
      return name
  raise ConfigError(
    f'the state_dict is no known ResNet: {"bottleneck" if bottleneck else "basic"} blocks '
    f'{blocks} per stage; known: {", ".join(resnet.ARCHITECTURES)}'
  )


def find_heads(
  state_dict: dict[str, np.ndarray], heatmap_head: str = '', depth_head: str = ''
) -> dict[str, str]:
  """The source names of the output 1x1 convs -> {'heatmap_conv': name[, 'depth_conv': name]}.

  Candidates are the top-level modules outside the ResNet and deconv head with a (J, C, 1, 1)
  weight and a bias; the one named like 'depth' is the depth conv. Given names win.
  """
  candidates = sorted(
    key.removesuffix('.weight')
    for key, value in state_dict.items()
    if key.endswith('.weight')
    and np.ndim(value) == 4
    and np.shape(value)[2:] == (1, 1)
    and key.split('.')[0] not in _BODY_MODULES
    and key.removesuffix('.weight') + '.bias' in state_dict
  )
  depth = [name for name in candidates if 'depth' in name]
  heatmap = [name for name in candidates if 'depth' not in name]
  heads = {
    'heatmap_conv': heatmap_head or (heatmap[0] if len(heatmap) == 1 else None),
    'depth_conv': depth_head or (depth[0] if len(depth) == 1 else None),
  }
  if heads['heatmap_conv'] is None or (len(depth) > 1 and not depth_head):
    raise ConfigError(
      f'cannot tell the heatmap and depth convs apart among the 1x1 convs with bias '
      f'{candidates or "(none)"}; pass --heatmap_head and --depth_head'
    )
  return {conv: name for conv, name in heads.items() if name}


def torch_key(key: str, heads: dict[str, str] | None = None) -> str:
  """Our flat key -> the source name, e.g. 'backbone/layer2/0/downsample_bn/mean' ->
  'layer2.0.downsample.1.running_mean', 'head/1/deconv/kernel' -> 'deconv_layers.3.weight'."""
  *modules, leaf = key.split('/')
  if modules[0] == 'backbone':
    module = '.'.join(_MODULES.get(part, part) for part in modules[1:])
  elif modules[0] == 'head':  # each upsampling is [ConvTranspose2d, BatchNorm2d, ReLU]
    module = f'deconv_layers.{3 * int(modules[1]) + (modules[2] == "bn")}'
  elif modules[0] in _OUTPUT_CONVS and heads and modules[0] in heads:
    module = heads[modules[0]]
  else:
    raise ConfigError(f'no PyTorch name for parameter {key}')
  return f'{module}.{_LEAVES[leaf]}'


def _to_ours(key: str, value: np.ndarray) -> np.ndarray:
  if np.ndim(value) != 4:
    return value
  if '/deconv/' in key:  # ConvTranspose2d (I, O, kH, kW)
    return value.transpose(2, 3, 0, 1)
  return value.transpose(2, 3, 1, 0)  # Conv2d (O, I, kH, kW)


def _torch_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """Our shape -> the shape PyTorch stores, for error messages."""
  if len(shape) != 4:
    return tuple(shape)
  order = (2, 3, 0, 1) if '/deconv/' in key else (3, 2, 0, 1)
  return tuple(shape[i] for i in order)


def _listing(items: list[str], limit: int = 3) -> str:
  more = f' and {len(items) - limit} more' if len(items) > limit else ''
  return ', '.join(items[:limit]) + more


def fill(
  model_state: dict,
  state_dict: dict[str, np.ndarray],
  *,
  parts: tuple[str, ...],
  heads: dict[str, str] | None = None,
  source: str,
) -> tuple[dict, list[str]]:
  """Copies the source weights into every parameter and batch statistic of `model_state` (a
  model's pure dict of arrays or abstract arrays; only shapes are read) whose top-level name is in
  `parts`.

  A missing source key or a shape mismatch is a ConfigError naming the keys (and both shapes,
  in PyTorch's layout). Returns (the pure dict with those leaves replaced by float32 numpy
  arrays, the source keys left unused).
  """
  flat = trees.flatten(model_state)
  wanted = {key: torch_key(key, heads) for key in flat if key.split('/')[0] in parts}
  if not wanted:
    raise ConfigError(
      f'{source}: the model has no {"/".join(parts)} to load '
      '(only ResNet models can import PyTorch weights)'
    )
  missing = [name for name in wanted.values() if name not in state_dict]
  if missing:
    raise ConfigError(
      f'{source}: missing {_listing(missing)} (of {len(wanted)} weights the model needs)'
    )
  order = {name: i for i, name in enumerate(state_dict)}  # report in the network's order
  mismatched = [
    f'{name} is {np.shape(state_dict[name])}, the model needs {_torch_shape(key, flat[key].shape)}'
    for key, name in sorted(wanted.items(), key=lambda item: order[item[1]])
    if np.shape(_to_ours(key, state_dict[name])) != tuple(flat[key].shape)
  ]
  if mismatched:
    raise ConfigError(
      f'{source}: shape mismatch: {_listing(mismatched, 2)} (wrong architecture or width?)'
    )
  for key, name in wanted.items():
    flat[key] = np.asarray(_to_ours(key, state_dict[name]), np.float32)
  unused = sorted(set(state_dict) - set(wanted.values()))
  return trees.unflatten(model_state, flat), unused


def init_backbone(model_state: dict, path: str) -> tuple[dict, list[str]]:
  """`model.init`: the backbone of `model_state` (a model's pure dict) loaded from an ImageNet
  ResNet's state_dict at `path` (.pth/.pt, or an .npz of `convert_imagenet`); the head keeps
  its values. -> (pure dict, unused source keys other than the classifier's fc.*)."""
  source = f'model.init={path!r}'
  try:
    state_dict = read_state_dict(path)
    state_dict = strip_prefix(state_dict, find_prefix(state_dict))
    source += (
      f' (a {detect_architecture(state_dict)} of width {state_dict["conv1.weight"].shape[0]})'
    )
  except ConfigError as e:
    raise ConfigError(f'{source}: {e}') from e
  filled, unused = fill(model_state, state_dict, parts=('backbone',), source=source)
  return filled, [key for key in unused if not key.startswith('fc.')]


def fold_bgr256_input(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Adapts the stem of a network trained on the reference's input to ours.

  The reference fed BGR images as (pixel / 256 - mean) / std with ImageNet's RGB-ordered mean and
  std; we feed RGB as (pixel / 255 - mean) / std. Reference channel c is then
  a_c * ours_{2-c} + b_c: the channel order and scale a fold into conv1.weight exactly, the
  offset b into bn1.running_mean (exact except where conv1's 3-pixel zero padding is in its
  window, i.e. near the image border). Returns a new dict with those two arrays changed.
  """
  reversed_std, reversed_mean = IMAGENET_STD[::-1], IMAGENET_MEAN[::-1]
  scale = 255 / 256 * reversed_std / IMAGENET_STD  # a_c
  offset = (255 / 256 * reversed_mean - IMAGENET_MEAN) / IMAGENET_STD  # b_c
  weight = state_dict['conv1.weight']  # (O, 3, 7, 7), input channels B, G, R
  folded = dict(state_dict)
  folded['conv1.weight'] = (weight * scale[None, :, None, None])[:, ::-1].astype(np.float32)
  folded['bn1.running_mean'] = (
    state_dict['bn1.running_mean'] - np.einsum('oihw,i->o', weight, offset)
  ).astype(np.float32)
  return folded


class ImagenetWeights(NamedTuple):
  """What `convert_imagenet` wrote."""

  arch: str  # resnet.ARCHITECTURES name
  width: int  # the stem's channels (model.width)
  num_arrays: int
  unused: list[str]  # source keys no backbone array took, other than the classifier's fc.*


def convert_imagenet(
  src: str,
  out: str,
  *,
  prefix: str | None = None,
  arch: str | None = None,
  log: Callable[[str], None] = print,
) -> ImagenetWeights:
  """Checks the ImageNet ResNet at `src` against our backbone and writes its backbone arrays
  (PyTorch names and layouts, float32) to the .npz `out`, which `model.init` takes without
  torch."""
  if not out.endswith('.npz'):
    raise ConfigError(f'{out}: the output must be an .npz file')
  state_dict, arch = load_state_dict(src, prefix=prefix, arch=arch)
  width = int(state_dict[_STEM].shape[0])
  # Shapes only: the arrays all come from the source.
  backbone = nnx.eval_shape(lambda: resnet.ResNet(arch, width, dtype=np.float32, rngs=nnx.Rngs(0)))
  model_state = {'backbone': nnx.to_pure_dict(nnx.state(backbone))}
  _, unused = fill(model_state, state_dict, parts=('backbone',), source=src)
  kept = {key: value for key, value in state_dict.items() if key not in unused}
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  sha256 = file_sha256(src)
  log(f'Read {src}: {describe_sha256(sha256)}.')
  np.savez(out, **kept, **{_SOURCE_SHA256: np.array(sha256)})
  log(
    f'Wrote {out}: {arch} width {width}, {len(kept)} arrays. Train from it with '
    f'--config.model.name={arch} --config.model.width={width} --config.model.init={out}'
  )
  return ImagenetWeights(
    arch, width, len(kept), [key for key in unused if not key.startswith('fc.')]
  )

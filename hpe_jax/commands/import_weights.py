"""Imports PyTorch weights: ImageNet ResNets for `model.init`, the reference's released models as
an hpe_jax run.

  # An ImageNet ResNet (torchvision layout) -> an .npz that --config.model.init takes without
  # torch (model.init also takes the .pth itself when torch is installed):
  hpe-import-weights imagenet resnet50-0676ba61.pth runs/imagenet/resnet50.npz
  # A reference checkpoint (ResNet + deconv head + heatmap/depth 1x1 convs) -> a workdir whose
  # checkpoint evaluation loads and --config.init_from grafts:
  hpe-import-weights reference model_last.pth --workdir=runs/reference

(`python -m hpe_jax.commands.import_weights` is the same.)
Accepted key names (a leading prefix such as 'module.' is found and stripped, or give --prefix):
  ResNet (both):   conv1.weight, bn1.{weight,bias,running_mean,running_var},
                   layer{1-4}.{i}.conv{1-3}.weight, layer{1-4}.{i}.bn{1-3}.*,
                   layer{1-4}.{i}.downsample.{0,1}.*     (fc.* is ignored)
  reference only:  deconv_layers.{0,3,6}.weight (ConvTranspose2d 4x4/2, no bias),
                   deconv_layers.{1,4,7}.* (BatchNorm2d),
                   the heatmap 1x1 conv (e.g. hm.*, final_layer.*, heatmaps.*) and the depth
                   1x1 conv (a name containing 'depth', e.g. depth.*), each with weight and bias;
                   found by shape, or named with --heatmap_head / --depth_head.
  A file may hold the state_dict itself or a dict with it under 'state_dict' or 'model'.
Needs torch for .pth input: pip install -e .[torch]. Errors exit 2 with a one-line message.
"""

from __future__ import annotations

from absl import app
from absl import flags

from hpe_jax import cli

_USAGE = 'give `imagenet SRC OUT.npz` or `reference SRC --workdir=DIR`'

_ARCH = flags.DEFINE_string(
  'arch', None, 'Expected ResNet, e.g. resnet50 (default: detected from the blocks).'
)
_PREFIX = flags.DEFINE_string(
  'prefix',
  None,
  "Leading key prefix to strip, e.g. 'module.' (default: the prefix in front of conv1.weight).",
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'reference: the run directory to create.')
_HEATMAP_HEAD = flags.DEFINE_string(
  'heatmap_head', '', "reference: the heatmap 1x1 conv's module name (default: found by shape)."
)
_DEPTH_HEAD = flags.DEFINE_string(
  'depth_head',
  '',
  "reference: the depth 1x1 conv's module name (default: found by shape and name).",
)
_INPUT = flags.DEFINE_enum(
  'input',
  'bgr256',
  ['bgr256', 'rgb'],
  'reference: the input the model was trained on: '
  "bgr256 = the reference's BGR pixel/256 (folded into the stem for our RGB pixel/255), "
  'rgb = ours already.',
)
_IMAGE_SIZE = flags.DEFINE_integer(
  'image_size', 256, 'reference: the input crop side.', lower_bound=1
)


def main(args: list[str]) -> None:
  if not args or args[0] not in ('imagenet', 'reference'):
    raise app.UsageError(_USAGE)
  kind, sources = args[0], args[1:]
  if len(sources) != (2 if kind == 'imagenet' else 1):
    raise app.UsageError(_USAGE)
  if kind == 'reference' and not _WORKDIR.value:
    raise app.UsageError('reference needs --workdir=DIR, the run directory to create')
  if kind == 'imagenet':
    from hpe_jax.models import torch_import  # pylint: disable=g-import-not-at-top  (fast --help)

    result = torch_import.convert_imagenet(
      sources[0], sources[1], prefix=_PREFIX.value, arch=_ARCH.value
    )
    if result.unused:
      print(f'Unused source keys: {result.unused}')
  else:
    from hpe_jax.training import reference_run  # pylint: disable=g-import-not-at-top

    reference_run.import_reference(
      sources[0],
      _WORKDIR.value,
      prefix=_PREFIX.value,
      arch=_ARCH.value,
      heatmap_head=_HEATMAP_HEAD.value,
      depth_head=_DEPTH_HEAD.value,
      input_format=_INPUT.value,
      image_size=_IMAGE_SIZE.value,
    )


def run() -> None:
  cli.run(main, positional=True)


if __name__ == '__main__':
  run()

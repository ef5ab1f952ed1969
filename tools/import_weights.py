"""Imports PyTorch weights: ImageNet ResNets for `model.init`, the reference's released models as
an hpe_jax run.

  # An ImageNet ResNet (torchvision layout) -> an .npz that --config.model.init takes without
  # torch (model.init also takes the .pth itself when torch is installed):
  python tools/import_weights.py imagenet resnet50-0676ba61.pth runs/imagenet/resnet50.npz
  # A reference checkpoint (ResNet + deconv head + heatmap/depth 1x1 convs) -> a workdir whose
  # checkpoint evaluation loads and --config.init_from grafts:
  python tools/import_weights.py reference model_last.pth --workdir=runs/reference

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

import argparse
import itertools
import os
import sys

from flax import nnx
import grain
import numpy as np

from hpe_jax import default_config
from hpe_jax.models import resnet
from hpe_jax.models import torch_import
from hpe_jax.training import checkpoint
from hpe_jax.training import step as step_lib

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')

# Our models predict the 16 MPII joints (the configs have no other joint set).
NUM_JOINTS = 16


def _load(path: str, prefix: str | None, arch: str | None) -> tuple[dict, str]:
  """-> (the state_dict with its prefix stripped, the ResNet name), checked against --arch."""
  state_dict = torch_import.read_state_dict(path)
  state_dict = torch_import.strip_prefix(
      state_dict, torch_import.find_prefix(state_dict) if prefix is None else prefix)
  found = torch_import.detect_architecture(state_dict)
  if arch and arch != found:
    raise default_config.ConfigError(f'{path} holds a {found}, not --arch={arch}')
  return state_dict, found


def import_imagenet(src: str, out: str, *, prefix: str | None = None,
                    arch: str | None = None) -> list[str]:
  """Checks `src` against our backbone and writes its backbone arrays (PyTorch names and
  layouts, float32) to the .npz `out`. -> unused source keys other than fc.*."""
  if not out.endswith('.npz'):
    raise default_config.ConfigError(f'{out}: the output must be an .npz file')
  state_dict, arch = _load(src, prefix, arch)
  width = state_dict['conv1.weight'].shape[0]
  backbone = nnx.eval_shape(lambda: resnet.ResNet(arch, width, dtype=np.float32,
                                                  rngs=nnx.Rngs(0)))
  model_state = {'backbone': nnx.to_pure_dict(nnx.state(backbone))}
  _, unused = torch_import.fill(model_state, state_dict, parts=('backbone',), source=src)
  kept = {key: value for key, value in state_dict.items() if key not in unused}
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.savez(out, **kept)
  print(f'Wrote {out}: {arch} width {width}, {len(kept)} arrays. Train from it with '
        f'--config.model.name={arch} --config.model.width={width} --config.model.init={out}')
  return [key for key in unused if not key.startswith('fc.')]


def reference_config(state_dict: dict, arch: str, heads: dict[str, str], image_size: int):
  """The paper config of the stage a reference model stands for, its model fields set to the
  checkpoint's shapes."""
  depth = 'depth_conv' in heads
  config = default_config.load_config(
      os.path.join(_CONFIGS, 'finetune.py' if depth else 'pretrain.py'),
      'paper,stage=3' if depth else 'paper')
  num_upsample = next(k for k in itertools.count()
                      if f'deconv_layers.{3 * k}.weight' not in state_dict)
  config.init_from = ''
  config.model.init = ''  # the weights are the checkpoint's
  config.model.name = arch
  config.model.width = int(state_dict['conv1.weight'].shape[0])
  config.model.head_channels = int(state_dict['deconv_layers.0.weight'].shape[1]) \
      if num_upsample else config.model.head_channels
  config.model.num_upsample = num_upsample
  config.model.depth = depth
  config.data.image_size = image_size
  return config


def import_reference(src: str, workdir: str, *, prefix: str | None = None,
                     arch: str | None = None, heatmap_head: str = '', depth_head: str = '',
                     input_format: str = 'bgr256', image_size: int = 256) -> None:
  """Writes `workdir`/config.json and a step-0 checkpoint in `workdir`/checkpoints, in the format
  train.py saves: state {'model', 'optimizer' (fresh Adam)} and a data position."""
  state_dict, arch = _load(src, prefix, arch)
  heads = torch_import.find_heads(state_dict, heatmap_head, depth_head)
  joints = state_dict[heads['heatmap_conv'] + '.weight'].shape[0]
  if joints != NUM_JOINTS:
    raise default_config.ConfigError(f'{src}: {heads["heatmap_conv"]} predicts {joints} joints; '
                                     f'hpe_jax models predict the {NUM_JOINTS} MPII joints')
  if input_format == 'bgr256':
    state_dict = torch_import.fold_bgr256_input(state_dict)
  directory = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(directory) and os.listdir(directory):
    raise default_config.ConfigError(f'{directory} already holds checkpoints; choose a new '
                                     '--workdir')
  config = reference_config(state_dict, arch, heads, image_size)
  _, state = step_lib.init_state(config)
  filled, unused = torch_import.fill(nnx.to_pure_dict(state['model']), state_dict,
                                     parts=('backbone', 'head') + tuple(heads), heads=heads,
                                     source=src)
  if unused:
    raise default_config.ConfigError(f'{src}: keys this model has no place for: {unused[:5]}')
  nnx.replace_by_pure_dict(state['model'], filled)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  mngr = checkpoint.manager(directory)
  # Step 0: trained by no one here, so train.py never resumes it (it starts runs at step 0); a
  # data position is saved only to keep train.py's two-item format.
  unstarted = iter(grain.MapDataset.range(1).to_iter_dataset())
  checkpoint.save(mngr, 0, {name: nnx.to_pure_dict(part) for name, part in state.items()},
                  unstarted)
  mngr.wait_until_finished()
  print(f'Wrote {workdir}: {arch}, depth {config.model.depth}, heads {heads}. Evaluate it, or '
        f'fine-tune from it with --config.init_from={workdir}')


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument('src', help='PyTorch checkpoint (.pth/.pt) or an .npz of this tool')
  common.add_argument('--arch', choices=list(resnet.ARCHITECTURES),
                      help='expected ResNet (default: detected from the blocks)')
  common.add_argument('--prefix', help="leading key prefix to strip, e.g. 'module.' (default: "
                      'the prefix in front of conv1.weight)')
  imagenet = commands.add_parser('imagenet', parents=[common],
                                 help='ImageNet ResNet -> .npz for --config.model.init')
  imagenet.add_argument('out', help='output .npz')
  reference = commands.add_parser('reference', parents=[common],
                                  help="the reference's model -> an hpe_jax workdir")
  reference.add_argument('--workdir', required=True, help='run directory to create')
  reference.add_argument('--heatmap_head', default='', help='heatmap 1x1 conv module name')
  reference.add_argument('--depth_head', default='', help='depth 1x1 conv module name')
  reference.add_argument(
      '--input', choices=('bgr256', 'rgb'), default='bgr256',
      help="the input the model was trained on: bgr256 = the reference's BGR pixel/256 (folded "
      'into the stem for our RGB pixel/255), rgb = ours already')
  reference.add_argument('--image_size', type=int, default=256, help='input crop side')
  args = parser.parse_args(argv)
  try:
    if args.command == 'imagenet':
      unused = import_imagenet(args.src, args.out, prefix=args.prefix, arch=args.arch)
      if unused:
        print(f'Unused source keys: {unused}')
    else:
      import_reference(args.src, args.workdir, prefix=args.prefix, arch=args.arch,
                       heatmap_head=args.heatmap_head, depth_head=args.depth_head,
                       input_format=args.input, image_size=args.image_size)
  except (default_config.ConfigError, checkpoint.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()

"""The reference's released models as hpe_jax runs: a workdir with config.json and a step-0
checkpoint in train.py's format, which evaluation loads and `init_from` grafts.

The checkpoint holds a ResNet, the deconvolution head and the heatmap (and depth) 1x1 convs,
named as hpe_jax.models.torch_import reads them.
"""

from __future__ import annotations

import itertools
import os
from typing import Callable

from flax import nnx
import grain
import ml_collections
import numpy as np

from hpe_jax import default_config
from hpe_jax import joints
from hpe_jax.errors import ConfigError
from hpe_jax.models import torch_import
from hpe_jax.storage import checkpoint
from hpe_jax.training import step as step_lib

# The configs/ folder of the repository (the paper recipes the imported models stand for).
_CONFIGS = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'configs'
)
INPUT_FORMATS = ('bgr256', 'rgb')


def reference_config(
  state_dict: dict[str, np.ndarray], arch: str, heads: dict[str, str], image_size: int
) -> ml_collections.ConfigDict:
  """The paper config of the stage a reference model stands for, its model fields set to the
  checkpoint's shapes."""
  depth = 'depth_conv' in heads
  config = default_config.load_config(
    os.path.join(_CONFIGS, 'finetune.py' if depth else 'pretrain.py'),
    'paper,stage=3' if depth else 'paper',
  )
  num_upsample = next(
    k for k in itertools.count() if f'deconv_layers.{3 * k}.weight' not in state_dict
  )
  config.init_from = ''
  config.model.init = ''  # the weights are the checkpoint's
  config.model.name = arch
  config.model.width = int(state_dict['conv1.weight'].shape[0])
  config.model.head_channels = (
    int(state_dict['deconv_layers.0.weight'].shape[1])
    if num_upsample
    else config.model.head_channels
  )
  config.model.num_upsample = num_upsample
  config.model.depth = depth
  config.data.image_size = image_size
  return config


def import_reference(
  src: str,
  workdir: str,
  *,
  prefix: str | None = None,
  arch: str | None = None,
  heatmap_head: str = '',
  depth_head: str = '',
  input_format: str = 'bgr256',
  image_size: int = 256,
  log: Callable[[str], None] = print,
) -> ml_collections.ConfigDict:
  """Writes `workdir`/config.json and a step-0 checkpoint in `workdir`/checkpoints, in the format
  train.py saves: state {'model', 'optimizer' (fresh Adam)} and a data position.

  `input_format`: what the model was trained on, 'bgr256' (the reference's BGR pixel / 256, folded
  into the stem for our RGB pixel / 255) or 'rgb' (ours already). -> the run's config. Raises
  ConfigError for a checkpoint that does not fit (naming the keys) or a workdir in use.
  """
  if input_format not in INPUT_FORMATS:
    raise ConfigError(f'--input={input_format!r}: use one of {", ".join(INPUT_FORMATS)}')
  state_dict, arch = torch_import.load_state_dict(src, prefix=prefix, arch=arch)
  heads = torch_import.find_heads(state_dict, heatmap_head, depth_head)
  num_joints = state_dict[heads['heatmap_conv'] + '.weight'].shape[0]
  if num_joints != joints.NUM_JOINTS:
    raise ConfigError(
      f'{src}: {heads["heatmap_conv"]} predicts {num_joints} joints; hpe_jax '
      f'models predict the {joints.NUM_JOINTS} MPII joints'
    )
  if input_format == 'bgr256':
    state_dict = torch_import.fold_bgr256_input(state_dict)
  directory = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(directory) and os.listdir(directory):
    raise ConfigError(f'{directory} already holds checkpoints; choose a new --workdir')
  config = reference_config(state_dict, arch, heads, image_size)
  _, state = step_lib.init_state(config)
  filled, unused = torch_import.fill(
    nnx.to_pure_dict(state['model']),
    state_dict,
    parts=('backbone', 'head') + tuple(heads),
    heads=heads,
    source=src,
  )
  if unused:
    raise ConfigError(f'{src}: keys this model has no place for: {unused[:5]}')
  nnx.replace_by_pure_dict(state['model'], filled)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  mngr = checkpoint.manager(directory)
  # Step 0: trained by no one here, so train.py never resumes it (it starts runs at step 0); a
  # data position is saved only to keep train.py's two-item format.
  unstarted = iter(grain.MapDataset.range(1).to_iter_dataset())
  checkpoint.save(
    mngr, 0, {name: nnx.to_pure_dict(part) for name, part in state.items()}, unstarted
  )
  mngr.wait_until_finished()
  log(
    f'Wrote {workdir}: {arch}, depth {config.model.depth}, heads {heads}. Evaluate it, or '
    f'fine-tune from it with --config.init_from={workdir}'
  )
  return config

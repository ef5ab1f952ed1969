"""Every config field with its default, in one place; configs/*.py start from `base_config()`.

Each field can be overridden on the command line: `--config.train.batch_size=64`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re

import ml_collections

from hpe_jax import models
from hpe_jax import trees
from hpe_jax.errors import ConfigError
from hpe_jax.models import torch_import

_BOOLEANS = {'true': True, '1': True, 'false': False, '0': False}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """big_vision-style config args: 'paper,stage=3' -> {paper: True, stage: '3'} over defaults.

  A bare name sets a bool arg to True; `name=value` is parsed by the type of the default: bool
  from true/false/1/0 (any case), int and float as Python reads them, str as given.
  Raises ConfigError naming the arg and the accepted values.
  """
  parsed = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, has_value, value = item.partition('=')
    if key not in defaults:
      raise ConfigError(f'unknown config arg {key!r}; known: {", ".join(sorted(defaults))}')
    kind = type(defaults[key])
    if not has_value:
      if kind is not bool:
        raise ConfigError(f'config arg {key!r} needs a value: {key}=...')
      parsed[key] = True
    elif kind is bool:
      if value.lower() not in _BOOLEANS:
        raise ConfigError(f'config arg {key}={value!r}: use true, false, 1 or 0')
      parsed[key] = _BOOLEANS[value.lower()]
    else:
      try:
        parsed[key] = kind(value)
      except ValueError:
        raise ConfigError(
          f'config arg {key}={value!r}: expected {kind.__name__}, like the '
          f'default {defaults[key]!r}'
        ) from None
  return ml_collections.ConfigDict(parsed)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_from = ''  # a 2D run's workdir (or checkpoint dir) whose weights start this run
  c.init_step = ''  # init_from's checkpoint: '' the newest, a step number, or best
  c.distributed = False  # call jax.distributed.initialize() (multi-host; Slurm etc.)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'resnet50'  # resnet18/34/50/101/152 or hourglass
  c.model.width = 64  # ResNet base channels
  c.model.head_channels = 256
  c.model.num_upsample = 3  # x2 upsampling stages of the ResNet head: output stride 4
  c.model.num_stacks = 2  # hourglass
  c.model.hourglass_features = 256
  c.model.dtype = 'float32'  # compute dtype; parameters are always float32
  c.model.depth = False  # depth output (the 3D stages)
  # ImageNet ResNet weights for the backbone at the start of a run that neither resumes nor has an
  # init_from: a torchvision state_dict (.pth/.pt, needs torch) or an .npz of
  # hpe-import-weights imagenet. '' = random initialisation; 'scratch' = random, chosen
  # against a recipe that asks for 'imagenet' (the :paper configs: ImageNet weights required).
  c.model.init = ''

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ''  # '' -> $HPE_DATA_DIR or ~/tensorflow_datasets
  c.data.train_2d = 'synthetic_humans'  # comma-separated dataset[:split] names
  c.data.train_3d = ''
  # Mixing weights of the sources of each role ('3,1'); '' mixes them in proportion to their
  # sizes, as concatenating them would.
  c.data.weights_2d = ''
  c.data.weights_3d = ''
  c.data.fraction_3d = 0.5  # share of 3D samples in every mixed batch (the reference's 1:1)
  c.data.eval = 'synthetic_humans'  # held-out dataset[:split]; '' disables evaluation
  c.data.eval_limit = 0  # evaluate on the first N examples only (0: all)
  c.data.image_size = 256
  c.model.image_size = c.data.get_ref('image_size')  # follows data.image_size
  c.data.sigma = 2.0  # heatmap Gaussian, heatmap pixels
  c.data.threads = 2  # decoding threads per process
  c.data.workers = 0  # grain worker processes (on 2 cores, 0 is fastest)
  c.data.augment = ml_collections.ConfigDict(
    dict(
      scale_sigma=0.25,
      scale_limit=0.25,
      rotation_prob=0.6,
      rotation_sigma=30.0,
      rotation_limit=60.0,
      flip=True,
      rotate_3d=False,
    )
  )

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 1000
  c.train.batch_size = 32
  c.train.lr = 1e-3
  c.train.lr_drop_steps = ()
  c.train.lr_drop_factor = 0.1
  c.train.grad_clip = 0.0  # clip the global gradient norm (0: off)
  c.train.depth_weight = 0.0
  c.train.geometric_weight = 0.0
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3
  c.train.eval_every = 0  # 0: only at the end
  # Also write <workdir>/tensorboard/ event files (metrics.jsonl holds the same numbers).
  c.train.tensorboard = True
  # The checkpoint kept besides the newest ones: 'METRIC:min' or 'METRIC:max' of the first
  # evaluation set that reports METRIC (e.g. mpjpe:min, pckh:max); auto: mpjpe:min for a model
  # with depth, pck:max without; none: only the newest. --step=best loads it.
  c.train.keep_best = 'auto'

  c.eval = ml_collections.ConfigDict()
  c.eval.flip_test = True  # average with the prediction on the mirrored image
  c.eval.subpixel = True  # quarter-pixel peak refinement (False: plain argmax)
  return c


IMAGENET = 'imagenet'  # model.init of a recipe that starts from ImageNet weights (the reference's)
SCRATCH = 'scratch'  # model.init: random weights, chosen explicitly

# Training set sizes as the reference and the study's fork (ECE740F21T01/pytorch-pose-hg-3d) count
# their epochs: an epoch is one pass over the training set (`len(dataset)`, src/main.py).
# MPII: the people of its train.json (datasets/mpii.py; Xiao et al.'s split: all but Tompson's 2958
# validation people).
MPII_TRAIN_PEOPLE = 22246
# LSP-Extended as the fork trains it (datasets/lsp_extended.py): all 10,000 LSPET people plus the
# first 1,000 LSP people (LSP's train half; its other 1,000 are the validation set).
LSP_EXTENDED_TRAIN_PEOPLE = 11000
# FLIC-Full: the fork trains on the examples flagged istrain (datasets/flic_full.py). An estimate,
# not a count: the release's 20,928 examples less FLIC's 1,016 test people; correct it with the
# count of the flic_full build report's train split.
FLIC_FULL_TRAIN_PEOPLE = 19912
# Human3.6M: every sample of the ECCV 2018 challenge's Train split, which datasets/h36m.py reads
# whole from the HM36_eccv_challenge_Train pkl (one entry per image of Train/IMG; its POSE files
# are numbered 1 to 35,832).
H36M_TRAIN_FRAMES = 35832
# The reference's stages: (epochs, epochs after which the lr drops x0.1, epochs between
# evaluations). Pre-training: 140 epochs, drops after 90 and 120 (opts.py defaults); stage 2 of
# the fusion and of the 3D-only ("3D exclusive") training: 60 epochs, drop after 45; stage 3 of
# each: 10 epochs at lr 1e-4. The fork evaluates every 5 epochs (val_intervals); pre-training is
# evaluated every 10 here.
REFERENCE_STAGES = {
  'pretrain': (140, (90, 120), 10),
  '2': (60, (45,), 5),
  '3': (10, (), 5),
}


def reference_epoch_steps(
  num_2d: int, num_3d: int = 0, batch_size: int = 32, ratio_3d: float = 1.0
) -> int:
  """Optimiser steps in one epoch as the reference counts it.

  With 2D data only, an epoch is the 2D set; with 3D data only (the fork's 3D-only training,
  `--dataset H36M`), the 3D set. Its Fusion3D epoch (2D + 3D) is all 2D samples plus
  min(num_3d, num_2d * ratio_3d) 3D samples: a 3D set larger than that share contributes only a
  share per epoch. Its DataLoader keeps the last, partial batch, hence the ceiling.
  """
  samples = num_3d if not num_2d else num_2d + min(num_3d, int(num_2d * ratio_3d))
  return -(-samples // batch_size)


def reference_schedule(stage: str, num_2d: int, num_3d: int = 0) -> dict:
  """The reference's schedule of `stage` ('pretrain', '2' or '3': REFERENCE_STAGES) on training
  sets of these sizes (`reference_epoch_steps`, batches of 32) -> {'num_steps', 'lr_drop_steps',
  'eval_every'}, the train fields it sets."""
  epochs, drops, eval_epochs = REFERENCE_STAGES[stage]
  steps = reference_epoch_steps(num_2d, num_3d)
  return {
    'num_steps': epochs * steps,
    'lr_drop_steps': tuple(epoch * steps for epoch in drops),
    'eval_every': eval_epochs * steps,
  }


def parse_list(spec: str) -> list[str]:
  """A comma-separated config list: 'a, b:split' -> ['a', 'b:split']; '' -> []."""
  return [item.strip() for item in spec.split(',') if item.strip()]


@dataclasses.dataclass(frozen=True)
class Sources:
  """The training datasets of one role ('2d' or '3d') and their part of every batch."""

  specs: tuple[str, ...]  # 'dataset[/config][:split]' names as given; () for none
  weights: tuple[float, ...] | None  # each source's share, summing to 1; None: by their sizes
  batch_size: int  # samples of this role in every global batch (0 without sources)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """The run a config describes, its string fields parsed once, here (`describe`; `validate`
  returns it): the input pipeline, the train loop and scoring take it. Its other fields (model,
  train, data.augment, ...) are read from `config`."""

  config: ml_collections.ConfigDict = dataclasses.field(compare=False, repr=False)
  train_2d: Sources
  train_3d: Sources
  eval_dataset: str  # data.eval, the held-out dataset[:split]; '' for no evaluation
  keep_best: tuple[str, str] | None  # train.keep_best as (metric, 'min' or 'max'); None: none
  init_from: str  # a run whose weights start this one; '' for none
  init_step: int | str | None  # init_from's checkpoint: None the newest, a step, or BEST

  def sources(self, role: str) -> Sources:
    return self.train_2d if role == '2d' else self.train_3d


def _mixing_weights(data: ml_collections.ConfigDict, role: str) -> tuple[float, ...] | None:
  """data.weights_{role}: '3,1' -> (0.75, 0.25); '' -> None (mix the sources in proportion to
  their sizes). Raises ConfigError unless it has one non-negative number per source of
  data.train_{role}, not all 0."""
  spec, num_sources = data[f'weights_{role}'], len(parse_list(data[f'train_{role}']))
  if not spec:
    return None
  try:
    weights = [float(w) for w in spec.split(',')]
  except ValueError:
    weights = []
  if len(weights) != num_sources or min(weights) < 0 or sum(weights) <= 0:
    raise ConfigError(
      f"data.weights_{role}='{spec}' must be {num_sources} comma-separated "
      f'non-negative numbers, one per source of data.train_{role}'
    )
  return tuple(w / sum(weights) for w in weights)


def _batch_split(c: ml_collections.ConfigDict, has_2d: bool, has_3d: bool) -> tuple[int, int]:
  """-> (2D, 3D) samples in every global batch: all of one role when only it has data, else
  train.batch_size split by data.fraction_3d. Raises ConfigError unless both parts are whole and
  non-empty."""
  if not has_3d:
    return c.train.batch_size, 0
  if not has_2d:
    return 0, c.train.batch_size
  num_3d = c.train.batch_size * c.data.fraction_3d
  if num_3d != int(num_3d) or not 0 < num_3d < c.train.batch_size:
    raise ConfigError(
      f'data.fraction_3d={c.data.fraction_3d} does not split train.batch_size='
      f'{c.train.batch_size} into whole, non-empty 2D and 3D parts'
    )
  return c.train.batch_size - int(num_3d), int(num_3d)


BEST = 'best'  # a step argument (--step, init_step) that names the kept best checkpoint
_BEST_MODES = ('min', 'max')


def _keep_best_rule(c: ml_collections.ConfigDict) -> tuple[str, str] | None:
  """train.keep_best as (metric, 'min' or 'max'), None for none.

  Raises:
    ConfigError: not auto, none or METRIC:min / METRIC:max.
  """
  text = str(c.train.get('keep_best', 'auto')).strip()
  if text == 'auto':
    return ('mpjpe', 'min') if c.model.depth else ('pck', 'max')
  if text in ('none', ''):
    return None
  metric, _, mode = text.partition(':')
  if not metric or mode not in _BEST_MODES:
    raise ConfigError(
      f'train.keep_best={text!r}: use METRIC:min or METRIC:max (e.g. mpjpe:min, pckh:max), '
      'auto or none'
    )
  return metric, mode


def parse_step(text) -> int | str | None:
  """A step argument: '' or None -> None (the newest), a number >= 0 -> int, 'best' -> BEST.

  Raises:
    ValueError: anything else, naming it.
  """
  text = '' if text is None else str(text).strip()
  if text in ('', BEST):
    return text or None
  if not text.isdigit():
    raise ValueError(f'{text!r} is not a step: give a step number, best, or nothing for the newest')
  return int(text)


def describe(c: ml_collections.ConfigDict) -> RunSpec:
  """The run `c` describes, its string fields parsed (`RunSpec`). `validate` ends with it; alone
  it serves the config of a run already made (its config.json), checking only those strings.

  Raises:
    ConfigError: no training data, or a string field (data.weights_*, data.fraction_3d's split of
      the batch, train.keep_best, init_step) that does not parse, naming it and the fix.
  """
  specs = {role: tuple(parse_list(c.data[f'train_{role}'])) for role in ('2d', '3d')}
  if not specs['2d'] and not specs['3d']:
    raise ConfigError('no training data: set --config.data.train_2d and/or data.train_3d')
  weights = {role: _mixing_weights(c.data, role) for role in ('2d', '3d')}
  sizes = dict(zip(('2d', '3d'), _batch_split(c, bool(specs['2d']), bool(specs['3d']))))
  sources = {role: Sources(specs[role], weights[role], sizes[role]) for role in ('2d', '3d')}
  keep_best = _keep_best_rule(c)
  try:
    init_step = parse_step(c.init_step)
  except ValueError as e:
    raise ConfigError(f'init_step: {e}') from None
  if c.init_step and not c.init_from:
    raise ConfigError(f'init_step={c.init_step!r} needs init_from (the run to start from)')
  return RunSpec(
    config=c,
    train_2d=sources['2d'],
    train_3d=sources['3d'],
    eval_dataset=c.data.eval,
    keep_best=keep_best,
    init_from=c.init_from,
    init_step=init_step,
  )


def validate(
  c: ml_collections.ConfigDict, *, devices: int | None = None, processes: int | None = None
) -> RunSpec:
  """Every constraint on the config's fields, checked here and only here; raises ConfigError
  naming the field and the fix. Needs no data and no devices, so commands run it before they
  open or compile anything; given the number of `devices` and `processes` (once jax is up), it
  also checks that the batch divides over them. -> the run the config describes (`describe`)."""
  multiple = models.size_multiple(c.model.name) if c.model.name in models.NAMES else 1
  if c.data.image_size % multiple:
    raise ConfigError(
      f'data.image_size={c.data.image_size} must be a multiple of {multiple} for '
      f'model.name={c.model.name!r}'
    )
  models.check_config(c.model)
  for key in ('num_steps', 'batch_size', 'log_every', 'checkpoint_every'):
    if c.train[key] <= 0:
      raise ConfigError(f'train.{key}={c.train[key]} must be positive')
  if c.train.keep_checkpoints < 1:
    raise ConfigError(
      f'train.keep_checkpoints={c.train.keep_checkpoints}: keep at least 1 (the '
      'newest checkpoint is the trained model)'
    )
  if not 0 < c.train.lr < float('inf'):
    raise ConfigError(f'train.lr={c.train.lr} must be a positive number (the default is 1e-3)')
  for key in ('eval_every', 'grad_clip'):
    if c.train[key] < 0:
      raise ConfigError(f'train.{key}={c.train[key]} must be 0 (off) or positive')
  run = describe(c)
  num_2d, num_3d = run.train_2d.batch_size, run.train_3d.batch_size
  if devices is not None and c.train.batch_size % devices:
    raise ConfigError(
      f'train.batch_size={c.train.batch_size} must be a multiple of the {devices} devices'
    )
  if processes is not None and (num_2d % processes or num_3d % processes):
    raise ConfigError(
      f'the 2D ({num_2d}) and 3D ({num_3d}) parts of train.batch_size must '
      f'divide evenly over {processes} processes'
    )
  _check_model_init(c)
  return run


def _check_model_init(c: ml_collections.ConfigDict) -> None:
  """model.init matters only to a run without init_from: 'imagenet' must be replaced by the
  weights (or 'scratch'), and a path must be a file."""
  init, name = c.model.init, c.model.name
  if c.init_from or init in ('', SCRATCH):
    return
  files = torch_import.TORCHVISION_IMAGENET_FILES
  if init == IMAGENET and name not in files:
    raise ConfigError(
      f"model.init='imagenet': there are no ImageNet weights for model.name="
      f'{name!r}; add --config.model.init=scratch to train it from random weights'
    )
  if init == IMAGENET:
    npz = f'runs/imagenet/{name}.npz'
    raise ConfigError(
      f'this recipe starts {name} from ImageNet weights, as the reference does: make them once '
      f'with `hpe-import-weights imagenet {files[name][1]} {npz}` '
      f"(torchvision's file, {torch_import.TORCHVISION_URL}{files[name][1]}; the older "
      f"{files[name][0]} holds the same tensors; the tool needs pip install -e '.[torch]') and add "
      f'--config.model.init={npz}, or add --config.model.init=scratch to train from random '
      'weights'
    )
  if not os.path.isfile(init):
    raise ConfigError(
      f'model.init={init!r} is not a file: give an .npz of hpe-import-weights '
      "imagenet or a torchvision .pth, or 'scratch'"
    )


def flatten(config) -> dict:
  """A config (or its JSON as dicts) -> {'train.lr': leaf}, lists as tuples (JSON has no tuples;
  the tuple fields of a config take them back)."""
  return {
    key: tuple(value) if isinstance(value, list) else value
    for key, value in trees.flatten(config, separator='.').items()
  }


def quick_preset(c: ml_collections.ConfigDict) -> None:
  """A small model and images, sized so a stage trains in minutes on a 2-core CPU."""
  c.model.name = 'resnet18'
  c.model.width = 16
  c.model.head_channels = 64
  c.data.image_size = 128
  c.train.batch_size = 16
  c.train.log_every = 25
  c.train.checkpoint_every = 250


def load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Calls get_config(arg) of a config file, as `--config=path:arg` does."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no config file {path!r} (see configs/ for the provided ones)')
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def default_workdir(config_flag: str) -> str:
  """The workdir of a run: 'configs/finetune.py:paper,stage=2' -> 'runs/finetune_paper_stage_2'."""
  path, _, arg = config_flag.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('runs', name + ('_' + re.sub(r'[^A-Za-z0-9]+', '_', arg) if arg else ''))

"""The config files: every arg loads, stages chain through default workdirs, bad args are named."""

import os
import subprocess
import sys
import time

from conftest import REPO
import pytest

from hpe_jax import default_config

CONFIGS = os.path.join(REPO, 'configs')


def _load(name, arg=None):
  return default_config.load_config(os.path.join(CONFIGS, name), arg)


def test_quick_presets_train_on_the_embedded_data():
  pretrain, finetune, scratch = (_load(n) for n in ('pretrain.py', 'finetune.py', 'scratch3d.py'))
  assert pretrain.data.train_2d == 'synthetic_humans' and not pretrain.data.train_3d
  assert not pretrain.model.depth and finetune.model.depth
  assert finetune.init_from == default_config.default_workdir('configs/pretrain.py')
  assert (finetune.train.depth_weight, finetune.train.geometric_weight) == (0.1, 0.01)
  assert scratch.init_from == '' and scratch.data.train_2d == '' and scratch.data.train_3d
  assert pretrain.model.image_size == pretrain.data.image_size == 128


def test_paper_recipes_count_epochs_as_the_reference():
  c = _load('pretrain.py', 'paper')
  assert (c.model.name, c.data.image_size, c.train.batch_size) == ('resnet50', 256, 32)
  # MPII's 22,246 people in batches of 32, the last partial batch kept: 696 steps an epoch.
  assert c.train.num_steps == 140 * 696 and c.train.lr_drop_steps == (90 * 696, 120 * 696)
  assert c.train.lr == 1e-3
  # Fusion3D: 22,246 MPII people + as many Human3.6M frames = 1,391 steps of 32.
  stage2, stage3 = _load('finetune.py', 'paper,stage=2'), _load('finetune.py', 'paper,stage=3')
  assert stage2.train.num_steps == 83460 and stage2.train.lr_drop_steps == (62595,)
  assert stage3.train.num_steps == 13910 and stage3.train.lr_drop_steps == ()
  assert stage2.train.eval_every == 5 * 1391


def test_3d_only_baseline_is_the_forks_3d_exclusive_training():
  """readme "3D Exclusive Training": stage 2 `--dataset H36M --ratio_3d 0 --weight_3d 1.0
  --num_epoch 60 --lr_step 45` from ImageNet; stage 3 `--weight_3d 0.1 --load_model
  exclusive_3d_s2/model_best.pth --num_epoch 10 --lr 1e-4`. An epoch is the 35,832 frames of
  the challenge's Train split: 1,120 steps of 32."""
  stage2, stage3 = _load('scratch3d.py', 'paper,stage=2'), _load('scratch3d.py', 'paper,stage=3')
  for c in (stage2, stage3):
    assert (c.data.train_2d, c.data.train_3d, c.data.eval) == ('', 'human36m', 'human36m')
    assert c.train.batch_size == 32 and c.train.geometric_weight == 0.0
    assert c.model.depth and c.model.name == 'resnet50' and c.train.eval_every == 5 * 1120
  assert (stage2.train.num_steps, stage2.train.lr_drop_steps) == (60 * 1120, (45 * 1120,))
  assert (stage2.train.depth_weight, stage2.train.lr) == (1.0, 1e-3)
  assert stage2.init_from == '' and stage2.model.init == default_config.IMAGENET
  assert (stage3.train.num_steps, stage3.train.lr_drop_steps) == (10 * 1120, ())
  assert (stage3.train.depth_weight, stage3.train.lr) == (0.1, 1e-4)
  # Stage 3 starts from stage 2's best checkpoint, kept by 2D accuracy as the fork keeps its own.
  assert stage3.init_from == default_config.default_workdir('configs/scratch3d.py:paper,stage=2')
  assert stage3.init_step == default_config.BEST and stage2.train.keep_best == 'pck:max'
  # :paper alone is stage 2; the quick preset chains the same way.
  assert _load('scratch3d.py', 'paper').to_dict() == stage2.to_dict()
  quick3 = _load('scratch3d.py', 'stage=3')
  assert quick3.init_from == default_config.default_workdir('configs/scratch3d.py:stage=2')
  assert _load('scratch3d.py', 'stage=2').train.depth_weight == 1.0
  with pytest.raises(default_config.ConfigError, match="scratch3d stage='4'"):
    _load('scratch3d.py', 'stage=4')


def test_reference_epoch_counts_the_fusion_share():
  steps = default_config.reference_epoch_steps
  assert steps(22246) == 696 and steps(64) == 2 and steps(65) == 3
  assert steps(22246, 312188) == 1391  # the 3D set contributes as many samples as the 2D set
  assert steps(22246, 10000) == 1008  # a smaller 3D set contributes all of it
  assert steps(100, 1000, batch_size=10, ratio_3d=0.5) == 15
  assert steps(0, 35832) == 1120  # 3D only: the 3D set


def _quick(**fields):
  c = _load('finetune.py')
  c.data.train_2d = 'synthetic_humans'
  with c.unlocked():
    for key, value in fields.items():
      section, name = key.split('.')
      c[section][name] = value
  return c


def test_batch_composition_splits_by_fraction_or_gives_all_to_the_only_role():
  def split(c):
    run = default_config.describe(c)
    return run.train_2d.batch_size, run.train_3d.batch_size

  c = _quick(**{'data.train_3d': 'synthetic_humans', 'train.batch_size': 32})
  assert split(c) == (16, 16)
  c.data.train_2d = ''
  assert split(c) == (0, 32)
  c.data.train_2d, c.data.train_3d = 'a', ''
  assert split(c) == (32, 0)


def test_mixing_weights_normalise_one_weight_per_source():
  c = _quick(**{'data.train_2d': 'a, b', 'data.weights_2d': '3,1'})
  run = default_config.describe(c)
  assert run.train_2d.weights == (0.75, 0.25) and run.train_2d.specs == ('a', 'b')
  assert run.train_3d.weights is None


# Each constraint of default_config.validate: (fields, the start of its one-line message).
INVALID = [
  (
    {'data.image_size': 100},
    "data.image_size=100 must be a multiple of 32 for model.name='resnet18'",
  ),
  (
    {'model.name': 'hourglass', 'data.image_size': 96},
    'data.image_size=96 must be a multiple of 64',
  ),
  ({'model.name': 'resnet19'}, "model.name='resnet19' is not one of resnet18"),
  ({'model.dtype': 'float16'}, "model.dtype='float16' is not one of"),
  ({'model.width': 0}, 'model.width=0 must be an int >= 1'),
  ({'model.hourglass_features': 15}, 'model.hourglass_features=15 must be even'),
  ({'train.num_steps': 0}, 'train.num_steps=0 must be positive'),
  ({'train.batch_size': -1}, 'train.batch_size=-1 must be positive'),
  ({'train.log_every': 0}, 'train.log_every=0 must be positive'),
  ({'train.checkpoint_every': 0}, 'train.checkpoint_every=0 must be positive'),
  ({'train.keep_checkpoints': 0}, 'train.keep_checkpoints=0: keep at least 1'),
  ({'train.lr': 0.0}, 'train.lr=0.0 must be a positive number'),
  ({'train.lr': float('inf')}, 'train.lr=inf must be a positive number'),
  ({'train.eval_every': -1}, 'train.eval_every=-1 must be 0 (off) or positive'),
  ({'train.grad_clip': -1.0}, 'train.grad_clip=-1.0 must be 0 (off) or positive'),
  ({'data.train_2d': '', 'data.train_3d': ' , '}, 'no training data'),
  ({'data.weights_2d': '3'}, "data.weights_2d='3' must be 2 comma-separated non-negative"),
  ({'data.train_2d': 'a', 'data.weights_2d': '1,x'}, "data.weights_2d='1,x' must be 1 "),
  ({'data.weights_3d': '0'}, "data.weights_3d='0' must be 1 comma-separated"),
  ({'data.fraction_3d': 0.3}, 'data.fraction_3d=0.3 does not split train.batch_size=16'),
  ({'data.fraction_3d': 1.0}, 'data.fraction_3d=1.0 does not split'),
  (
    {'model.init': '/nonexistent.npz', 'init_from': ''},
    "model.init='/nonexistent.npz' is not a file",
  ),
]


@pytest.mark.parametrize('fields, message', INVALID, ids=[str(f) for f, _ in INVALID])
def test_validate_names_each_bad_field_in_one_line(fields, message):
  c = _quick(**{'data.train_2d': 'a, b'})
  for key, value in fields.items():
    section, _, name = key.rpartition('.')
    (c[section] if section else c)[name] = value
  with pytest.raises(default_config.ConfigError) as error:
    default_config.validate(c)
  assert str(error.value).startswith(message) and '\n' not in str(error.value)


def test_validate_checks_the_batch_split_over_devices_and_processes():
  c = _quick(**{'train.batch_size': 12, 'data.fraction_3d': 0.5})
  default_config.validate(c)  # no device count given: nothing to check yet
  default_config.validate(c, devices=4, processes=2)
  with pytest.raises(
    default_config.ConfigError, match='train.batch_size=12 must be a multiple of the 8 devices'
  ):
    default_config.validate(c, devices=8)
  with pytest.raises(
    default_config.ConfigError,
    match=r'the 2D \(6\) and 3D \(6\) parts of '
    'train.batch_size must divide evenly over 4 processes',
  ):
    default_config.validate(c, devices=4, processes=4)


def test_paper_recipes_need_imagenet_weights_or_an_explicit_opt_out(tmp_path):
  for name in ('pretrain.py', 'scratch3d.py'):
    c = _load(name, 'paper')
    with pytest.raises(default_config.ConfigError) as error:
      default_config.validate(c)
    command = 'hpe-import-weights imagenet resnet50-0676ba61.pth runs/imagenet/resnet50.npz'
    assert command in str(error.value)
    assert '--config.model.init=scratch' in str(error.value) and '\n' not in str(error.value)
    c.model.init = default_config.SCRATCH
    default_config.validate(c)
    weights = tmp_path / f'{name}.npz'
    c.model.init = str(weights)
    with pytest.raises(default_config.ConfigError, match='is not a file'):
      default_config.validate(c)
    weights.write_bytes(b'')
    default_config.validate(c)
  c = _load('pretrain.py', 'paper')
  c.model.name = 'resnet18'
  with pytest.raises(default_config.ConfigError, match='imagenet resnet18-f37072fd.pth'):
    default_config.validate(c)
  c.model.name = 'hourglass'
  with pytest.raises(default_config.ConfigError, match="no ImageNet weights for model.name='hourg"):
    default_config.validate(c)
  # A fine-tune starts from its init_from; the quick presets from random weights.
  default_config.validate(_load('finetune.py', 'paper,stage=2'))
  for name in ('pretrain.py', 'finetune.py', 'scratch3d.py'):
    default_config.validate(_load(name))


@pytest.mark.slow
def test_missing_imagenet_weights_stop_the_command_at_once(tmp_path):
  """One line, exit 2, before jax is imported (which alone takes seconds) or a workdir made."""
  start = time.perf_counter()
  result = subprocess.run(
    [sys.executable, '-m', 'hpe_jax.main', f'--config={CONFIGS}/pretrain.py:paper'],
    capture_output=True,
    text=True,
    cwd=tmp_path,
    timeout=120,
  )
  seconds = time.perf_counter() - start
  assert result.returncode == 2 and result.stderr.count('\n') == 1, result.stderr
  assert 'from ImageNet weights' in result.stderr
  assert seconds < 5, seconds
  assert not os.listdir(tmp_path)


def test_reference_stages_chain_through_default_workdirs():
  stage2 = _load('finetune.py', 'paper,stage=2')
  stage3 = _load('finetune.py', 'paper,stage=3')
  assert stage2.init_from == default_config.default_workdir('configs/pretrain.py:paper')
  assert stage3.init_from == default_config.default_workdir('configs/finetune.py:paper,stage=2')
  assert stage2.train.geometric_weight == 0 and stage3.train.geometric_weight == 0.01
  assert stage2.train.lr == 1e-3 and stage3.train.lr == 1e-4
  assert stage2.data.train_3d == 'human36m' and not stage2.data.augment.rotate_3d


def test_bad_args_are_named():
  with pytest.raises(default_config.ConfigError, match="unknown config arg 'papr'"):
    _load('pretrain.py', 'papr')
  with pytest.raises(default_config.ConfigError, match="stage='4'"):
    _load('finetune.py', 'stage=4')
  with pytest.raises(FileNotFoundError, match='no config file'):
    default_config.load_config('configs/nope.py')


@pytest.mark.parametrize(
  'value, paper',
  [('False', False), ('false', False), ('0', False), ('True', True), ('TRUE', True), ('1', True)],
)
def test_bool_args_are_parsed_as_bools(value, paper):
  c = _load('pretrain.py', f'paper={value}')
  assert (c.data.train_2d == 'mpii') == paper


def test_bad_arg_values_are_named():
  with pytest.raises(default_config.ConfigError, match=r"paper='maybe': use true, false, 1 or 0"):
    _load('pretrain.py', 'paper=maybe')
  with pytest.raises(default_config.ConfigError, match=r"'stage' needs a value"):
    _load('finetune.py', 'stage')
  args = default_config.parse_arg('size=3,rate=0.5', size=1, rate=1.0)
  assert (args.size, args.rate) == (3, 0.5)
  with pytest.raises(default_config.ConfigError, match=r"size='x': expected int, like the def"):
    default_config.parse_arg('size=x', size=1)


@pytest.mark.parametrize(
  'flags, message',
  [
    (['--config=configs/pretrain.py:paper=maybe'], "config arg paper='maybe': use true"),
    (['--config=configs/finetune.py:stage=4'], "finetune stage='4'"),
    (['--config=configs/nope.py'], 'cannot load --config=configs/nope.py'),
    (['--config=configs/pretrain.py', '--config.train.foo=1'], "no config field 'foo'"),
  ],
)
@pytest.mark.slow
def test_command_line_config_errors_are_one_line(flags, message):
  """Before any model or data is touched: exit 2 and one line, not absl's traceback."""
  result = subprocess.run(
    [sys.executable, '-m', 'hpe_jax.main', *flags],
    capture_output=True,
    text=True,
    cwd=os.path.dirname(CONFIGS),
    timeout=120,
  )
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1 and message in result.stderr, result.stderr


def test_image_size_override_reaches_the_model():
  c = _load('pretrain.py')
  c.data.image_size = 192
  assert c.model.image_size == 192

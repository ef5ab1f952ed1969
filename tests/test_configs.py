"""The config files: every arg loads, stages chain through default workdirs, bad args are named."""

import os
import subprocess
import sys

import pytest

from hpe_jax import default_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


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


def test_paper_recipe():
  c = _load('pretrain.py', 'paper')
  assert (c.model.name, c.data.image_size, c.train.batch_size) == ('resnet50', 256, 32)
  epoch = c.train.num_steps // 140
  assert c.train.lr == 1e-3 and c.train.lr_drop_steps == (90 * epoch, 120 * epoch)


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


@pytest.mark.parametrize('value, paper', [('False', False), ('false', False), ('0', False),
                                          ('True', True), ('TRUE', True), ('1', True)])
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
  with pytest.raises(default_config.ConfigError, match=r"size='x': expected int, like the default 1"):
    default_config.parse_arg('size=x', size=1)


@pytest.mark.parametrize('flags, message', [
    (['--config=configs/pretrain.py:paper=maybe'], "config arg paper='maybe': use true"),
    (['--config=configs/finetune.py:stage=4'], "finetune stage='4'"),
    (['--config=configs/nope.py'], 'cannot load --config=configs/nope.py'),
    (['--config=configs/pretrain.py', '--config.train.foo=1'], "no config field 'foo'"),
])
def test_command_line_config_errors_are_one_line(flags, message):
  """Before any model or data is touched: exit 2 and one line, not absl's traceback."""
  result = subprocess.run([sys.executable, '-m', 'hpe_jax.main', *flags], capture_output=True,
                          text=True, cwd=os.path.dirname(CONFIGS), timeout=120)
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1 and message in result.stderr, result.stderr


def test_image_size_override_reaches_the_model():
  c = _load('pretrain.py')
  c.data.image_size = 192
  assert c.model.image_size == 192

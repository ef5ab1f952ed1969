"""The best checkpoint kept besides the newest (train.keep_best), and --step=best finding it."""

import os

from conftest import tiny_config
import grain
import numpy as np
import pytest

from hpe_jax import default_config
from hpe_jax.errors import ConfigError
from hpe_jax.storage import checkpoint


def _save_steps(directory: str, keep: int, best, metrics_by_step: dict) -> None:
  mngr = checkpoint.manager(directory, keep=keep, best=best)
  data_iterator = iter(grain.MapDataset.range(1).to_iter_dataset())
  for step in range(1, 7):
    state = {'model': {'w': np.full((2,), step, np.float32)}}
    checkpoint.save(mngr, step, state, data_iterator, metrics=metrics_by_step.get(step))
  mngr.wait_until_finished()
  mngr.close()


@pytest.mark.parametrize(
  'best, metrics, expected_best',
  [
    (('mpjpe', 'min'), {2: {'mpjpe': 150.0}, 4: {'mpjpe': 120.0}, 6: {'mpjpe': 130.0}}, 4),
    (('pck', 'max'), {2: {'pck': 0.5}, 3: {'pck': 0.7}, 6: {'pck': 0.6}}, 3),
  ],
  ids=['lowest-mpjpe', 'highest-pck'],
)
def test_the_best_is_kept_with_the_newest_and_found(tmp_path, best, metrics, expected_best):
  directory = str(tmp_path / 'checkpoints')
  _save_steps(directory, keep=2, best=best, metrics_by_step=metrics)
  assert checkpoint.saved_steps(directory) == sorted({5, 6, expected_best})
  assert checkpoint.best_step(directory, best) == expected_best
  assert checkpoint.find_checkpoint(str(tmp_path), 'best', best=best) == (
    directory,
    expected_best,
  )


def test_without_a_rule_only_the_newest_are_kept_and_best_is_an_error(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  _save_steps(directory, keep=2, best=None, metrics_by_step={2: {'mpjpe': 1.0}})
  assert checkpoint.saved_steps(directory) == [5, 6]
  with pytest.raises(checkpoint.CheckpointError) as error:
    checkpoint.find_checkpoint(str(tmp_path), 'best', best=('mpjpe', 'min'))
  message = str(error.value)
  assert 'has no best checkpoint (train.keep_best=mpjpe:min)' in message and '\n' not in message


@pytest.mark.parametrize(
  'keep_best, depth, rule',
  [
    ('auto', True, ('mpjpe', 'min')),
    ('auto', False, ('pck', 'max')),
    ('pckh:max', False, ('pckh', 'max')),
    ('none', True, None),
  ],
)
def test_keep_best_rule(keep_best, depth, rule):
  config = tiny_config('', depth=depth)
  config.train.keep_best = keep_best
  assert default_config.describe(config).keep_best == rule


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('train.keep_best', 'mpjpe', "train.keep_best='mpjpe': use METRIC:min or METRIC:max"),
    ('train.keep_best', 'mpjpe:lowest', 'use METRIC:min or METRIC:max'),
    ('init_step', 'latest', "init_step: 'latest' is not a step"),
  ],
)
def test_bad_fields_are_one_config_error(field, value, message):
  config = tiny_config('/data')
  config.init_from = '/runs/pretrain'
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ConfigError, match=message):
    default_config.validate(config)


def test_init_step_needs_init_from():
  config = tiny_config('/data')
  config.init_step = 'best'
  with pytest.raises(ConfigError, match="init_step='best' needs init_from"):
    default_config.validate(config)


def test_parse_step():
  assert default_config.parse_step('') is None and default_config.parse_step(None) is None
  assert default_config.parse_step('120') == 120 and default_config.parse_step('best') == 'best'
  with pytest.raises(ValueError, match="'-3' is not a step"):
    default_config.parse_step('-3')


@pytest.mark.slow
def test_a_run_keeps_its_best_evaluated_checkpoint_besides_the_newest(data_dir, tmp_path):
  import json

  from hpe_jax.training import train

  workdir = str(tmp_path / 'run')
  config = tiny_config(data_dir)
  config.train.eval_every = 2
  config.train.keep_checkpoints = 1
  config.train.keep_best = 'pck:max'
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    evaluated = {r['step']: r['pck'] for r in map(json.loads, f) if 'pck' in r}
  assert sorted(evaluated) == [2, 4, 6]
  best = max(evaluated, key=lambda step: (evaluated[step], step))
  directory = os.path.join(workdir, 'checkpoints')
  assert checkpoint.saved_steps(directory) == sorted({best, 6})
  assert checkpoint.find_checkpoint(workdir, 'best', best=('pck', 'max'))[1] == best
  # init_step=best starts from it: the rule is the other run's.
  config.init_from, config.init_step = workdir, 'best'
  assert train._init_step(default_config.describe(config)) == ('best', ('pck', 'max'))


def test_a_run_evaluated_at_its_end_saves_that_checkpoint_with_its_metrics(tiny_depth_run):
  from hpe_jax import inference

  directory = os.path.join(tiny_depth_run, 'checkpoints')
  assert checkpoint.best_step(directory, ('mpjpe', 'min')) == 6
  assert inference.load(tiny_depth_run, step='best').step == 6

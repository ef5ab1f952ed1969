"""The study runner on a tiny study: run, report, skip, re-evaluate, commands, config errors.

python -m pytest -q tests/test_study.py
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
import types

from conftest import TINY_DATASET
from matplotlib import image as mpimg
import ml_collections
import pytest

from hpe_jax import default_config
from hpe_jax import study
from hpe_jax.evaluation import trained_run
from hpe_jax.study import plan as plan_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWN_EVAL = f'{TINY_DATASET}:test'
OTHER_EVAL = f'{TINY_DATASET}:train_2d'  # another split as a second evaluation dataset Y
STEPS = 2
BATCH_SIZE = 8
REPORT_FILES = (
  'results.md',
  'results.csv',
  'generalisation.md',
  'generalisation.csv',
  'compute.png',
  'backbone.png',
  'generalisation.png',
)


def study_source(data_dir: str | None, log_every: int = 1) -> str:
  """A study config file: both pretraining modes, one backbone, one X, one budget of 2 steps;
  its overrides set data.data_dir unless it is None."""
  data_dir_override = '' if data_dir is None else f', data_dir={data_dir!r}'
  return f"""import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.pretraining = ('2d', 'none')
  c.backbones = ('resnet18',)
  c.datasets_2d = ({TINY_DATASET!r},)
  c.datasets_3d = ({TINY_DATASET!r},)
  c.eval_datasets = ({OTHER_EVAL!r},)
  c.seeds = (0,)
  c.steps_3d = ({STEPS},)
  c.pretrain_steps = {STEPS}
  c.overrides = dict(
      model=dict(width=8, head_channels=16),
      data=dict(image_size=64, threads=1{data_dir_override}),
      train=dict(batch_size={BATCH_SIZE}, log_every={log_every}, checkpoint_every=100))
  return c
"""


@pytest.fixture(scope='module')
def tiny_study(data_dir, tmp_path_factory):
  """The tiny study run once: its config flag, study dir, plan and progress lines."""
  root = tmp_path_factory.mktemp('study')
  flag = str(root / 'tiny_study.py')
  with open(flag, 'w') as f:
    f.write(study_source(data_dir))
  study_dir = str(root / 'run')
  lines = []
  plan = study.run(flag, study_dir, echo=False, log=lines.append)
  return types.SimpleNamespace(flag=flag, study_dir=study_dir, plan=plan, log=lines)


def run_files(study_dir: str) -> dict[str, tuple[int, int]]:
  """(size, mtime) of every file of the runs (checkpoints, metrics, evaluations)."""
  files = {}
  for part in ('pretrain', 'cells'):
    for root, _, names in os.walk(os.path.join(study_dir, part)):
      for name in names:
        stat = os.stat(os.path.join(root, name))
        files[os.path.join(root, name)] = (stat.st_size, stat.st_mtime_ns)
  return files


def read_csv(path: str) -> list[dict]:
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def read_eval(workdir: str, dataset: str) -> dict:
  with open(trained_run.result_path(workdir, dataset)) as f:
    return json.load(f)


def test_first_run_trains_everything_and_reports_matching_numbers(tiny_study):
  assert sum(': training' in line for line in tiny_study.log) == 3  # 1 pre-training + 2 cells
  report = os.path.join(tiny_study.study_dir, 'report')
  for name in REPORT_FILES:
    assert os.path.getsize(os.path.join(report, name)) > 0, name
  rows = read_csv(os.path.join(report, 'results.csv'))
  assert list(rows[0]) == study.csv_columns(tiny_study.plan)
  assert sorted(row['pretraining'] for row in rows) == ['2d', 'none']
  for row in rows:
    assert (row['backbone'], row['dataset_3d'], row['seed'], row['steps']) == (
      'resnet18',
      TINY_DATASET,
      '0',
      str(STEPS),
    )
    assert int(row['images_3d']) == STEPS * BATCH_SIZE
    pretrain_images = STEPS * BATCH_SIZE if row['pretraining'] == '2d' else 0
    assert int(row['images_total']) == STEPS * BATCH_SIZE + pretrain_images
    assert row['dataset_2d'] == (TINY_DATASET if row['pretraining'] == '2d' else '')
    assert int(row['params']) > 100_000 and float(row['wall_s']) > 0
    assert row['device_kind'] == 'cpu'
    for metric in study.METRICS:
      assert float(row[metric]) == read_eval(row['workdir'], OWN_EVAL)[metric]
      for dataset in (OWN_EVAL, OTHER_EVAL):
        assert float(row[f'{metric}@{dataset}']) == read_eval(row['workdir'], dataset)[metric]
  assert rows[0]['params'] == rows[1]['params']  # the same model with and without pre-training
  with open(os.path.join(report, 'results.md')) as f:
    markdown = f.read()
  assert '2 of 2 cells finished' in markdown and "pretraining = ('2d', 'none')" in markdown


def test_generalisation_matrix_is_complete(tiny_study):
  with open(os.path.join(tiny_study.study_dir, 'report', 'generalisation.csv'), newline='') as f:
    header, *rows = list(csv.reader(f))
  assert header == ['cell', OWN_EVAL, OTHER_EVAL]
  assert sorted(row[0] for row in rows) == [
    f'resnet18 2d-pretrained on {TINY_DATASET}, seed 0',
    f'resnet18 3d-only on {TINY_DATASET}, seed 0',
  ]
  assert all(float(value) > 0 for row in rows for value in row[1:])


@pytest.mark.parametrize('name', ['compute.png', 'backbone.png', 'generalisation.png'])
def test_plots_are_png_images(tiny_study, name):
  path = os.path.join(tiny_study.study_dir, 'report', name)
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  pixels = mpimg.imread(path)
  assert pixels.ndim == 3 and pixels.shape[0] > 150 and pixels.shape[1] > 300
  assert pixels.shape[2] in (3, 4)


def test_second_run_skips_everything(tiny_study):
  before = run_files(tiny_study.study_dir)
  lines = []
  study.run(tiny_study.flag, tiny_study.study_dir, echo=False, log=lines.append)
  assert run_files(tiny_study.study_dir) == before  # no checkpoint, metrics or evaluation
  assert not any(': training' in line or 'evaluating' in line for line in lines)
  skipped = [line for line in lines if 'skipped' in line]
  assert [line.split()[:2] for line in skipped] == [
    ['[pretrain', '1/1]'],
    ['[cell', '1/2]'],
    ['[cell', '2/2]'],
  ]
  assert study.read_time(tiny_study.study_dir)['invocations'] == 1  # nothing ran: not counted


def test_a_deleted_evaluation_is_the_only_thing_redone(tiny_study):
  scratch = next(cell for cell in tiny_study.plan.cells if cell.pretraining == 'none')
  os.remove(trained_run.result_path(scratch.run.workdir, OTHER_EVAL))
  before = run_files(tiny_study.study_dir)
  record = study.read_time(scratch.run.workdir)
  lines = []
  study.run(tiny_study.flag, tiny_study.study_dir, echo=False, log=lines.append)
  assert [line.split(' | ')[0] for line in lines if 'evaluating' in line] == [
    f'[cell 2/2] evaluating on {OTHER_EVAL}'
  ]
  assert not any(': training' in line for line in lines)
  after = run_files(tiny_study.study_dir)
  changed = {path for path in after if before.get(path) != after[path]}
  eval_stem = trained_run.result_path(scratch.run.workdir, OTHER_EVAL)[: -len('.json')]
  assert changed == {
    eval_stem + '.json',
    eval_stem + '.md',
    os.path.join(scratch.run.workdir, study.TIME_FILE),
    os.path.join(scratch.run.workdir, study.LOG_FILE),
  }
  updated = study.read_time(scratch.run.workdir)
  assert updated['processes'] == record['processes'] + 1
  assert updated['eval_s'] > record['eval_s'] and updated['train_s'] == record['train_s']


def test_report_only_rebuilds_the_report(tiny_study):
  report = os.path.join(tiny_study.study_dir, 'report')
  for name in REPORT_FILES:
    os.remove(os.path.join(report, name))
  before = run_files(tiny_study.study_dir)
  study.run(tiny_study.flag, tiny_study.study_dir, report_only=True, log=lambda line: None)
  assert all(os.path.isfile(os.path.join(report, name)) for name in REPORT_FILES)
  assert run_files(tiny_study.study_dir) == before


def _config_value(config: ml_collections.ConfigDict, key: str):
  for part in key.split('.'):
    config = config[part]  # KeyError for a field the config does not have
  return config


def test_print_commands_in_dependency_order(tiny_study, data_dir, tmp_path):
  finished = []
  study.run(tiny_study.flag, tiny_study.study_dir, print_commands=True, log=finished.append)
  assert len(finished) == 1 and finished[0].startswith(f'export {study.CACHE_ENV}=')

  fresh_dir = str(tmp_path / 'fresh')
  output = subprocess.run(
    [
      sys.executable,
      'tools/study.py',
      f'--study={tiny_study.flag}',
      f'--study_dir={fresh_dir}',
      '--print_commands',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  export, *commands = [shlex.split(line) for line in output.splitlines()]
  assert export[0] == 'export' and not os.path.exists(fresh_dir)  # printing runs nothing
  assert [c[:3] for c in commands] == [['python', '-m', 'hpe_jax.main']] * 2 + [
    ['python', '-m', 'hpe_jax.evaluate'],
    ['python', '-m', 'hpe_jax.main'],
    ['python', '-m', 'hpe_jax.evaluate'],
  ]
  trains = []
  for command in commands:
    args = dict(arg[2:].split('=', 1) for arg in command[3:])
    assert args['workdir'].startswith(fresh_dir)
    if command[2] == 'hpe_jax.evaluate':
      assert [a for a in command if a.startswith('--dataset=')] == [
        f'--dataset={OWN_EVAL}',
        f'--dataset={OTHER_EVAL}',
      ]
      continue
    config = default_config.load_config(os.path.join(REPO, args['config']))
    for key in args:
      if key.startswith('config.'):
        _config_value(config, key[len('config.') :])
    assert args['config.train.num_steps'] == str(STEPS)
    trains.append(args)
  pretrain, finetune, scratch = trains
  assert pretrain['config'] == 'configs/pretrain.py'
  assert finetune['config'] == 'configs/finetune.py'
  assert finetune['config.init_from'] == pretrain['workdir']
  assert scratch['config'] == 'configs/scratch3d.py' and 'config.init_from' not in scratch
  assert 'config.data.train_2d' not in scratch
  assert finetune['config.data.train_3d'] == scratch['config.data.train_3d'] == TINY_DATASET
  assert scratch['config.data.data_dir'] == pretrain['config.data.data_dir'] == data_dir


def _tree(*directories) -> list[str]:
  """Every path below the directories, sorted."""
  return sorted(
    os.path.join(root, name)
    for directory in directories
    for root, dirs, files in os.walk(directory)
    for name in dirs + files
  )


def test_print_commands_write_nothing_and_carry_the_data_dir(tmp_path):
  """A fresh study on a data dir where nothing is built: printing builds no dataset, makes no
  folder and writes no report; every training and evaluation gets --data_dir."""
  flag = tmp_path / 'study.py'
  flag.write_text(study_source(None))
  root, data_dir = tmp_path / 'runs', tmp_path / 'data'
  root.mkdir()
  data_dir.mkdir()
  (root / 'earlier_study').mkdir()  # listings that are not empty, to tell apart
  before = _tree(root, data_dir)
  output = subprocess.run(
    [
      sys.executable,
      'tools/study.py',
      f'--study={flag}',
      f'--study_dir={root / "fresh"}',
      f'--data_dir={data_dir}',
      '--print_commands',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  assert _tree(root, data_dir) == before
  export, *commands = [shlex.split(line) for line in output.splitlines()]
  assert export[0] == 'export' and len(commands) == 5
  for command in commands:
    if command[2] == 'hpe_jax.main':
      assert f'--config.data.data_dir={data_dir}' in command
    else:  # the splits resolved without building: the same as the built dataset's
      assert command[2] == 'hpe_jax.evaluate' and f'--data_dir={data_dir}' in command
      assert [a for a in command if a.startswith('--dataset=')] == [
        f'--dataset={OWN_EVAL}',
        f'--dataset={OTHER_EVAL}',
      ]


def test_the_data_dir_flag_overrides_the_study_config(tiny_study, tmp_path):
  plan = study.plan_study(
    tiny_study.flag, str(tmp_path / 'other'), data_dir=str(tmp_path), plan_only=True
  )
  assert plan.data_dir == str(tmp_path)
  for run in (*plan.pretrains, *(cell.run for cell in plan.cells)):
    command = run.train_command()
    assert [a for a in command if a.startswith('--config.data.data_dir=')] == [
      f'--config.data.data_dir={tmp_path}'
    ]
  # Where the data lives is no part of what a run is: the finished runs are still reused, also
  # those whose record has it (studies recorded it before --data_dir).
  assert plan_lib.comparable_identity(
    {'config': 'c.py', 'flags': ['seed=0', 'data.data_dir=/d']}
  ) == {'config': 'c.py', 'flags': ['seed=0']}
  assert study.pending_commands(
    study.plan_study(tiny_study.flag, tiny_study.study_dir, data_dir=str(tmp_path), plan_only=True)
  ) == [study.pending_commands(tiny_study.plan)[0]]


def test_changed_overrides_are_refused(tiny_study, data_dir, tmp_path):
  changed = tmp_path / 'changed.py'
  changed.write_text(study_source(data_dir, log_every=2))
  with pytest.raises(study.StudyError, match='made by another config'):
    study.run(str(changed), tiny_study.study_dir, print_commands=True, log=lambda line: None)


def _valid_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.pretraining = ('2d', 'none')
  c.backbones = ('resnet18',)
  c.datasets_2d = ('synthetic_humans',)
  c.datasets_3d = ('synthetic_humans',)
  c.seeds = (0,)
  c.steps_3d = (10,)
  c.pretrain_steps = 10
  c.overrides = {'model': {'width': 8}}
  return c


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('pretraining', ('2d', '3d'), "pretraining has '3d'"),
    ('backbones', ('resnet19',), "backbones has 'resnet19', which is not a model.name"),
    ('datasets_2d', (), 'datasets_2d is empty'),
    ('datasets_3d', ('a,b',), 'one dataset per entry'),
    ('seeds', (0, 0), 'lists an item twice'),
    ('steps_3d', (0,), r'steps_3d=\(0,\) must hold positive ints'),
    ('overrides', {'model': {'name': 'resnet50'}}, 'overrides sets model.name, which the study'),
    ('overrides', {'model': {'widht': 8}}, 'model.widht, which is not a config field'),
    ('seed', 0, r'unknown study field\(s\) seed'),
  ],
)
def test_bad_study_configs_name_the_field(field, value, message):
  config = _valid_config()
  config[field] = value
  with pytest.raises(study.StudyError, match=message):
    study.check_config(config)


def test_a_valid_config_gives_its_axes():
  axes = study.check_config(_valid_config())
  assert axes.overrides == (('model.width', '8'),) and axes.eval_datasets == ()

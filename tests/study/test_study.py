"""The study runner on a tiny study: run, report, skip, re-evaluate, commands, config errors,
Slurm jobs (submitit), plots.

python -m pytest -q tests/study/test_study.py
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
import types

from conftest import REPO
from conftest import TINY_DATASET
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
import ml_collections
import pytest
from study_fakes import BATCH_SIZE
from study_fakes import OTHER_EVAL
from study_fakes import STEPS
from study_fakes import fake_slurm  # noqa: F401  (a fixture)
from study_fakes import sbatch_options
from study_fakes import study_source
import submitit

from hpe_jax import default_config
from hpe_jax import study
from hpe_jax.evaluation import trained_run
from hpe_jax.study import cost
from hpe_jax.study import plan as plan_lib
from hpe_jax.study import plots
from hpe_jax.study import runner
from hpe_jax.study import slurm
from hpe_jax.study import slurm_options

OWN_EVAL = f'{TINY_DATASET}:test'
REPORT_FILES = (
  'results.md',
  'results.csv',
  'generalisation.md',
  'generalisation.csv',
  'compute.png',
  'backbone.png',
  'generalisation.png',
)


@pytest.fixture(scope='module')
def tiny_study(data_dir, tmp_path_factory):
  """The tiny study run once: its config flag, study dir, plan and progress lines. Its three
  trainings and two evaluations are commands of their own (a minute): the tests that use it are
  marked slow; the fast ones run the runner on stand-in processes (fake_command)."""
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


@pytest.mark.slow
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
    number = lambda text: float(text) if text else None  # a metric a split lacks: empty
    for metric in study.METRICS:  # mpjpe_fork: only where the fork scores a set otherwise
      assert number(row[metric]) == read_eval(row['workdir'], OWN_EVAL).get(metric)
      for dataset in (OWN_EVAL, OTHER_EVAL):
        expected = read_eval(row['workdir'], dataset).get(metric)
        assert number(row[f'{metric}@{dataset}']) == expected
  assert rows[0]['params'] == rows[1]['params']  # the same model with and without pre-training
  with open(os.path.join(report, 'results.md')) as f:
    markdown = f.read()
  assert '2 of 2 cells finished' in markdown and "pretraining = ('2d', 'none')" in markdown


@pytest.mark.slow
def test_generalisation_matrix_is_complete(tiny_study):
  with open(os.path.join(tiny_study.study_dir, 'report', 'generalisation.csv'), newline='') as f:
    header, *rows = list(csv.reader(f))
  assert header == ['cell', OWN_EVAL, OTHER_EVAL]
  assert sorted(row[0] for row in rows) == [
    f'resnet18 2d-pretrained on {TINY_DATASET}, seed 0',
    f'resnet18 3d-only on {TINY_DATASET}, seed 0',
  ]
  assert all(float(value) > 0 for row in rows for value in row[1:])


@pytest.mark.slow
@pytest.mark.parametrize('name', ['compute.png', 'backbone.png', 'generalisation.png'])
def test_plots_are_png_images(tiny_study, name):
  path = os.path.join(tiny_study.study_dir, 'report', name)
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  pixels = mpimg.imread(path)
  assert pixels.ndim == 3 and pixels.shape[0] > 150 and pixels.shape[1] > 300
  assert pixels.shape[2] in (3, 4)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def _printed_commands(*flags: str) -> str:
  """What `hpe-study --print_commands` with `flags` prints (it must succeed)."""
  command = [sys.executable, '-m', 'hpe_jax.commands.study', *flags, '--print_commands']
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout


def _commands_and_table(lines: list[str]) -> tuple[list[str], list[str]]:
  """--print_commands' output -> (its commands, its closing plan table without the comment
  marks); every line of the table is a shell comment."""
  first = next(i for i, line in enumerate(lines) if line.startswith('#'))
  assert all(line.startswith('#') for line in lines[first:])
  return lines[:first], [line[2:] for line in lines[first + 1 :]]


@pytest.mark.slow
def test_print_commands_in_dependency_order(tiny_study, data_dir, tmp_path):
  finished = []
  study.run(tiny_study.flag, tiny_study.study_dir, print_commands=True, log=finished.append)
  finished, table = _commands_and_table(finished)
  assert len(finished) == 1 and finished[0].startswith(f'export {study.CACHE_ENV}=')
  assert table[0].startswith('Plan of study tiny_study: 3 training runs, 2 cells')

  fresh_dir = str(tmp_path / 'fresh')
  output = _printed_commands(f'--study={tiny_study.flag}', f'--study_dir={fresh_dir}')
  lines, _ = _commands_and_table(output.splitlines())
  export, *commands = [shlex.split(line) for line in lines]
  assert export[0] == 'export' and not os.path.exists(fresh_dir)  # printing runs nothing
  assert [c[:3] for c in commands] == [['python', '-m', 'hpe_jax.commands.train']] * 2 + [
    ['python', '-m', 'hpe_jax.commands.evaluate'],
    ['python', '-m', 'hpe_jax.commands.train'],
    ['python', '-m', 'hpe_jax.commands.evaluate'],
  ]
  trains = []
  for command in commands:
    args = dict(arg[2:].split('=', 1) for arg in command[3:])
    assert args['workdir'].startswith(fresh_dir)
    if command[2] == 'hpe_jax.commands.evaluate':
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


@pytest.mark.slow
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
  output = _printed_commands(
    f'--study={flag}', f'--study_dir={root / "fresh"}', f'--data_dir={data_dir}'
  )
  assert _tree(root, data_dir) == before
  lines, _ = _commands_and_table(output.splitlines())
  export, *commands = [shlex.split(line) for line in lines]
  assert export[0] == 'export' and len(commands) == 5
  for command in commands:
    if command[2] == 'hpe_jax.commands.train':
      assert f'--config.data.data_dir={data_dir}' in command
    else:  # the splits resolved without building: the same as the built dataset's
      assert command[2] == 'hpe_jax.commands.evaluate' and f'--data_dir={data_dir}' in command
      assert [a for a in command if a.startswith('--dataset=')] == [
        f'--dataset={OWN_EVAL}',
        f'--dataset={OTHER_EVAL}',
      ]


@pytest.mark.slow
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


@pytest.mark.slow
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
    ('train_sizes', (('synthetic_humans', 10),), "for recipe='paper' only"),
  ],
)
def test_bad_study_configs_name_the_field(field, value, message):
  config = _valid_config()
  config[field] = value
  with pytest.raises(study.StudyError, match=message):
    study.check_config(config)


def test_imagenet_and_a_model_init_override_are_refused_together():
  config = _valid_config()
  config.imagenet = 'w/{backbone}.npz'
  config.overrides = {'model': {'init': 'other.npz'}}
  with pytest.raises(study.StudyError, match='overrides sets model.init, which the study sets'):
    study.check_config(config)


def test_a_valid_config_gives_its_axes():
  axes = study.check_config(_valid_config())
  assert axes.overrides == (('model.width', '8'),) and axes.eval_datasets == ()


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('recipe', 'fast', "recipe='fast'"),
    ('steps_3d', (10,), 'remove steps_3d and pretrain_steps'),
    ('train_sizes', (('synthetic_humans', 0),), "no positive count for 'synthetic_humans'"),
    ('imagenet', 'weights.npz', 'with {backbone} in it'),
    ('published', (('2d', 'resnet50', 'x', 'y', 'mpjpe', 1.0),), 'of a cell of the study'),
    ('overrides', {'train': {'eval_every': 5}}, 'overrides sets train.eval_every'),
  ],
)
def test_bad_paper_study_fields_name_the_field(field, value, message):
  config = _valid_config()
  config.recipe = 'paper'
  del config['steps_3d'], config['pretrain_steps']
  config.train_sizes = (('synthetic_humans', 1000),)
  config[field] = value
  with pytest.raises(study.StudyError, match=message):
    study.check_config(config)


@pytest.fixture(scope='module')
def paper_plan(tmp_path_factory):
  """configs/study_paper.py's plan and --print_commands lines, on a data dir with nothing built;
  -> (plan, lines, the folders that must stay empty)."""
  root = tmp_path_factory.mktemp('paper')
  data_dir, study_dir = root / 'data', root / 'study'
  data_dir.mkdir()
  lines = []
  plan = study.run(
    os.path.join(REPO, 'configs', 'study_paper.py'),
    str(study_dir),
    data_dir=str(data_dir),
    print_commands=True,
    log=lines.append,
  )
  return plan, lines, (data_dir, study_dir)


def test_the_paper_study_plans_without_data_and_writes_nothing(paper_plan):
  plan, lines, (data_dir, study_dir) = paper_plan
  assert not os.listdir(data_dir) and not os.path.exists(study_dir)
  cells = plan.cells
  # 5 backbones x (3 2D sets + 3D-only) x 3 3D sets; 15 pre-trainings; two stages per cell.
  assert len(cells) == 60 and len(plan.pretrains) == 15 and len(plan.runs) == 15 + 2 * 60
  assert {c.backbone for c in cells} == {f'resnet{n}' for n in (18, 34, 50, 101, 152)}
  assert {c.dataset_2d for c in cells} == {'mpii', 'lsp:train,lsp_extended', 'flic_full', ''}
  assert {c.dataset_3d for c in cells} == {'human36m', 'occlusion_person', 'mpi_inf_3dhp'}
  assert {c.pretraining for c in cells} == {'2d', 'none'} and {c.seed for c in cells} == {0}
  tests = {'human36m:test', 'occlusion_person:validation', 'mpi_inf_3dhp:test'}
  assert all(set(c.evals) == tests and c.evals[0].startswith(c.dataset_3d) for c in cells)
  commands, table = _commands_and_table(lines)
  assert len(commands) == 1 + 135 + 60  # the cache export, every training and evaluation
  assert table[0].startswith('Plan of study study_paper: 135 training runs, 60 cells')
  assert 'an assumed 1000' in table[0] and table[-1].startswith('| all | | | 135 | |')


def _flags(run) -> dict:
  return dict(run.flags)


def test_the_paper_study_follows_the_reference_recipe(paper_plan):
  """Steps, drops, weights and the init chain, as configs/*.py:paper and the fork say."""
  plan = paper_plan[0]
  pretrains = {(r.backbone, _flags(r)['data.train_2d']): r for r in plan.pretrains}
  mpii = pretrains['resnet50', 'mpii']
  assert mpii.config_file == 'configs/pretrain.py:paper' and mpii.num_steps == 140 * 696
  assert _flags(mpii)['train.lr_drop_steps'] == str((90 * 696, 120 * 696))
  assert _flags(mpii)['model.init'] == 'runs/imagenet/resnet50.npz'
  # 140 epochs of each 2D set's own size: LSP + LSP-Extended 11,000 people, 344 steps an epoch.
  assert pretrains['resnet18', 'lsp:train,lsp_extended'].num_steps == 140 * 344
  assert _flags(pretrains['resnet18', 'lsp:train,lsp_extended'])['data.eval'] == 'lsp'
  cell = next(
    c
    for c in plan.cells
    if (c.backbone, c.dataset_2d, c.dataset_3d) == ('resnet50', 'mpii', 'human36m')
  )
  stage2, stage3 = cell.stages
  assert stage2.config_file == 'configs/finetune.py:paper,stage=2'
  assert stage3.config_file == 'configs/finetune.py:paper,stage=3'
  assert (stage2.num_steps, stage3.num_steps) == (83460, 13910) and cell.steps == 97370
  assert _flags(stage2)['train.lr_drop_steps'] == '(62595,)'
  assert _flags(stage3)['train.lr_drop_steps'] == '()'
  assert _flags(stage2)['init_from'] == stage2.after == mpii.workdir
  assert _flags(stage3)['init_from'] == stage3.after == stage2.workdir
  assert 'model.init' not in _flags(stage2)  # grafted from the pre-training
  baseline = next(
    c
    for c in plan.cells
    if (c.backbone, c.pretraining, c.dataset_3d) == ('resnet50', 'none', 'human36m')
  )
  stage2, stage3 = baseline.stages
  assert stage2.config_file == 'configs/scratch3d.py:paper,stage=2' and not stage2.after
  assert _flags(stage2)['model.init'] == 'runs/imagenet/resnet50.npz'
  assert (stage2.num_steps, stage3.num_steps) == (60 * 1120, 10 * 1120)
  assert _flags(stage3)['init_from'] == stage3.after == stage2.workdir
  # Each process waits for the one it needs, which comes before it.
  seen = set()
  for process in runner.all_processes(plan):
    assert process.needs is None or process.needs in seen, process.label
    seen.add(process.key)
  names = [slurm._job_name(plan, p) for p in runner.all_processes(plan)]
  assert len(set(names)) == len(names)  # squeue tells every job apart


def test_the_paper_study_costs_images_and_gpu_hours(paper_plan):
  plan = paper_plan[0]
  run = next(r for r in plan.pretrains if r.backbone == 'resnet50')
  assert run.images == 97440 * 32
  assert cost.gpu_hours(run, 1000.0) == pytest.approx(97440 * 32 / 1000 / 3600)
  bigger = next(r for r in plan.pretrains if r.backbone == 'resnet152')
  assert cost.gpu_hours(bigger, 1000.0) == pytest.approx(
    cost.gpu_hours(run, 1000.0) * bigger.multiply_adds / run.multiply_adds
  )
  lines = cost.plan_table(plan, 2000.0)
  assert '--images_per_s=2000' in lines[0]
  total = sum(cost.gpu_hours(r, 2000.0) for r in plan.runs)
  assert lines[-1].endswith(f'| {total:,.1f} |')
  assert (
    f'| pre-training | mpii | resnet50 | 1 | 97,440 | 3,118,080 | {run.images / 2000 / 3600:,.1f} |'
    in lines
  )


def test_a_study_refuses_to_start_without_its_imagenet_weights(paper_plan):
  with pytest.raises(study.StudyError, match='hpe-import-weights imagenet resnet18-f37072fd.pth'):
    runner.check_start_weights(paper_plan[0])


# Studies as Slurm jobs (hpe_jax/study/slurm.py): submitit's local executor runs the jobs here,
# and stand-ins for sbatch, squeue and scancel check what reaches Slurm.

# A job's command in place of training or evaluating: it leaves what a finished process leaves
# (a checkpoint of the run's last step, the evaluation's result files) and appends its start and
# end times to <study_dir>/times.jsonl; a run holding a FAIL file fails instead.
FAKE_PROCESS = r"""
import json, os, sys, time
study_dir, workdir, stage, *targets = sys.argv[1:]
start = time.time()
if os.path.exists(os.path.join(workdir, 'FAIL')):
  sys.exit(3)
time.sleep(0.3)
for target in targets:
  if stage == 'train':
    os.makedirs(os.path.join(workdir, 'checkpoints', target))
  else:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, 'w') as f:
      f.write('{}')
with open(os.path.join(study_dir, 'times.jsonl'), 'a') as f:
  f.write(json.dumps([os.path.basename(workdir), stage, start, time.time()]) + '\n')
"""


def fake_command(process) -> list[str]:
  """The FAKE_PROCESS command in place of a process's own."""
  study_dir = process.run.workdir.rsplit(os.sep, 2)[0]
  if process.stage == 'train':
    targets = [str(process.run.num_steps)]
  else:
    targets = [trained_run.result_path(process.run.workdir, name) for name in process.datasets]
  return [
    sys.executable,
    '-c',
    FAKE_PROCESS,
    study_dir,
    process.run.workdir,
    process.stage,
    *targets,
  ]


def wait_for(jobs, timeout_s: float = 120) -> None:
  deadline = time.monotonic() + timeout_s
  for job in jobs:
    while not job.done():
      assert time.monotonic() < deadline, f'job {job.job_id} still running'
      time.sleep(0.1)


def read_times(study_dir: str) -> dict[tuple[str, str], tuple[float, float]]:
  """(run workdir name, stage) -> (start, end) of the fake processes that ran."""
  path = os.path.join(study_dir, 'times.jsonl')
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return {(name, stage): (start, end) for name, stage, start, end in map(json.loads, f)}


@pytest.fixture
def fresh_plan(data_dir, tmp_path):
  """The tiny study's plan in a new study dir (nothing run)."""
  flag = tmp_path / 'tiny_study.py'
  flag.write_text(study_source(data_dir))
  return study.plan_study(str(flag), str(tmp_path / 'run'))


@pytest.mark.slow
def test_slurm_jobs_start_after_the_ones_they_need_and_a_rerun_resubmits_failures(fresh_plan):
  plan = fresh_plan
  finetune, scratch = plan.cells
  os.makedirs(scratch.run.workdir)
  open(os.path.join(scratch.run.workdir, 'FAIL'), 'w').close()
  executor = submitit.LocalExecutor(os.path.join(plan.study_dir, 'slurm'))
  lines = []
  launched = slurm.launch(plan, executor, command=fake_command, log=lines.append)
  wait_for(launched.jobs)
  ids = [str(job.job_id) for job in launched.jobs]
  assert [line.split(': job ')[1] for line in lines[:-1]] == [
    ids[0],
    f'{ids[1]} after job {ids[0]}',  # fine-tune after its pre-training
    f'{ids[2]} after job {ids[1]}',  # evaluation after its training
    ids[3],
    f'{ids[4]} after job {ids[3]}',
  ]
  assert '5 job(s) submitted, 0 left queued, 0 of 5' in lines[-1]
  times = read_times(plan.study_dir)
  pretrain, cell_1, cell_2 = (
    os.path.basename(r.workdir) for r in (plan.pretrains[0], finetune.run, scratch.run)
  )
  assert times[cell_1, 'train'][0] >= times[pretrain, 'train'][1]
  assert times[cell_1, 'eval'][0] >= times[cell_1, 'train'][1]
  assert set(times) == {(pretrain, 'train'), (cell_1, 'train'), (cell_1, 'eval')}
  # The failed training's job failed, and its evaluation's never ran its command.
  assert [job.state for job in launched.jobs] == ['FINISHED'] * 5
  failed = {str(job.job_id): job.exception() for job in launched.jobs if job.exception()}
  assert list(failed) == ids[3:]
  assert 'failed (exit 3)' in str(failed[ids[3]]) and 'depends on failed' in str(failed[ids[4]])
  with open(os.path.join(finetune.run.workdir, study.LOG_FILE)) as f:
    assert f.read().startswith(f'$ {shlex.join(fake_command(runner.all_processes(plan)[1]))}\n')
  record = study.read_time(finetune.run.workdir)
  assert record['processes'] == 2 and record['identity'] == finetune.run.identity()

  os.remove(os.path.join(scratch.run.workdir, 'FAIL'))
  lines = []
  relaunched = slurm.launch(plan, executor, command=fake_command, log=lines.append)
  wait_for(relaunched.jobs)
  new_ids = [str(job.job_id) for job in relaunched.jobs]
  assert [line.split(': job ')[1].split(';')[0] for line in lines[:-1]] == [
    new_ids[0],
    f'{new_ids[1]} after job {new_ids[0]}',
  ]
  assert all(line.startswith('[cell 2/2]') and 'ended unfinished' in line for line in lines[:-1])
  assert '3 of 5 processes finished before' in lines[-1]
  times_after = read_times(plan.study_dir)
  assert set(times_after) - set(times) == {(cell_2, 'train'), (cell_2, 'eval')}
  assert times_after[cell_2, 'eval'][0] >= times_after[cell_2, 'train'][1]
  with open(os.path.join(plan.study_dir, slurm.JOBS_FILE)) as f:
    assert sorted(record['job_id'] for record in json.load(f).values()) == sorted(ids[:3] + new_ids)
  lines = []
  assert slurm.launch(plan, executor, command=fake_command, log=lines.append).complete
  assert lines == ['Every process of study tiny_study has finished (5).']


@pytest.mark.slow
def test_a_slurm_job_runs_the_local_runners_command(tiny_study, tmp_path):
  scratch = next(cell for cell in tiny_study.plan.cells if cell.pretraining == 'none')
  os.remove(trained_run.result_path(scratch.run.workdir, OTHER_EVAL))
  before = study.read_time(scratch.run.workdir)
  launched = slurm.launch(
    tiny_study.plan, submitit.LocalExecutor(str(tmp_path)), log=lambda line: None
  )
  assert len(launched.jobs) == 1
  wait_for(launched.jobs)
  assert launched.jobs[0].exception() is None
  assert os.path.isfile(trained_run.result_path(scratch.run.workdir, OTHER_EVAL))
  with open(os.path.join(scratch.run.workdir, study.LOG_FILE)) as f:
    commands = [line for line in f if line.startswith('$ ')]
  assert commands[-1] == f'$ {shlex.join(scratch.eval_command([OTHER_EVAL], sys.executable))}\n'
  after = study.read_time(scratch.run.workdir)
  assert after['processes'] == before['processes'] + 1 and after['eval_s'] > before['eval_s']
  assert after['device_kind'] == 'cpu' and after['train_s'] == before['train_s']


def test_slurm_jobs_carry_the_options_and_dependencies(fake_slurm, fresh_plan, tmp_path):
  options = slurm_options.Options(
    partition='gpu',
    cpus_per_task=4,
    time_min=30,
    mem_gb=16,
    extra=('account=abc', 'exclusive'),
    logs=str(tmp_path / 'logs'),
  )
  lines = []
  study.run(
    fresh_plan.flag,
    fresh_plan.study_dir,
    print_commands=True,
    launcher=slurm.Launcher(options),
    log=lines.append,
  )
  commands, _ = _commands_and_table(lines)
  assert len(commands) == 6 and not os.listdir(fake_slurm)  # the commands; nothing submitted
  assert not os.path.exists(fresh_plan.study_dir)
  lines = []
  study.run(
    fresh_plan.flag, fresh_plan.study_dir, launcher=slurm.Launcher(options), log=lines.append
  )
  assert [line.split(': job ')[1] for line in lines[:-1]] == [
    '101',
    '102 after job 101',
    '103 after job 102',
    '104',
    '105 after job 104',
  ]
  assert not os.path.exists(fresh_plan.report_dir)  # the report waits for the jobs
  for job_id in range(101, 106):
    script = sbatch_options(fake_slurm, job_id)
    assert {key: script[key] for key in ('partition', 'cpus-per-task', 'time', 'mem')} == {
      'partition': 'gpu',
      'cpus-per-task': '4',
      'time': '30',
      'mem': '16384M',
    }
    assert script['gpus-per-node'] == '1' and script['account'] == 'abc'
    assert script['exclusive'] == '' and script['output'].startswith(str(tmp_path / 'logs'))
  assert 'dependency' not in sbatch_options(fake_slurm, 101)
  assert sbatch_options(fake_slurm, 102)['dependency'] == 'afterok:101'
  assert sbatch_options(fake_slurm, 102)['kill-on-invalid-dep'] == 'yes'
  assert sbatch_options(fake_slurm, 105)['job-name'] == 'tiny_study-cell2-eval'

  # Queued jobs stay; a job squeue no longer lists (or lists as ended) whose process did not
  # finish is submitted again, and so is the one after it.
  (fake_slurm / 'queue').write_text(
    '101|RUNNING|None\n102|PENDING|Dependency\n103|PENDING|Dependency\n104|FAILED|None\n'
  )
  lines = []
  launched = slurm.launch(
    fresh_plan, slurm_options.make_executor(str(tmp_path / 'logs'), options), log=lines.append
  )
  assert [line.split(': job ')[1].split(';')[0] for line in lines[:-1]] == [
    '101 is RUNNING',
    '102 is PENDING (Dependency)',
    '103 is PENDING (Dependency)',
    '106',
    '107 after job 106',
  ]
  assert len(launched.jobs) == 2 and launched.queued == 3 and not launched.complete
  # A job left waiting for one that is submitted again would never start: it is cancelled and
  # submitted again after the new one.
  (fake_slurm / 'queue').write_text('102|PENDING|Dependency\n103|PENDING|Dependency\n')
  lines = []
  slurm.launch(
    fresh_plan, slurm_options.make_executor(str(tmp_path / 'logs'), options), log=lines.append
  )
  assert [line.split(': job ')[1].split(';')[0] for line in lines[:3]] == [
    '108',
    '109 after job 108',
    '110 after job 109',
  ]
  assert (fake_slurm / 'cancelled').read_text().split() == ['102', '103']
  assert sbatch_options(fake_slurm, 109)['dependency'] == 'afterok:108'


def test_slurm_failures_are_one_line(fake_slurm, fresh_plan, tmp_path):
  executor = slurm_options.make_executor(str(tmp_path / 'logs'), slurm_options.Options())
  (fake_slurm / 'refuse').write_text(
    'sbatch: error: Batch job submission failed: Requested time limit is invalid\n'
  )
  with pytest.raises(slurm_options.SlurmError) as refused:
    slurm.launch(fresh_plan, executor, log=lambda line: None)
  assert '\n' not in str(refused.value)
  assert str(refused.value).startswith('sbatch refused the job of [pretrain 1/1]')
  assert 'Requested time limit is invalid; --slurm_time=1440 (minutes) is over' in str(
    refused.value
  )
  (fake_slurm / 'refuse').unlink()
  slurm.launch(fresh_plan, executor, log=lambda line: None)
  (fake_slurm / 'squeue_fails').write_text('')
  with pytest.raises(slurm_options.SlurmError, match=r'^squeue failed \(slurm_load_jobs error'):
    slurm.launch(fresh_plan, executor, log=lambda line: None)
  assert not (fake_slurm / 'job_106.sh').exists()  # unknown states: nothing submitted


def test_slurm_extra_options():
  assert slurm_options.parse_extra(['account=abc', 'qos=high', 'exclusive', 'mail_type=END']) == {
    'account': 'abc',
    'qos': 'high',
    'exclusive': True,
    'mail-type': 'END',
  }
  for values, message in [
    (['account'], None),
    (['acc ount=x'], 'is not key=value'),
    (['=x'], 'is not key=value'),
    (['qos='], 'is not key=value'),
    (['time=10'], 'use --slurm_time'),
    (['dependency=afterok:1'], 'the launcher sets it'),
    (['nodes=2'], 'one process on one node'),
    (['qos=a', 'qos=b'], 'sets --qos twice'),
  ]:
    if message is None:
      slurm_options.parse_extra(values)
      continue
    with pytest.raises(slurm_options.SlurmError, match=message):
      slurm_options.parse_extra(values)


def test_slurm_needs_its_commands(tmp_path, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))  # no srun
  with pytest.raises(slurm_options.SlurmError, match="needs Slurm's srun, sbatch and squeue"):
    slurm_options.make_executor(str(tmp_path / 'logs'), slurm_options.Options())


@pytest.mark.parametrize(
  'args, message',
  [
    (['--launcher=pbs'], 'flag --launcher=pbs: value should be one of <local|slurm>'),
    (['--launcher=slurm', '--slurm_extra=acc ount=x'], "--slurm_extra='acc ount=x' is not"),
    (['--launcher=slurm', '--slurm_extra=partition=gpu'], 'use --slurm_partition'),
    (['--slurm_partition=gpu'], '--slurm_partition apply to --launcher=slurm only'),
    (['--print_commands', '--images_per_s=0'], 'flag --images_per_s=0: 0.0 is not'),
  ],
)
def test_launcher_flag_errors_are_one_line(args, message, tmp_path):
  result = subprocess.run(
    [sys.executable, '-m', 'hpe_jax.commands.study', f'--study={tmp_path / "any.py"}', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 2 and result.stdout == ''
  assert result.stderr.startswith('error: ') and result.stderr.count('\n') == 1
  assert message in result.stderr


def compute_rows(totals: dict[str, list[int]]) -> list[dict]:
  """Results rows of one X with the given training-image totals per pretraining mode."""
  return [
    {
      'dataset_3d': 'X',
      'pretraining': mode,
      'backbone': 'resnet18',
      'dataset_2d': 'A' if mode == '2d' else '',
      'seed': 0,
      'steps': i,
      'budget': i,
      'images_total': total,
      'params': total,
      'mpjpe': 100.0 + i,
      'mpjpe_mean_pose': 150.0,
    }
    for mode, values in totals.items()
    for i, total in enumerate(values)
  ]


def visible_x_tick_labels(figure):
  """The drawn x tick labels of every panel -> [(text, window extent)] per panel."""
  canvas = FigureCanvasAgg(figure)
  canvas.draw()
  renderer = canvas.get_renderer()
  panels = []
  for ax in figure.axes:
    low, high = ax.get_xlim()
    labels = [
      (label.get_text(), label.get_window_extent(renderer))
      for label in ax.xaxis.get_ticklabels(which='both')
      if label.get_visible() and label.get_text() and low <= label.get_position()[0] <= high
    ]
    panels.append(sorted(labels, key=lambda item: item[1].x0))
  return panels


@pytest.mark.parametrize(
  'totals',
  [
    {'none': [16], '2d': [32]},  # the tiny study
    {'none': [3200, 12800], '2d': [35200, 44800]},  # configs/study_small.py
    {'none': [6400, 64000, 640000, 6400000], '2d': [3.2e6, 3.3e6, 3.8e6, 9.6e6]},
    {'none': [100, 1e4, 1e6], '2d': [1e8, 1e9]},
  ],
)
def test_plot_tick_labels_do_not_overlap(totals, tmp_path):
  rows = compute_rows(totals)
  for plot in (plots.plot_compute, plots.plot_backbone):
    (panel,) = visible_x_tick_labels(plot(rows, ['X'], str(tmp_path / 'plot.png')))
    assert len(panel) >= 2, panel
    for (text, extent), (next_text, next_extent) in zip(panel, panel[1:]):
      assert extent.x1 <= next_extent.x0, f'{text!r} overlaps {next_text!r}'


def test_a_report_before_any_cell_finished_shows_no_plots(fresh_plan):
  os.makedirs(fresh_plan.report_dir)
  stale = os.path.join(fresh_plan.report_dir, 'compute.png')
  open(stale, 'wb').close()
  study.run(fresh_plan.flag, fresh_plan.study_dir, report_only=True, log=lambda line: None)
  assert sorted(os.listdir(fresh_plan.report_dir)) == [
    'generalisation.csv',
    'generalisation.md',
    'results.csv',
    'results.md',
  ]
  with open(os.path.join(fresh_plan.report_dir, 'results.md')) as f:
    markdown = f.read()
  assert '0 of 2 cells finished' in markdown and 'No cell has finished yet' in markdown
  assert '.png' not in markdown and 'No plots yet' in markdown


@pytest.mark.slow
def test_the_report_links_the_plots_it_wrote(tiny_study):
  with open(os.path.join(tiny_study.study_dir, 'report', 'results.md')) as f:
    links = re.findall(r'!\[\w+\]\((\w+\.png)\)', f.read())
  assert links == ['compute.png', 'backbone.png', 'generalisation.png']
  assert all(os.path.isfile(os.path.join(tiny_study.study_dir, 'report', n)) for n in links)


def test_imagenet_weights_start_every_run_without_a_parent(tmp_path):
  """A budgets study's `imagenet` starts its pre-trainings and 3D-only cells from those weights;
  the fine-tunes graft from their pre-training instead."""
  flag = tmp_path / 'study.py'
  flag.write_text(
    study_source(None).replace('  return c', "  c.imagenet = 'w/{backbone}.npz'\n  return c")
  )
  plan = study.plan_study(str(flag), str(tmp_path / 'study'), plan_only=True)
  inits = [dict(run.flags).get('model.init') for run in plan.runs]
  assert inits == ['w/resnet18.npz', None, 'w/resnet18.npz']  # pre-training, fine-tune, 3D-only


def test_a_recipe_study_compares_its_cells_whatever_their_steps():
  """Under recipe 'paper' each cell's steps follow its datasets' sizes: the comparison and the
  generalisation matrix pair cells by the recipe, not by equal steps."""
  from hpe_jax.study import results  # pylint: disable=g-import-not-at-top

  def row(pretraining, dataset_2d, steps, mpjpe):
    return {
      'backbone': 'resnet50',
      'dataset_3d': 'human36m',
      'budget': 'paper recipe',
      'steps': steps,
      'pretraining': pretraining,
      'dataset_2d': dataset_2d,
      'mpjpe': mpjpe,
      'mpjpe_mean_pose': 300.0,
      'seed': 0,
      'images_3d': steps * 32,
      'images_total': steps * 32,
    }

  rows = [row('2d', 'mpii', 97370, 60.0), row('2d', 'flic_full', 87150, 70.0)]
  rows.append(row('none', '', 78400, 80.0))
  assert results.largest_budget_rows(rows) == rows
  table = results._comparison(rows)
  assert [(line[2], line[3], line[5], line[6], line[7]) for line in table] == [
    ('paper recipe', 'mpii', '80.0', '60.0', '+20.0'),
    ('paper recipe', 'flic_full', '80.0', '70.0', '+10.0'),
  ]

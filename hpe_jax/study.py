"""Studies: 2D pre-training vs 3D-only training across backbones, datasets, seeds and budgets.

  python tools/study.py --study=configs/study_small.py [--study_dir=runs/study_small] \
      [--print_commands] [--report_only] [--quiet]

A study config's `get_config(arg)` lists the axes (`FIELDS`). Every combination of pretraining
mode, backbone, 2D dataset (2D-pretrained cells only), 3D dataset X, seed and 3D step budget is a
cell: configs/finetune.py started from a configs/pretrain.py run (one per backbone, 2D dataset and
seed, shared by its cells), or configs/scratch3d.py. Each cell is then evaluated by
hpe_jax.evaluate on its own X and on every other dataset of the study. Everything runs as the
`python -m ...` commands that --print_commands shows; a re-run skips what is finished and resumes
what was interrupted. The report (results table, generalisation matrix, plots) goes to
<study_dir>/report/.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import ml_collections
import numpy as np

from hpe_jax import default_config
from hpe_jax import evaluate
from hpe_jax import errors

# The fields of a study config, each with an example value for error messages.
FIELDS = {
    'pretraining': "('2d', 'none')",
    'backbones': "('resnet18', 'resnet50')",
    'datasets_2d': "('synthetic_humans',)",
    'datasets_3d': "('synthetic_humans', 'synthetic_humans/overhead')",
    'seeds': '(0, 1)',
    'steps_3d': '(500, 1000)',
    'pretrain_steps': '2000',
    'eval_datasets': "('human36m:test',)",
    'overrides': "{'model': {'width': 16}, 'train': {'batch_size': 16}}",
}
PRETRAINING_MODES = ('2d', 'none')
# Config fields that every run's command sets from the study's axes; `overrides` may not.
AXIS_FIELDS = ('seed', 'init_from', 'model.name', 'data.train_2d', 'data.train_3d', 'data.eval',
               'train.num_steps', 'train.lr_drop_steps')
# Share of a run's steps after which its learning rate drops, as in the configs' quick presets.
LR_DROP_FRACTION = 0.8
# What the report shows of each evaluation (keys of hpe_jax.evaluate's json files).
METRICS = ('mpjpe', 'pa_mpjpe', 'pck')
TIME_FILE = 'study_time.json'  # in each run's workdir and in the study dir
LOG_FILE = 'study.log'  # each run's processes' output, appended
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'


class StudyError(errors.HpeError, ValueError):
  """A study cannot go on as asked; the message names the field or run, and the fix."""


# ---------------------------------------------------------------------------------------------
# The study config


@dataclasses.dataclass(frozen=True)
class Axes:
  """A checked study config (see FIELDS); overrides are ('config.field', flag value) pairs."""

  pretraining: tuple[str, ...]
  backbones: tuple[str, ...]
  datasets_2d: tuple[str, ...]
  datasets_3d: tuple[str, ...]
  seeds: tuple[int, ...]
  steps_3d: tuple[int, ...]
  pretrain_steps: int
  eval_datasets: tuple[str, ...]
  overrides: tuple[tuple[str, str], ...]


def _items(config: ml_collections.ConfigDict, field: str, kind: type, *, required: bool = True
           ) -> tuple:
  """A tuple field (a bare value counts as a 1-tuple) whose items are distinct `kind`s."""
  value = config.get(field, ())
  items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
  if required and not items:
    raise StudyError(f'study field {field} is empty; set it, e.g. {field} = {FIELDS[field]}')
  for item in items:
    if isinstance(item, bool) or not isinstance(item, kind):
      raise StudyError(f'study field {field}={value!r}: each item must be a {kind.__name__}, '
                       f'e.g. {field} = {FIELDS[field]}')
  if len(set(items)) < len(items):
    raise StudyError(f'study field {field}={value!r} lists an item twice; list each once')
  return items


def _flag_value(value) -> str:
  """A config value as `--config.field=` parses it back ([1, 2] -> '(1, 2)')."""
  return str(tuple(value) if isinstance(value, list) else value)


def check_config(config: ml_collections.ConfigDict) -> Axes:
  """Checks a study config's fields (see FIELDS) -> its axes; raises StudyError naming the field
  and the fix."""
  from hpe_jax import models  # the model names; imported here to keep the CLI's --help fast
  unknown = sorted(set(config.keys()) - set(FIELDS))
  if unknown:
    raise StudyError(f'unknown study field(s) {", ".join(unknown)}; a study config has '
                     f'{", ".join(FIELDS)}')
  pretraining = _items(config, 'pretraining', str)
  for mode in pretraining:
    if mode not in PRETRAINING_MODES:
      raise StudyError(f"study field pretraining has {mode!r}: use '2d' (pre-train on 2D data, "
                       "then fine-tune) and/or 'none' (3D-only training)")
  backbones = _items(config, 'backbones', str)
  for name in backbones:
    if name not in models.NAMES:
      raise StudyError(f'study field backbones has {name!r}, which is not a model.name; use '
                       f'{", ".join(models.NAMES)}')
  with_2d = '2d' in pretraining
  datasets_2d = _items(config, 'datasets_2d', str, required=with_2d)
  datasets_3d = _items(config, 'datasets_3d', str)
  for name in datasets_3d:
    if ',' in name:
      raise StudyError(f'study field datasets_3d has {name!r}, several sources in one entry; a '
                       'cell is evaluated on its own training dataset: list one dataset per entry')
  seeds = _items(config, 'seeds', int)
  steps_3d = _items(config, 'steps_3d', int)
  pretrain_steps = config.get('pretrain_steps', 0)
  for field, values in (('steps_3d', steps_3d),
                        ('pretrain_steps', (pretrain_steps,) if with_2d else ())):
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
      raise StudyError(f'study field {field}={config.get(field)!r} must hold positive ints, e.g. '
                       f'{field} = {FIELDS[field]}')
  eval_datasets = _items(config, 'eval_datasets', str, required=False)
  overrides = default_config.flatten(config.get('overrides', {}))
  known = default_config.flatten(default_config.base_config().to_dict())
  for key in overrides:
    if key in AXIS_FIELDS:
      raise StudyError(f'study field overrides sets {key}, which the study sets for each run '
                       'from its axes; remove it from overrides')
    if key not in known:
      raise StudyError(f'study field overrides sets {key}, which is not a config field (see '
                       'hpe_jax/default_config.py); nest fields as '
                       f'overrides = {FIELDS["overrides"]}')
  return Axes(pretraining, backbones, datasets_2d, datasets_3d, seeds, steps_3d,
              pretrain_steps if with_2d else 0, eval_datasets,
              tuple((k, _flag_value(v)) for k, v in overrides.items()))


# ---------------------------------------------------------------------------------------------
# The plan: runs, cells and their commands


def _display_path(path: str) -> str:
  """A path relative to the working directory when it lies below it (shorter commands)."""
  relative = os.path.relpath(path)
  return path if relative.startswith('..') else relative


def _slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9.-]+', '_', text).strip('_')


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a study."""

  workdir: str
  config_file: str  # configs/*.py
  flags: tuple[tuple[str, str], ...]  # (config field, value) pairs of its --config.* flags
  backbone: str
  num_steps: int
  description: str  # for progress lines

  def train_command(self, python: str = 'python') -> list[str]:
    return [python, '-m', 'hpe_jax.main', f'--config={self.config_file}',
            f'--workdir={self.workdir}'] + [f'--config.{k}={v}' for k, v in self.flags]

  def identity(self) -> dict:
    """What must not change between invocations of a study for its runs to be reused."""
    flags = [f'{k}={os.path.abspath(v) if k == "init_from" else v}' for k, v in self.flags]
    return {'config': os.path.basename(self.config_file), 'flags': flags}


@dataclasses.dataclass(frozen=True)
class Cell:
  """One combination of the study's axes: a run and the datasets it is evaluated on."""

  pretraining: str  # '2d' or 'none'
  backbone: str
  dataset_2d: str  # '' for 3D-only cells
  dataset_3d: str  # X, as the study names it
  seed: int
  steps: int
  run: Run
  pretrain: Run | None
  evals: tuple[str, ...]  # resolved 'name:split' datasets, X's own evaluation split first
  label: str  # 'resnet18 2d-pretrained on X, seed 0'

  def eval_command(self, datasets: list[str], python: str = 'python') -> list[str]:
    return [python, '-m', 'hpe_jax.evaluate', f'--workdir={self.run.workdir}'] + [
        f'--dataset={name}' for name in datasets]


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything a study runs, in dependency order."""

  name: str  # 'study_small'
  flag: str  # 'configs/study_small.py[:arg]'
  config: ml_collections.ConfigDict
  axes: Axes
  study_dir: str
  pretrains: tuple[Run, ...]
  cells: tuple[Cell, ...]
  columns: tuple[str, ...]  # every evaluation dataset, resolved 'name:split'

  @property
  def report_dir(self) -> str:
    return os.path.join(self.study_dir, 'report')


def _resolve_datasets(axes: Axes) -> tuple[dict[str, str], tuple[str, ...]]:
  """Checks that every dataset exists (building the synthetic ones on first use) and resolves the
  evaluation datasets -> ({X: its own evaluation split}, all evaluation columns)."""
  from hpe_jax.data import datasets
  data_dir = dict(axes.overrides).get('data.data_dir', '')

  def resolve(name: str, role: str, field: str) -> str:
    try:
      return str(datasets.resolve(name, role, data_dir))
    except datasets.DatasetError as e:
      raise StudyError(f'study field {field} has {name!r}: {e}') from e

  for spec in axes.datasets_2d:
    for name in datasets.parse_list(spec):
      resolve(name, '2d', 'datasets_2d')
  own = {}
  for name in axes.datasets_3d:
    resolve(name, '3d', 'datasets_3d')
    own[name] = resolve(name.partition(':')[0], 'eval', 'datasets_3d')
  extra = [resolve(name, 'eval', 'eval_datasets') for name in axes.eval_datasets]
  return own, tuple(dict.fromkeys([*own.values(), *extra]))


def _lr_drop(steps: int) -> str:
  return f'({max(1, round(LR_DROP_FRACTION * steps))},)'


def _config_file(name: str) -> str:
  return _display_path(os.path.join(CONFIGS_DIR, name))


def _pretrain_runs(axes: Axes, study_dir: str) -> dict[tuple[str, str, int], Run]:
  """The pre-training runs by (backbone, 2D dataset, seed)."""
  from hpe_jax.data import datasets
  runs = {}
  steps = axes.pretrain_steps
  for seed in axes.seeds:
    for backbone in axes.backbones:
      for dataset_2d in axes.datasets_2d if '2d' in axes.pretraining else ():
        first_source = datasets.parse_list(dataset_2d)[0]
        runs[backbone, dataset_2d, seed] = Run(
            workdir=os.path.join(study_dir, 'pretrain', f'{backbone}__{_slug(dataset_2d)}__'
                                 f'{steps}steps__seed{seed}'),
            config_file=_config_file('pretrain.py'),
            flags=(('model.name', backbone), ('data.train_2d', dataset_2d),
                   ('data.eval', first_source.partition(':')[0]),  # its held-out split
                   ('train.num_steps', str(steps)), ('train.lr_drop_steps', _lr_drop(steps)),
                   ('seed', str(seed)), *axes.overrides),
            backbone=backbone, num_steps=steps,
            description=f'{backbone} on {dataset_2d}, seed {seed}, {steps} steps')
  return runs


def _cells(axes: Axes, study_dir: str, pretrains: dict, own_eval: dict[str, str],
           columns: tuple[str, ...]) -> list[Cell]:
  """Every combination of the axes, in the order they run."""
  variants = [('2d', name) for name in axes.datasets_2d if '2d' in axes.pretraining]
  variants += [('none', '')] if 'none' in axes.pretraining else []
  cells = []
  for seed in axes.seeds:
    for backbone in axes.backbones:
      for dataset_3d in axes.datasets_3d:
        for steps in axes.steps_3d:
          common = (('data.train_3d', dataset_3d), ('data.eval', dataset_3d.partition(':')[0]),
                    ('train.num_steps', str(steps)), ('train.lr_drop_steps', _lr_drop(steps)),
                    ('seed', str(seed)), *axes.overrides)
          evals = tuple(dict.fromkeys([own_eval[dataset_3d], *columns]))
          for pretraining, dataset_2d in variants:
            pretrain = pretrains.get((backbone, dataset_2d, seed))
            if pretrain:
              mode = '2d-pretrained' + (f' ({dataset_2d})' if len(axes.datasets_2d) > 1 else '')
              tag = f'pre2d-{_slug(dataset_2d)}-{axes.pretrain_steps}'
              flags = (('model.name', backbone), ('data.train_2d', dataset_2d),
                       ('init_from', pretrain.workdir), *common)
            else:
              mode, tag, flags = '3d-only', '3donly', (('model.name', backbone), *common)
            label = f'{backbone} {mode} on {dataset_3d}, seed {seed}'
            run = Run(workdir=os.path.join(study_dir, 'cells', f'{backbone}__{tag}__'
                                           f'{_slug(dataset_3d)}__{steps}steps__seed{seed}'),
                      config_file=_config_file('finetune.py' if pretrain else 'scratch3d.py'),
                      flags=flags, backbone=backbone, num_steps=steps,
                      description=f'{label}, {steps} steps')
            cells.append(Cell(pretraining, backbone, dataset_2d, dataset_3d, seed, steps, run,
                              pretrain, evals, label))
  return cells


def plan_study(flag: str, study_dir: str | None = None) -> Plan:
  """Loads a study config ('path[:arg]'), checks it and its datasets -> the plan. The study dir
  defaults to runs/<config name>[_<arg>]."""
  path, _, arg = flag.partition(':')
  try:
    config = default_config.load_config(path, arg or None)
  except (FileNotFoundError, default_config.ConfigError) as e:
    raise StudyError(f'--study={flag}: {e}') from e
  axes = check_config(config)
  study_dir = study_dir or default_config.default_workdir(flag)
  own_eval, columns = _resolve_datasets(axes)
  pretrains = _pretrain_runs(axes, study_dir)
  cells = _cells(axes, study_dir, pretrains, own_eval, columns)
  return Plan(os.path.basename(default_config.default_workdir(flag)), flag, config, axes,
              study_dir, tuple(pretrains.values()), tuple(cells), columns)


# ---------------------------------------------------------------------------------------------
# What is finished


def latest_step(workdir: str) -> int:
  """The latest committed checkpoint step of a run (0: none).

  Orbax names a committed checkpoint by its step (an unfinished save carries a tmp suffix).
  Listing the directory rather than asking Orbax keeps this process off the accelerator: Orbax
  initialises JAX's backend, which on a GPU would take memory the runs need.
  """
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return 0
  return max((int(name) for name in os.listdir(directory) if name.isdigit()), default=0)


def is_trained(run: Run) -> bool:
  return latest_step(run.workdir) >= run.num_steps


def missing_evals(cell: Cell) -> list[str]:
  return [name for name in cell.evals
          if not os.path.isfile(evaluate.result_path(cell.run.workdir, name))]


def read_time(directory: str) -> dict:
  """The time record of a run's workdir or of a study dir ({} if none)."""
  path = os.path.join(directory, TIME_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, record: dict) -> None:
  """Writes through a temporary file, so that an interruption never leaves half a record."""
  with open(path + '.tmp', 'w') as f:
    json.dump(record, f, indent=2)
  os.replace(path + '.tmp', path)


def check_identities(plan: Plan) -> None:
  """Raises StudyError if a run was made with other flags than the study now gives it (its
  results would not be what the study config says)."""
  for run in (*plan.pretrains, *(cell.run for cell in plan.cells)):
    recorded = read_time(run.workdir).get('identity')
    if recorded is not None and recorded != run.identity():
      raise StudyError(
          f'{run.workdir} was made by another config: {recorded}; the study now asks for '
          f'{run.identity()}. Restore the study config, or delete {run.workdir} to train it '
          'again.')


# ---------------------------------------------------------------------------------------------
# Running


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return (f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600
          else f'{seconds // 60}m{seconds % 60:02d}s')


def subprocess_env(study_dir: str) -> dict[str, str]:
  """The runs' environment: unbuffered output (streamed live), and a persistent compilation cache
  in the study dir unless one is set (runs of the same shapes then skip most compilation)."""
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  env.setdefault(CACHE_ENV, os.path.abspath(os.path.join(study_dir, 'jax_cache')))
  return env


class _Runner:
  """Runs a plan's pending processes with progress lines and per-run time records."""

  def __init__(self, plan: Plan, *, start: float, echo: bool, log):
    """`start`: time.perf_counter() at the start of the study's invocation."""
    self.plan, self.start, self.echo, self.log = plan, start, echo, log
    self.env = subprocess_env(plan.study_dir)
    self.processes = 0
    self._device_kind = None
    # Seconds of finished runs by _key: the ETA's estimates.
    self.durations = collections.defaultdict(list)
    for run, done in self._items():
      if done:
        self._add_duration(run)

  def _items(self):
    """(run, finished) for every pre-training run and cell."""
    for run in self.plan.pretrains:
      yield run, is_trained(run)
    for cell in self.plan.cells:
      yield cell.run, is_trained(cell.run) and not missing_evals(cell)

  @staticmethod
  def _key(run: Run) -> tuple:
    return run.num_steps, run.backbone, run.config_file

  def _add_duration(self, run: Run) -> None:
    record = read_time(run.workdir)
    if record:
      self.durations[self._key(run)].append(record['train_s'] + record['eval_s'])

  def _eta(self) -> str:
    """The estimated time of what is pending, from the finished runs most alike."""
    if not self.durations:
      return '--'
    total = 0.0
    for run, done in self._items():
      if done:
        continue
      key = self._key(run)
      for length in (3, 2, 1, 0):  # the same kind of run, else the same steps and backbone, ...
        alike = [s for other, values in self.durations.items() if other[:length] == key[:length]
                 for s in values]
        if alike:
          total += float(np.mean(alike))
          break
    return _duration(total)

  def device_kind(self) -> str:
    """jax.devices()[0].device_kind of the runs, asked of a child process (see latest_step)."""
    if self._device_kind is None:
      probe = subprocess.run(
          [sys.executable, '-c', 'import jax; print(jax.devices()[0].device_kind)'],
          capture_output=True, text=True, env=self.env, check=False)
      lines = probe.stdout.strip().splitlines()
      self._device_kind = lines[-1] if probe.returncode == 0 and lines else 'unknown'
    return self._device_kind

  def progress(self, tag: str, message: str) -> None:
    self.log(f'{tag} {message} | elapsed {_duration(time.perf_counter() - self.start)} | '
             f'ETA {self._eta()}')

  def process(self, run: Run, stage: str, command: list[str], tag: str) -> None:
    """Runs one process of a run (stage 'train' or 'eval'), streaming its output to
    <workdir>/study.log (and, with echo, to the log), and adds its wall time to the run's time
    record, also when interrupted."""
    os.makedirs(run.workdir, exist_ok=True)
    device_kind = self.device_kind()
    tail = collections.deque(maxlen=12)
    start = time.perf_counter()
    with open(os.path.join(run.workdir, LOG_FILE), 'a') as log_file:
      log_file.write(f'$ {shlex.join(command)}\n')
      log_file.flush()
      child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=self.env)
      # SIGTERM (a scheduler's pre-emption) goes on to the run, which saves a checkpoint; Ctrl-C
      # reaches it directly (same process group).
      previous = None
      if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, _: child.send_signal(signum))
      try:
        for line in child.stdout:
          log_file.write(line)
          tail.append(line.rstrip('\n'))
          if self.echo:
            self.log('    ' + line.rstrip('\n'))
      finally:
        child.wait()
        if previous is not None:
          signal.signal(signal.SIGTERM, previous)
        self.processes += 1
        record = read_time(run.workdir) or {'train_s': 0.0, 'eval_s': 0.0, 'processes': 0}
        record[f'{stage}_s'] += time.perf_counter() - start
        record['processes'] += 1
        record['device_kind'] = device_kind
        record['identity'] = run.identity()
        _write_json(os.path.join(run.workdir, TIME_FILE), record)
    if child.returncode:
      why = ('was interrupted; run the study again to resume it' if child.returncode == 130
             else f'failed (exit {child.returncode})')
      raise StudyError(f'{tag} {shlex.join(command)}\n{why}. Its output is in '
                       f'{os.path.join(run.workdir, LOG_FILE)}; the last lines:\n' +
                       '\n'.join(tail))

  def train(self, run: Run, tag: str) -> None:
    step = latest_step(run.workdir)
    self.progress(tag, f'{run.description}: ' + (f'resuming training at step {step}' if step
                                                  else 'training'))
    self.process(run, 'train', run.train_command(sys.executable), tag)
    if not is_trained(run):
      raise StudyError(f'{tag} {run.workdir} ended at step {latest_step(run.workdir)} of '
                       f'{run.num_steps}; see {os.path.join(run.workdir, LOG_FILE)}')

  def run(self) -> None:
    check_identities(self.plan)
    count = len(self.plan.pretrains)
    for i, run in enumerate(self.plan.pretrains, 1):
      tag = f'[pretrain {i}/{count}]'
      if is_trained(run):
        self.log(f'{tag} {run.description}: skipped (trained)')
        continue
      started = time.perf_counter()
      self.train(run, tag)
      self._add_duration(run)
      self.log(f'{tag} done in {_duration(time.perf_counter() - started)}')
    count = len(self.plan.cells)
    for i, cell in enumerate(self.plan.cells, 1):
      tag = f'[cell {i}/{count}]'
      missing = missing_evals(cell)
      if is_trained(cell.run) and not missing:
        self.log(f'{tag} {cell.run.description}: skipped (trained and evaluated)')
        continue
      started = time.perf_counter()
      if not is_trained(cell.run):
        self.train(cell.run, tag)
      else:
        self.log(f'{tag} {cell.run.description}: trained')
      self.progress(tag, f'evaluating on {", ".join(missing)}')
      self.process(cell.run, 'eval', cell.eval_command(missing, sys.executable), tag)
      still_missing = missing_evals(cell)
      if still_missing:
        raise StudyError(f'{tag} hpe_jax.evaluate wrote no results for {still_missing} in '
                         f'{os.path.join(cell.run.workdir, "eval")}')
      self._add_duration(cell.run)
      self.log(f'{tag} done in {_duration(time.perf_counter() - started)}')


def pending_commands(plan: Plan) -> list[str]:
  """The shell commands of every pending step, in dependency order (pre-training first), after
  the export of the compilation cache the study uses."""
  check_identities(plan)
  lines = [f'export {CACHE_ENV}={shlex.quote(subprocess_env(plan.study_dir)[CACHE_ENV])}']
  for run in plan.pretrains:
    if not is_trained(run):
      lines.append(shlex.join(run.train_command()))
  for cell in plan.cells:
    if not is_trained(cell.run):
      lines.append(shlex.join(cell.run.train_command()))
    missing = missing_evals(cell)
    if missing:
      lines.append(shlex.join(cell.eval_command(missing)))
  return lines


def run(flag: str, study_dir: str | None = None, *, print_commands: bool = False,
        report_only: bool = False, echo: bool = True, log=print) -> Plan:
  """Plans a study (config 'path[:arg]'), then prints its pending commands, or runs them and
  writes the report, or (report_only) writes the report from what is finished."""
  start = time.perf_counter()
  plan = plan_study(flag, study_dir)
  if print_commands:
    for line in pending_commands(plan):
      log(line)
    return plan
  if not report_only:
    log(f'Study {plan.name} in {plan.study_dir}: {len(plan.cells)} cells, '
        f'{len(plan.pretrains)} pre-training runs.')
    runner = _Runner(plan, start=start, echo=echo, log=log)
    try:
      runner.run()
    finally:
      if runner.processes:  # invocations that only skip or report add nothing
        record = read_time(plan.study_dir) or {'seconds': 0.0, 'invocations': 0}
        record['seconds'] += time.perf_counter() - start
        record['invocations'] += 1
        _write_json(os.path.join(plan.study_dir, TIME_FILE), record)
    log(f'Study {plan.name} finished in {_duration(time.perf_counter() - start)}.')
  paths = write_report(plan)
  log('Report: ' + ', '.join(paths))
  return plan


# ---------------------------------------------------------------------------------------------
# The report


def count_params(workdir: str, cache: dict) -> int:
  """Parameters (not batch statistics) of a run's model, built abstractly from its config.json
  (no computation, no device)."""
  from flax import nnx
  import jax
  from hpe_jax import inference
  from hpe_jax import models
  config = inference.load_run_config(workdir)
  key = json.dumps(config.model.to_dict(), sort_keys=True)
  if key not in cache:
    model = nnx.eval_shape(lambda: models.create_model(
        config.model, with_depth=config.model.depth, rngs=nnx.Rngs(0)))
    cache[key] = sum(int(np.prod(leaf.shape))
                     for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
  return cache[key]


def _run_config(workdir: str) -> dict:
  with open(os.path.join(workdir, 'config.json')) as f:
    return json.load(f)


def _seconds(workdir: str) -> float:
  record = read_time(workdir)
  return record.get('train_s', 0.0) + record.get('eval_s', 0.0)


def metric_column(metric: str, dataset: str) -> str:
  return f'{metric}@{dataset}'


def collect(plan: Plan) -> list[dict]:
  """One row per trained cell (the results.csv columns); metrics of missing evaluations are
  None."""
  rows, params_cache = [], {}
  for cell in plan.cells:
    if not is_trained(cell.run):
      continue
    workdir = cell.run.workdir
    batch_size = _run_config(workdir)['train']['batch_size']
    pretrain_images = pretrain_seconds = 0
    if cell.pretrain:
      pretrain_config = _run_config(cell.pretrain.workdir)['train']
      pretrain_images = pretrain_config['num_steps'] * pretrain_config['batch_size']
      pretrain_seconds = _seconds(cell.pretrain.workdir)
    row = {
        'pretraining': cell.pretraining, 'backbone': cell.backbone,
        'params': count_params(workdir, params_cache), 'dataset_2d': cell.dataset_2d,
        'dataset_3d': cell.dataset_3d, 'seed': cell.seed, 'steps': cell.steps,
        'pretrain_steps': cell.pretrain.num_steps if cell.pretrain else 0,
        'batch_size': batch_size, 'images_3d': cell.steps * batch_size,
        'images_total': cell.steps * batch_size + pretrain_images,
        'wall_s': _seconds(workdir), 'wall_total_s': _seconds(workdir) + pretrain_seconds,
        'device_kind': read_time(workdir).get('device_kind', 'cpu'),
    }
    results = {}
    for dataset in cell.evals:
      path = evaluate.result_path(workdir, dataset)
      if os.path.isfile(path):
        with open(path) as f:
          results[dataset] = json.load(f)
    own = results.get(cell.evals[0], {})
    row.update({metric: own.get(metric) for metric in METRICS})
    row['mpjpe_mean_pose'] = own.get('mpjpe_mean_pose')  # predicting the training mean pose
    for dataset in plan.columns:
      row.update({metric_column(metric, dataset): results.get(dataset, {}).get(metric)
                  for metric in METRICS})
    row['workdir'] = workdir
    row['label'] = cell.label
    row['own_eval'] = cell.evals[0]
    rows.append(row)
  return rows


def csv_columns(plan: Plan) -> list[str]:
  """The columns of results.csv."""
  return ['pretraining', 'backbone', 'params', 'dataset_2d', 'dataset_3d', 'seed', 'steps',
          'pretrain_steps', 'batch_size', 'images_3d', 'images_total', 'wall_s', 'wall_total_s',
          'device_kind', *METRICS, 'mpjpe_mean_pose',
          *(metric_column(m, d) for d in plan.columns for m in METRICS), 'workdir']


def _write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows({k: ('' if v is None else v) for k, v in row.items()} for row in rows)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in rows]) + '\n'


def _mm(value) -> str:
  return '' if value is None else f'{value:.1f}'


def _percent(value) -> str:
  return '' if value is None else f'{100 * value:.1f}'


def _count(value: float) -> str:
  for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if value >= scale:
      return f'{value / scale:.3g}{unit}'
  return str(int(value))


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def largest_budget_rows(rows: list[dict]) -> list[dict]:
  """The rows at the largest 3D step budget (the generalisation matrix's rows)."""
  largest = max((row['steps'] for row in rows), default=0)
  return [row for row in rows if row['steps'] == largest]


def _comparison(rows: list[dict]) -> list[list[str]]:
  """2D-pretrained vs 3D-only MPJPE at equal 3D steps, averaged over seeds."""
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for row in rows:
    groups[row['backbone'], row['dataset_3d'], row['steps']][
        row['pretraining'], row['dataset_2d']].append(row)
  table = []
  for (backbone, dataset_3d, steps), modes in groups.items():
    scratch_rows = modes.get(('none', ''), [])
    scratch = _mean(r['mpjpe'] for r in scratch_rows)
    pretrained_groups = [(key[1], group) for key, group in modes.items() if key[0] == '2d']
    for dataset_2d, group in pretrained_groups or [('', [])]:
      pretrained = _mean(r['mpjpe'] for r in group)
      gain = f'{scratch - pretrained:+.1f}' if None not in (scratch, pretrained) else ''
      every = group + scratch_rows
      table.append([backbone, dataset_3d, str(steps), dataset_2d or '-',
                    _mm(_mean(r['mpjpe_mean_pose'] for r in every)), _mm(scratch),
                    _mm(pretrained), gain, str(len({r['seed'] for r in every})),
                    _count(every[0]['images_3d']),
                    _count(group[0]['images_total']) if group else ''])
  return table


def write_report(plan: Plan) -> list[str]:
  """Writes <study_dir>/report/: results.{md,csv}, generalisation.{md,csv}, compute.png,
  backbone.png, generalisation.png -> their paths."""
  os.makedirs(plan.report_dir, exist_ok=True)
  rows = collect(plan)
  path = lambda name: os.path.join(plan.report_dir, name)
  _write_csv(path('results.csv'), csv_columns(plan), rows)
  matrix_rows = largest_budget_rows(rows)
  matrix = [[row[metric_column('mpjpe', d)] for d in plan.columns] for row in matrix_rows]
  labels = [row['label'] for row in matrix_rows]
  with open(path('generalisation.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['cell', *plan.columns])
    writer.writerows([label, *('' if v is None else v for v in values)]
                     for label, values in zip(labels, matrix))
  with open(path('generalisation.md'), 'w') as f:
    f.write(_generalisation_markdown(plan, matrix_rows, matrix))
  with open(path('results.md'), 'w') as f:
    f.write(_results_markdown(plan, rows))
  names = ['results.md', 'results.csv', 'generalisation.md', 'generalisation.csv']
  if rows:
    plot_compute(rows, plan.axes.datasets_3d, path('compute.png'))
    plot_backbone(rows, plan.axes.datasets_3d, path('backbone.png'))
    plot_generalisation(labels, plan.columns, matrix, path('generalisation.png'))
    names += ['compute.png', 'backbone.png', 'generalisation.png']
  return [path(name) for name in names]


def _time_summary(plan: Plan) -> str:
  """How long the study took, from the time records."""
  study = read_time(plan.study_dir)
  parts = {'pre-training': sum(read_time(r.workdir).get('train_s', 0.0) for r in plan.pretrains),
           '3D stages': sum(read_time(c.run.workdir).get('train_s', 0.0) for c in plan.cells),
           'evaluation': sum(read_time(c.run.workdir).get('eval_s', 0.0) for c in plan.cells)}
  kinds = sorted({read_time(r.workdir).get('device_kind') for r in
                  (*plan.pretrains, *(c.run for c in plan.cells))} - {None})
  return (f'{_duration(study.get("seconds", 0.0))} of wall time over '
          f'{study.get("invocations", 0)} invocation(s) of tools/study.py that ran something '
          '(dataset builds, compilation, training and evaluation). Of that, the runs\' processes: '
          + ', '.join(f'{name} {_duration(s)}' for name, s in parts.items())
          + f'. Device: {", ".join(kinds) or "none recorded"}.')


def _results_markdown(plan: Plan, rows: list[dict]) -> str:
  pending = [c.run.description for c in plan.cells if not is_trained(c.run) or missing_evals(c)]
  lines = [f'# Study {plan.name}: 2D pre-training vs 3D-only training', '',
           f'`python tools/study.py --study={plan.flag} --study_dir={plan.study_dir}` '
           f'({datetime.datetime.now():%Y-%m-%d %H:%M}): {len(plan.cells) - len(pending)} of '
           f'{len(plan.cells)} cells finished.', '', f'Time: {_time_summary(plan)}', '']
  if pending:
    lines += ['Not finished: ' + '; '.join(pending) + '.', '']
  lines += ['## 2D pre-training vs 3D-only at equal 3D steps', '',
            'MPJPE in mm (lower is better) on the test split of the 3D training dataset, mean '
            'over seeds. Mean pose: predicting the mean training pose for every person. '
            'Gain = 3D-only minus 2D-pretrained (positive: pre-training helps). '
            'Images: training images seen in the 3D stage, and in total with the 2D '
            'pre-training (the fair compute comparison; a 3D-only cell sees its 3D images only).',
            '',
            _markdown_table(['backbone', '3D data', '3D steps', '2D data', 'mean pose', '3D-only',
                             '2D-pretrained', 'gain', 'seeds', 'images 3D stage',
                             'images total (2D-pretrained)'], _comparison(rows)),
            '## All cells', '',
            'Own X: the test split of the cell\'s 3D training dataset. PCK@0.2 (torso) in %. '
            'Wall time of the cell\'s processes (training and evaluation), and in total with its '
            'pre-training run. Every metric of every evaluation is in results.csv.', '']
  others = list(plan.columns)
  header = ['pretraining', 'backbone', 'params', '2D data', '3D data (X)', 'seed', '3D steps',
            'images 3D / total', 'wall / total', 'MPJPE', 'PA-MPJPE', 'PCK',
            *(f'MPJPE on {name}' for name in others)]
  table = [[row['pretraining'], row['backbone'], _count(row['params']), row['dataset_2d'] or '-',
            row['dataset_3d'], str(row['seed']), str(row['steps']),
            f'{_count(row["images_3d"])} / {_count(row["images_total"])}',
            f'{_duration(row["wall_s"])} / {_duration(row["wall_total_s"])}', _mm(row['mpjpe']),
            _mm(row['pa_mpjpe']), _percent(row['pck']),
            *(_mm(row[metric_column('mpjpe', name)]) for name in others)] for row in rows]
  lines += [_markdown_table(header, table), '## Plots', '',
            '- compute.png: MPJPE on own X against training images seen (2D pre-training '
            'included), one line per backbone, 2D data and seed through its 3D budgets.',
            '- backbone.png: MPJPE on own X against parameters at the largest 3D budget.',
            '- generalisation.png: the matrix of generalisation.md.', '',
            '![compute](compute.png)', '', '![backbone](backbone.png)', '',
            '![generalisation](generalisation.png)', '', '## Study config', '', '```python',
            *(f'{key} = {value!r}'
              for key, value in default_config.flatten(plan.config).items()), '```', '']
  return '\n'.join(lines)


def _generalisation_markdown(plan: Plan, rows: list[dict], matrix: list[list]) -> str:
  steps = rows[0]['steps'] if rows else 0
  table = [[row['label'], *(f'**{_mm(v)}**' if name == row['own_eval'] and v is not None
                            else _mm(v) for name, v in zip(plan.columns, values))]
           for row, values in zip(rows, matrix)]
  return '\n'.join([
      f'# Study {plan.name}: cross-dataset generalisation', '',
      f'MPJPE in mm (lower is better) of every cell at the largest 3D budget ({steps} steps, '
      'rows) on every evaluation dataset (columns); bold: the cell\'s own 3D training dataset.',
      '', _markdown_table(['cell', *plan.columns], table)])


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib's object API with the Agg canvas: no pyplot, no display)

MODE_NAMES = {'2d': '2D-pretrained', 'none': '3D-only'}
MODE_LINES = {'2d': '-', 'none': '--'}
ACCURACY_LABEL = 'MPJPE on its own X (mm), lower is better'


def _subplots(count: int, width: float = 5.5, height: float = 4.2):
  from matplotlib.figure import Figure
  figure = Figure(figsize=(width * count, height), layout='constrained')
  return figure, figure.subplots(1, count, squeeze=False)[0]


MODE_COLORS = {'2d': 'C0', 'none': 'C3'}
MARKERS = 'o^sDvP*X'


def _markers(rows: list[dict]) -> dict[str, str]:
  backbones = list(dict.fromkeys(row['backbone'] for row in rows))
  return {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(backbones)}


def _mean_pose_line(ax, rows: list[dict]) -> None:
  """A dotted line at the MPJPE of predicting the training mean pose (the floor of usefulness)."""
  value = _mean(row['mpjpe_mean_pose'] for row in rows)
  if value is not None:
    ax.axhline(value, color='gray', linestyle=':', label='mean training pose')


def _series_label(row: dict, several_2d: bool) -> str:
  label = f'{row["backbone"]} {MODE_NAMES[row["pretraining"]]}'
  return label + (f' ({row["dataset_2d"]})' if several_2d and row['dataset_2d'] else '')


def plot_compute(rows: list[dict], datasets_3d, path: str) -> None:
  """MPJPE on own X against total training images (log x), one panel per X; a line joins the
  budgets of one backbone, 2D dataset and seed."""
  figure, axes = _subplots(len(datasets_3d))
  markers = _markers(rows)
  several_2d = len({row['dataset_2d'] for row in rows} - {''}) > 1
  for ax, dataset in zip(axes, datasets_3d):
    lines, labelled = collections.defaultdict(list), set()
    for row in rows:
      if row['dataset_3d'] == dataset and row['mpjpe'] is not None:
        lines[row['pretraining'], row['backbone'], row['dataset_2d'], row['seed']].append(row)
    for (pretraining, backbone, _, _), group in lines.items():
      group.sort(key=lambda row: row['steps'])
      label = _series_label(group[0], several_2d)
      ax.plot([row['images_total'] for row in group], [row['mpjpe'] for row in group],
              color=MODE_COLORS[pretraining], linestyle=MODE_LINES[pretraining],
              marker=markers[backbone], label=None if label in labelled else label)
      labelled.add(label)
    _mean_pose_line(ax, [row for row in rows if row['dataset_3d'] == dataset])
    ax.set_xscale('log')
    ax.set_xlabel('training images seen, 2D pre-training included (log scale)')
    ax.set_ylabel(ACCURACY_LABEL)
    ax.set_title(f'X = {dataset}')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize='small')
  figure.savefig(path, dpi=110)


def plot_backbone(rows: list[dict], datasets_3d, path: str) -> None:
  """MPJPE on own X against parameters at the largest 3D budget (mean over seeds), one panel per
  X, one series per pretraining mode (and 2D dataset)."""
  rows = largest_budget_rows(rows)
  figure, axes = _subplots(len(datasets_3d))
  several_2d = len({row['dataset_2d'] for row in rows} - {''}) > 1
  for ax, dataset in zip(axes, datasets_3d):
    series = collections.defaultdict(lambda: collections.defaultdict(list))
    for row in rows:
      if row['dataset_3d'] == dataset and row['mpjpe'] is not None:
        series[row['pretraining'], row['dataset_2d']][row['params'], row['backbone']].append(
            row['mpjpe'])
    for (pretraining, dataset_2d), points in series.items():
      points = sorted(points.items())
      params = [p for (p, _), _ in points]
      means = [float(np.mean(values)) for _, values in points]
      ax.plot(params, means, color=MODE_COLORS[pretraining], linestyle=MODE_LINES[pretraining],
              marker='o', label=_series_label({'backbone': '', 'pretraining': pretraining,
                                               'dataset_2d': dataset_2d}, several_2d).strip())
      for (p, backbone), mean in zip((key for key, _ in points), means):
        ax.annotate(backbone, (p, mean), textcoords='offset points', xytext=(4, 4),
                    fontsize='small')
    _mean_pose_line(ax, [row for row in rows if row['dataset_3d'] == dataset])
    ax.set_xscale('log')
    ax.set_xlabel('backbone size (parameters, log scale)')
    ax.set_ylabel(ACCURACY_LABEL)
    steps = rows[0]['steps'] if rows else 0
    ax.set_title(f'X = {dataset}, {steps} 3D steps')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize='small')
  figure.savefig(path, dpi=110)


def plot_generalisation(labels: list[str], columns, matrix: list[list], path: str) -> None:
  """The generalisation matrix as a heatmap with its values written in the cells."""
  from matplotlib.figure import Figure
  values = np.array([[np.nan if v is None else v for v in row] for row in matrix], float)
  values = values.reshape(len(labels), len(columns))
  label_width = 0.07 * max((len(label) for label in labels), default=10)
  figure = Figure(figsize=(label_width + 1.8 * len(columns) + 2, 1.5 + 0.45 * len(labels)),
                  layout='constrained')
  ax = figure.subplots()
  image = ax.imshow(values, cmap='YlOrRd', aspect='auto')
  finite = values[np.isfinite(values)]
  low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
  for (i, j), value in np.ndenumerate(values):
    if np.isfinite(value):
      dark = (value - low) / max(high - low, 1e-9) > 0.6
      ax.text(j, i, f'{value:.1f}', ha='center', va='center',
              color='white' if dark else 'black')
  ax.set_xticks(range(len(columns)), labels=list(columns), rotation=20, ha='right')
  ax.set_yticks(range(len(labels)), labels=labels)
  ax.set_xlabel('evaluated on')
  ax.set_title('MPJPE (mm) across datasets, lower is better')
  figure.colorbar(image, ax=ax, label='MPJPE (mm)')
  figure.savefig(path, dpi=110)

"""Running a study: its pending processes in dependency order, with progress lines, an ETA, time
records, and SIGTERM and SIGUSR2 (a cluster's pre-emption or time limit) passed on to the run in
progress, which saves; or only their commands; or (launcher) submitting them as cluster jobs
(slurm.py)."""

from __future__ import annotations

import collections
import dataclasses
import os
import shlex
import sys
import time
from typing import Callable

import numpy as np

from hpe_jax import progress
from hpe_jax.models import torch_import
from hpe_jax.study import cost
from hpe_jax.study import plan as plan_lib
from hpe_jax.study import processes
from hpe_jax.study import results
from hpe_jax.study import spec
from hpe_jax.study import status

CACHE_ENV = processes.CACHE_ENV


@dataclasses.dataclass(frozen=True)
class Process:
  """One process of a study: a run's training, or a cell's evaluation on `datasets`."""

  tag: str  # '[pretrain 1/2]', '[cell 3/16]'
  run: plan_lib.Run
  cell: plan_lib.Cell | None  # None: a pre-training run
  stage: str  # 'train' or 'eval'
  datasets: tuple[str, ...] = ()  # an evaluation's

  @property
  def key(self) -> tuple[str, str]:
    return self.run.workdir, self.stage

  @property
  def needs(self) -> tuple[str, str] | None:
    """The key of the process that must finish before this one starts: an evaluation's
    training, the training of the run a run starts from (a fine-tune's pre-training, a stage's
    previous stage)."""
    if self.stage == 'eval':
      return self.run.workdir, 'train'
    return (self.run.after, 'train') if self.run.after else None

  @property
  def label(self) -> str:
    """'[cell 1/2] resnet18 3d-only on X, seed 0, 200 steps: evaluating on A, B', for progress
    lines."""
    what = 'training' if self.stage == 'train' else 'evaluating on ' + ', '.join(self.datasets)
    return f'{self.tag} {self.run.description}: {what}'

  def command(self, python: str = 'python') -> list[str]:
    if self.stage == 'train':
      return self.run.train_command(python)
    return self.cell.eval_command(list(self.datasets), python)


def _processes(plan: plan_lib.Plan, *, pending_only: bool) -> list[Process]:
  """The study's processes in dependency order (pre-training first); with `pending_only`, those
  not finished, an evaluation on the datasets whose results are missing. Reads the study dir."""
  result = []
  count = len(plan.pretrains)
  for i, run in enumerate(plan.pretrains, 1):
    if not (pending_only and status.is_trained(run)):
      result.append(Process(f'[pretrain {i}/{count}]', run, None, 'train'))
  count = len(plan.cells)
  for i, cell in enumerate(plan.cells, 1):
    tag = f'[cell {i}/{count}]'
    for run in cell.stages:
      if not (pending_only and status.is_trained(run)):
        result.append(Process(tag, run, cell, 'train'))
    datasets = status.missing_evals(cell) if pending_only else list(cell.evals)
    if datasets:
      result.append(Process(tag, cell.run, cell, 'eval', tuple(datasets)))
  return result


def all_processes(plan: plan_lib.Plan) -> list[Process]:
  """Every process of the study, in dependency order."""
  return _processes(plan, pending_only=False)


def pending_processes(plan: plan_lib.Plan) -> list[Process]:
  """The processes not finished, in dependency order."""
  return _processes(plan, pending_only=True)


class Runner:
  """Runs a plan's pending processes with progress lines and per-run time records."""

  def __init__(self, plan: plan_lib.Plan, *, start: float, echo: bool, log):
    """`start`: time.perf_counter() at the start of the study's invocation."""
    self.plan, self.start, self.echo, self.log = plan, start, echo, log
    self.env = processes.subprocess_env(plan.study_dir)
    self.processes_run = 0
    self._device_kind = None
    # Seconds of finished runs by _key: the ETA's estimates.
    self.durations = collections.defaultdict(list)
    for run, done in self._items():
      if done:
        self._add_duration(run)

  def _items(self):
    """(run, finished) for every pre-training run and cell."""
    for run in self.plan.pretrains:
      yield run, status.is_trained(run)
    for cell in self.plan.cells:
      yield from ((run, status.is_trained(run)) for run in cell.earlier)
      yield cell.run, status.is_trained(cell.run) and not status.missing_evals(cell)

  @staticmethod
  def _key(run: plan_lib.Run) -> tuple:
    return run.num_steps, run.backbone, run.config_file

  def _add_duration(self, run: plan_lib.Run) -> None:
    record = processes.read_time(run.workdir)
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
        alike = [
          s
          for other, values in self.durations.items()
          if other[:length] == key[:length]
          for s in values
        ]
        if alike:
          total += float(np.mean(alike))
          break
    return progress.duration(total)

  def device_kind(self) -> str:
    """The runs' device kind, asked once (processes.probe_device_kind)."""
    if self._device_kind is None:
      self._device_kind = processes.probe_device_kind(self.env)
    return self._device_kind

  def progress(self, tag: str, message: str) -> None:
    self.log(
      f'{tag} {message} | elapsed {progress.duration(time.perf_counter() - self.start)} | '
      f'ETA {self._eta()}'
    )

  def process(self, run: plan_lib.Run, stage: str, command: list[str], tag: str) -> None:
    """Runs one process of a run (stage 'train' or 'eval'): processes.run_process."""
    try:
      processes.run_process(
        run.workdir,
        stage,
        command,
        tag,
        run.identity(),
        env=self.env,
        device_kind=self.device_kind(),
        echo=self.echo,
        log=self.log,
      )
    finally:
      self.processes_run += 1

  def train(self, run: plan_lib.Run, tag: str) -> None:
    step = processes.latest_step(run.workdir)
    self.progress(
      tag, f'{run.description}: ' + (f'resuming training at step {step}' if step else 'training')
    )
    self.process(run, 'train', run.train_command(sys.executable), tag)
    processes.check_trained(run.workdir, run.num_steps, tag)

  def run(self) -> None:
    status.check_identities(self.plan)
    count = len(self.plan.pretrains)
    for i, run in enumerate(self.plan.pretrains, 1):
      tag = f'[pretrain {i}/{count}]'
      if status.is_trained(run):
        self.log(f'{tag} {run.description}: skipped (trained)')
        continue
      started = time.perf_counter()
      self.train(run, tag)
      self._add_duration(run)
      self.log(f'{tag} done in {progress.duration(time.perf_counter() - started)}')
    count = len(self.plan.cells)
    for i, cell in enumerate(self.plan.cells, 1):
      tag = f'[cell {i}/{count}]'
      missing = status.missing_evals(cell)
      if status.is_trained(cell.run) and not missing:
        self.log(f'{tag} {cell.run.description}: skipped (trained and evaluated)')
        continue
      started = time.perf_counter()
      for run in cell.stages:
        if not status.is_trained(run):
          self.train(run, tag)
          if run is not cell.run:
            self._add_duration(run)
        else:
          self.log(f'{tag} {run.description}: trained')
      self.progress(tag, f'evaluating on {", ".join(missing)}')
      self.process(cell.run, 'eval', cell.eval_command(missing, sys.executable), tag)
      processes.check_evaluated(status.result_files(cell, missing), tag)
      self._add_duration(cell.run)
      self.log(f'{tag} done in {progress.duration(time.perf_counter() - started)}')


def check_start_weights(plan: plan_lib.Plan) -> None:
  """Raises StudyError if a run still to train starts from a weights file (model.init, the
  study's `imagenet`) that is not there, naming the command that makes it."""
  for run in plan.runs:
    path = dict(run.flags).get('model.init', '')
    if path and not os.path.isfile(path) and not status.is_trained(run):
      files = torch_import.TORCHVISION_IMAGENET_FILES.get(run.backbone, ('<file>.pth',) * 2)
      raise spec.StudyError(
        f'{run.description} starts from {path}, which is not there: make it once with '
        f"`hpe-import-weights imagenet {files[1]} {path}` (torchvision's file, "
        f'{torch_import.TORCHVISION_URL}{files[1]}; needs pip install -e ".[torch]")'
      )


def pending_commands(plan: plan_lib.Plan) -> list[str]:
  """The shell commands of every pending step, in dependency order (pre-training first), after
  the export of the compilation cache the study uses. Reads the study dir, writes nothing."""
  status.check_identities(plan)
  cache = processes.subprocess_env(plan.study_dir)[CACHE_ENV]
  return [f'export {CACHE_ENV}={shlex.quote(cache)}'] + [
    shlex.join(process.command()) for process in pending_processes(plan)
  ]


def run(
  flag: str,
  study_dir: str | None = None,
  *,
  data_dir: str = '',
  print_commands: bool = False,
  report_only: bool = False,
  echo: bool = True,
  log=print,
  launcher: Callable[[plan_lib.Plan, Callable], bool] | None = None,
  images_per_s: float | None = None,
) -> plan_lib.Plan:
  """Plans a study (config 'path[:arg]'), then prints its pending commands (building and writing
  nothing), or runs them and writes the report, or (report_only) writes the report from what is
  finished. `data_dir`: see plan.plan_study. `launcher` (plan, log) -> finished: submits the
  pending processes elsewhere instead of running them (slurm.Launcher); the report is written
  when it says the study has finished. The commands end with the plan's cost table
  (cost.plan_table at `images_per_s`) as shell comments."""
  start = time.perf_counter()
  plan = plan_lib.plan_study(flag, study_dir, data_dir=data_dir, plan_only=print_commands)
  if print_commands:  # the table as shell comments: the output stays a script
    table = ['', *cost.plan_table(plan, images_per_s)]
    for line in [*pending_commands(plan), *(f'# {line}'.rstrip() for line in table)]:
      log(line)
    return plan
  if not report_only:
    check_start_weights(plan)
  if launcher is not None and not report_only:
    if not launcher(plan, log):
      return plan
  elif not report_only:
    log(
      f'Study {plan.name} in {plan.study_dir}: {len(plan.cells)} cells, '
      f'{len(plan.pretrains)} pre-training runs.'
    )
    runner = Runner(plan, start=start, echo=echo, log=log)
    try:
      runner.run()
    finally:
      if runner.processes_run:  # invocations that only skip or report add nothing
        record = processes.read_time(plan.study_dir) or {'seconds': 0.0, 'invocations': 0}
        record['seconds'] += time.perf_counter() - start
        record['invocations'] += 1
        processes.write_json(os.path.join(plan.study_dir, processes.TIME_FILE), record)
    log(f'Study {plan.name} finished in {progress.duration(time.perf_counter() - start)}.')
  paths = results.write_report(plan)
  log('Report: ' + ', '.join(paths))
  return plan

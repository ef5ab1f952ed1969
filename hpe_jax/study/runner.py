"""Running a study: its pending processes in dependency order, with progress lines, an ETA, time
records, and SIGTERM passed on to the run in progress; or only their commands."""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from hpe_jax import progress
from hpe_jax.study import plan as plan_lib
from hpe_jax.study import results
from hpe_jax.study import spec
from hpe_jax.study import status

CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'


def subprocess_env(study_dir: str) -> dict[str, str]:
  """The runs' environment: unbuffered output (streamed live), and a persistent compilation cache
  in the study dir unless one is set (runs of the same shapes then skip most compilation)."""
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  env.setdefault(CACHE_ENV, os.path.abspath(os.path.join(study_dir, 'jax_cache')))
  return env


class Runner:
  """Runs a plan's pending processes with progress lines and per-run time records."""

  def __init__(self, plan: plan_lib.Plan, *, start: float, echo: bool, log):
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
      yield run, status.is_trained(run)
    for cell in self.plan.cells:
      yield cell.run, status.is_trained(cell.run) and not status.missing_evals(cell)

  @staticmethod
  def _key(run: plan_lib.Run) -> tuple:
    return run.num_steps, run.backbone, run.config_file

  def _add_duration(self, run: plan_lib.Run) -> None:
    record = status.read_time(run.workdir)
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
    """jax.devices()[0].device_kind of the runs, asked of a child process (this one stays off
    the accelerator, see status.latest_step)."""
    if self._device_kind is None:
      probe = subprocess.run(
        [sys.executable, '-c', 'import jax; print(jax.devices()[0].device_kind)'],
        capture_output=True,
        text=True,
        env=self.env,
        check=False,
      )
      lines = probe.stdout.strip().splitlines()
      self._device_kind = lines[-1] if probe.returncode == 0 and lines else 'unknown'
    return self._device_kind

  def progress(self, tag: str, message: str) -> None:
    self.log(
      f'{tag} {message} | elapsed {progress.duration(time.perf_counter() - self.start)} | '
      f'ETA {self._eta()}'
    )

  def process(self, run: plan_lib.Run, stage: str, command: list[str], tag: str) -> None:
    """Runs one process of a run (stage 'train' or 'eval'), streaming its output to
    <workdir>/study.log (and, with echo, to the log), and adds its wall time to the run's time
    record, also when interrupted."""
    os.makedirs(run.workdir, exist_ok=True)
    device_kind = self.device_kind()
    tail = collections.deque(maxlen=12)
    start = time.perf_counter()
    with open(os.path.join(run.workdir, status.LOG_FILE), 'a') as log_file:
      log_file.write(f'$ {shlex.join(command)}\n')
      log_file.flush()
      child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
      )
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
        record = status.read_time(run.workdir) or {'train_s': 0.0, 'eval_s': 0.0, 'processes': 0}
        record[f'{stage}_s'] += time.perf_counter() - start
        record['processes'] += 1
        record['device_kind'] = device_kind
        record['identity'] = run.identity()
        status.write_json(os.path.join(run.workdir, status.TIME_FILE), record)
    if child.returncode:
      why = (
        'was interrupted; run the study again to resume it'
        if child.returncode == 130
        else f'failed (exit {child.returncode})'
      )
      raise spec.StudyError(
        f'{tag} {shlex.join(command)}\n{why}. Its output is in '
        f'{os.path.join(run.workdir, status.LOG_FILE)}; the last lines:\n' + '\n'.join(tail)
      )

  def train(self, run: plan_lib.Run, tag: str) -> None:
    step = status.latest_step(run.workdir)
    self.progress(
      tag, f'{run.description}: ' + (f'resuming training at step {step}' if step else 'training')
    )
    self.process(run, 'train', run.train_command(sys.executable), tag)
    if not status.is_trained(run):
      log_path = os.path.join(run.workdir, status.LOG_FILE)
      raise spec.StudyError(
        f'{tag} {run.workdir} ended at step {status.latest_step(run.workdir)} '
        f'of {run.num_steps}; see {log_path}'
      )

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
      if not status.is_trained(cell.run):
        self.train(cell.run, tag)
      else:
        self.log(f'{tag} {cell.run.description}: trained')
      self.progress(tag, f'evaluating on {", ".join(missing)}')
      self.process(cell.run, 'eval', cell.eval_command(missing, sys.executable), tag)
      still_missing = status.missing_evals(cell)
      if still_missing:
        raise spec.StudyError(
          f'{tag} hpe_jax.evaluate wrote no results for {still_missing} in '
          f'{os.path.join(cell.run.workdir, "eval")}'
        )
      self._add_duration(cell.run)
      self.log(f'{tag} done in {progress.duration(time.perf_counter() - started)}')


def pending_commands(plan: plan_lib.Plan) -> list[str]:
  """The shell commands of every pending step, in dependency order (pre-training first), after
  the export of the compilation cache the study uses. Reads the study dir, writes nothing."""
  status.check_identities(plan)
  lines = [f'export {CACHE_ENV}={shlex.quote(subprocess_env(plan.study_dir)[CACHE_ENV])}']
  for run in plan.pretrains:
    if not status.is_trained(run):
      lines.append(shlex.join(run.train_command()))
  for cell in plan.cells:
    if not status.is_trained(cell.run):
      lines.append(shlex.join(cell.run.train_command()))
    missing = status.missing_evals(cell)
    if missing:
      lines.append(shlex.join(cell.eval_command(missing)))
  return lines


def run(
  flag: str,
  study_dir: str | None = None,
  *,
  data_dir: str = '',
  print_commands: bool = False,
  report_only: bool = False,
  echo: bool = True,
  log=print,
) -> plan_lib.Plan:
  """Plans a study (config 'path[:arg]'), then prints its pending commands (building and writing
  nothing), or runs them and writes the report, or (report_only) writes the report from what is
  finished. `data_dir`: see plan.plan_study."""
  start = time.perf_counter()
  plan = plan_lib.plan_study(flag, study_dir, data_dir=data_dir, plan_only=print_commands)
  if print_commands:
    for line in pending_commands(plan):
      log(line)
    return plan
  if not report_only:
    log(
      f'Study {plan.name} in {plan.study_dir}: {len(plan.cells)} cells, '
      f'{len(plan.pretrains)} pre-training runs.'
    )
    runner = Runner(plan, start=start, echo=echo, log=log)
    try:
      runner.run()
    finally:
      if runner.processes:  # invocations that only skip or report add nothing
        record = status.read_time(plan.study_dir) or {'seconds': 0.0, 'invocations': 0}
        record['seconds'] += time.perf_counter() - start
        record['invocations'] += 1
        status.write_json(os.path.join(plan.study_dir, status.TIME_FILE), record)
    log(f'Study {plan.name} finished in {progress.duration(time.perf_counter() - start)}.')
  paths = results.write_report(plan)
  log('Report: ' + ', '.join(paths))
  return plan

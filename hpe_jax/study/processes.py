"""One process of a study as it runs (a run's training or a cell's evaluation): its environment,
its log, its time record, the check of what it left, and the cluster job that runs it.

This module imports the standard library and submitit only: a cluster job unpickles its StudyJob
here and starts its command within a second, without loading JAX.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pickle
import shlex
import signal
import subprocess
import sys
import threading
import time

from submitit import helpers as submitit_helpers

from hpe_jax import errors
from hpe_jax import files

CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
TIME_FILE = 'study_time.json'  # in each run's workdir and in the study dir
LOG_FILE = 'study.log'  # each run's processes' output, appended
DEPENDENCY_POLL_S = 0.2


class ProcessError(errors.HpeError):
  """A process of a study failed or left less than it should; the message names its command and
  log, and says what to do."""


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


def read_time(directory: str) -> dict:
  """The time record of a run's workdir or of a study dir ({} if none).

  Raises:
    ProcessError: the record is damaged (hpe-study sets damaged records aside before it starts).
  """
  path = os.path.join(directory, TIME_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ProcessError(
        f'{path} is damaged (not JSON: {e}): run hpe-study again, which sets it aside and starts '
        'the record again'
      ) from None


def write_json(path: str, record: dict) -> None:
  """Writes whole or not at all: an interruption never leaves half a record."""
  files.write_text(path, json.dumps(record, indent=2))


def subprocess_env(study_dir: str) -> dict[str, str]:
  """The runs' environment: unbuffered output (streamed live), and a persistent compilation cache
  in the study dir unless one is set (runs of the same shapes then skip most compilation)."""
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  env.setdefault(CACHE_ENV, os.path.abspath(os.path.join(study_dir, 'jax_cache')))
  return env


def probe_device_kind(env: dict[str, str]) -> str:
  """jax.devices()[0].device_kind of the runs, asked of a child process (this one stays off the
  accelerator, see latest_step); 'unknown' if the child fails."""
  probe = subprocess.run(
    [sys.executable, '-c', 'import jax; print(jax.devices()[0].device_kind)'],
    capture_output=True,
    text=True,
    env=env,
    check=False,
  )
  lines = probe.stdout.strip().splitlines()
  return lines[-1] if probe.returncode == 0 and lines else 'unknown'


# Passed on to the run in progress: a scheduler's pre-emption or time limit (SIGTERM, and SIGUSR2,
# which Slurm sends ahead of them to jobs submitit submits, --signal=USR2@90). The run saves a
# checkpoint and exits 130.
PASSED_ON = (signal.SIGTERM, signal.SIGUSR2)


def run_process(
  workdir: str,
  stage: str,
  command: list[str],
  tag: str,
  identity: dict,
  *,
  env: dict[str, str],
  device_kind: str,
  echo: bool,
  log,
) -> None:
  """Runs one process of a run (stage 'train' or 'eval'), streaming its output to
  <workdir>/study.log (and, with echo, to `log`), and adds its wall time to the run's time record,
  also when interrupted. The record takes `identity` (the run's flags) only once the run has a
  checkpoint: a process that failed before it saved one does not tie the workdir to its flags.

  SIGTERM and SIGUSR2 go on to the process (Ctrl-C reaches it directly, in the same process
  group). After a SIGUSR2, once the process has saved and ended unfinished, the Python handler
  this displaced runs (submitit's, which requeues the job). Raises ProcessError if the process
  fails."""
  os.makedirs(workdir, exist_ok=True)
  tail = collections.deque(maxlen=12)
  start = time.perf_counter()
  log_path = os.path.join(workdir, LOG_FILE)
  received = []
  with open(log_path, 'a') as log_file:
    log_file.write(f'$ {shlex.join(command)}\n')
    log_file.flush()
    child = subprocess.Popen(
      command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )

    def pass_on(signum, _):
      received.append(signum)
      child.send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
      previous = {sig: signal.signal(sig, pass_on) for sig in PASSED_ON}
    try:
      for line in child.stdout:
        log_file.write(line)
        tail.append(line.rstrip('\n'))
        if echo:
          log('    ' + line.rstrip('\n'))
    finally:
      child.wait()
      for sig, handler in previous.items():
        signal.signal(sig, handler)
      record = read_time(workdir) or {'train_s': 0.0, 'eval_s': 0.0, 'processes': 0}
      record[f'{stage}_s'] += time.perf_counter() - start
      record['processes'] += 1
      record['device_kind'] = device_kind
      if latest_step(workdir):
        record['identity'] = identity
      else:
        record.pop('identity', None)
      write_json(os.path.join(workdir, TIME_FILE), record)
  displaced = previous.get(signal.SIGUSR2)
  if signal.SIGUSR2 in received and child.returncode and callable(displaced):
    displaced(signal.SIGUSR2, None)
  if child.returncode:
    why = (
      'was interrupted; run the study again to resume it'
      if child.returncode == 130
      else f'failed (exit {child.returncode})'
    )
    raise ProcessError(
      f'{tag} {shlex.join(command)}\n{why}. Its output is in {log_path}; the last lines:\n'
      + '\n'.join(tail)
    )


def check_trained(workdir: str, num_steps: int, tag: str) -> None:
  """Raises ProcessError unless a training left its checkpoint of step `num_steps`."""
  step = latest_step(workdir)
  if step < num_steps:
    raise ProcessError(
      f'{tag} {workdir} ended at step {step} of {num_steps}; see {os.path.join(workdir, LOG_FILE)}'
    )


def check_evaluated(results: dict[str, str], tag: str) -> None:
  """Raises ProcessError unless an evaluation wrote every result file ({dataset: path})."""
  missing = [name for name, path in results.items() if not os.path.isfile(path)]
  if missing:
    directory = os.path.dirname(next(iter(results.values())))
    raise ProcessError(f'{tag} hpe-evaluate wrote no results for {missing} in {directory}')


def wait_for_jobs(result_files: tuple[str, ...]) -> None:
  """Waits until every job whose submitit result file is given has ended; raises ProcessError
  if one failed (as Slurm's afterok then cancels the jobs that depend on it)."""
  for path in result_files:
    while not os.path.isfile(path):
      time.sleep(DEPENDENCY_POLL_S)
    with open(path, 'rb') as f:
      outcome, _ = pickle.load(f)
    if outcome != 'success':
      log_path = path[: -len('result.pkl')] + 'log.err'
      raise ProcessError(f'the job this one depends on failed; see {log_path}')


@dataclasses.dataclass(frozen=True)
class StudyJob:
  """A cluster job's work: one process of a study, as the local runner runs it (same command,
  environment, log and time record), then the check of what it left.

  Plain data only: submitit pickles it, and the job unpickles it without importing the plan.
  """

  tag: str  # '[cell 3/16]', for messages
  workdir: str  # the run's
  stage: str  # 'train' or 'eval'
  command: tuple[str, ...]
  identity: dict  # the run's (plan.Run.identity), for its time record
  study_dir: str  # where the compilation cache is
  cwd: str  # where the study was launched: the plan's relative paths start there
  num_steps: int = 0  # a training's: the checkpoint step it must reach
  results: tuple[tuple[str, str], ...] = ()  # an evaluation's (dataset, result file) pairs
  # The result files of the jobs this one must wait for, where the scheduler does not (submitit's
  # local executor); Slurm starts it after them itself (afterok).
  after: tuple[str, ...] = ()

  def __call__(self) -> None:
    os.chdir(self.cwd)
    wait_for_jobs(self.after)
    env = subprocess_env(self.study_dir)
    run_process(
      self.workdir,
      self.stage,
      list(self.command),
      self.tag,
      self.identity,
      env=env,
      device_kind=probe_device_kind(env),
      echo=True,
      log=lambda line: print(line, flush=True),
    )
    if self.stage == 'train':
      check_trained(self.workdir, self.num_steps, self.tag)
    else:
      check_evaluated(dict(self.results), self.tag)

  def checkpoint(self) -> submitit_helpers.DelayedSubmission:
    """What submitit requeues when Slurm's SIGUSR2 says the job's time is up (as on a
    pre-emption): this same job, whose run resumes from the checkpoint it saved on that signal
    (run_process passes it on). Without it submitit would not requeue a job that timed out."""
    return submitit_helpers.DelayedSubmission(self)

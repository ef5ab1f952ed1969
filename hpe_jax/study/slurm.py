"""Running a study on a Slurm cluster: every pending process of its plan becomes a job submitted
through submitit, started by Slurm after the job it depends on (afterok): a fine-tune after its
pre-training, an evaluation after its training.

  hpe-study --study=configs/study_small.py --launcher=slurm --slurm_partition=gpu
      --slurm_time=120 --slurm_extra=account=abc   (one command line)

Each job runs the command the local runner would run (runner.Process.command, from the plan), in
the same environment, with the same log and time record (processes.StudyJob). The job ids go to
<study_dir>/slurm_jobs.json; running the command again skips finished processes, leaves those
whose job Slurm still holds (squeue) alone, and resubmits the others (a failed job, or one Slurm
no longer knows, whose process did not finish).
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import json
import os
import re
import signal
import subprocess
import sys
from typing import Callable

import submitit
from submitit.core import utils as submitit_utils

from hpe_jax.study import plan as plan_lib
from hpe_jax.study import processes
from hpe_jax.study import runner
from hpe_jax.study import slurm_options
from hpe_jax.study import status

JOBS_FILE = 'slurm_jobs.json'  # in the study dir: {process: its latest job}
# Job states in which squeue may still list a job (for a few minutes) that has ended.
ENDED_STATES = frozenset(
  {
    'BOOT_FAIL',
    'CANCELLED',
    'COMPLETED',
    'DEADLINE',
    'FAILED',
    'NODE_FAIL',
    'OUT_OF_MEMORY',
    'PREEMPTED',
    'REVOKED',
    'SPECIAL_EXIT',
    'TIMEOUT',
  }
)


def squeue_states(job_ids: list[str]) -> dict[str, str]:
  """{job id: 'STATE (reason)'} of those of the jobs that Slurm still holds (pending, running,
  ...), from squeue. Raises SlurmError if squeue fails: with unknown states, resubmitting could
  run a process twice."""
  try:
    result = subprocess.run(
      ['squeue', '--noheader', '--format=%i|%T|%r', f'--user={getpass.getuser()}'],
      capture_output=True,
      text=True,
      check=False,
    )
  except FileNotFoundError as e:
    raise slurm_options.SlurmError(
      'squeue is not on PATH: run the study on a Slurm login node'
    ) from e
  if result.returncode:
    why = (result.stderr.strip().splitlines() or [f'exit {result.returncode}'])[-1]
    raise slurm_options.SlurmError(
      f'squeue failed ({why}), so which jobs of the study are still queued is unknown; nothing '
      'was submitted: run the command again when squeue works'
    )
  wanted, states = set(job_ids), {}
  for line in result.stdout.splitlines():
    job_id, _, rest = line.strip().partition('|')
    state, _, reason = rest.partition('|')
    if job_id in wanted and state.split(' ')[0] not in ENDED_STATES:
      states[job_id] = state + (f' ({reason})' if reason and reason != 'None' else '')
  return states


def _result_file(record: dict) -> str:
  return str(submitit_utils.JobPaths(record['folder'], record['job_id']).result_pickle)


def _error_log(record: dict) -> str:
  return str(submitit_utils.JobPaths(record['folder'], record['job_id']).stderr)


def local_states(records: list[dict]) -> dict[str, str]:
  """{job id: 'RUNNING'} of those of submitit's local executor's jobs (their id: the process id
  of their controller) that live and have left no result."""
  states = {}
  for record in records:
    if os.path.isfile(_result_file(record)):
      continue
    try:
      os.kill(int(record['job_id']), 0)
    except (ProcessLookupError, ValueError):
      continue
    states[record['job_id']] = 'RUNNING'
  return states


def _cancel(executor: submitit.Executor, record: dict) -> None:
  if isinstance(executor, submitit.SlurmExecutor):
    submitit.SlurmJob(record['folder'], record['job_id']).cancel(check=False)
  else:
    try:
      os.kill(int(record['job_id']), signal.SIGTERM)
    except ProcessLookupError:
      pass


def _job_name(plan: plan_lib.Plan, process: runner.Process) -> str:
  """'study_small-cell3-eval' ('study_paper-cell3-train2' for a recipe stage), as squeue shows
  it."""
  place = re.sub(r'\[(\w+) (\d+)/\d+\]', r'\1\2', process.tag)
  stage = process.run.recipe_stage if process.stage == 'train' else ''
  return f'{plan.name}-{place}-{process.stage}{stage}'


def _read_jobs(path: str) -> dict[str, dict]:
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


@dataclasses.dataclass(frozen=True)
class Launched:
  """What a launch did: the jobs it submitted, and how many it left queued from before."""

  jobs: tuple[submitit.Job, ...]
  queued: int

  @property
  def complete(self) -> bool:
    """Whether the study is finished: nothing was submitted and nothing is queued."""
    return not self.jobs and not self.queued


def _study_job(
  plan: plan_lib.Plan, process: runner.Process, command: list[str], after
) -> processes.StudyJob:
  """The work of a process's job; `after`: result files of jobs it must wait for itself."""
  return processes.StudyJob(
    tag=process.tag,
    workdir=process.run.workdir,
    stage=process.stage,
    command=tuple(command),
    identity=process.run.identity(),
    study_dir=plan.study_dir,
    cwd=os.getcwd(),
    num_steps=process.run.num_steps,
    results=tuple(status.result_files(process.cell, process.datasets).items())
    if process.stage == 'eval'
    else (),
    after=tuple(after),
  )


def launch(
  plan: plan_lib.Plan,
  executor: submitit.Executor,
  *,
  log=print,
  command: Callable[[runner.Process], list[str]] | None = None,
  queued: Callable[[list[dict]], dict[str, str]] | None = None,
) -> Launched:
  """Submits every pending process of `plan` that has no job queued, in dependency order, each
  after the pending process it needs; records the job ids in <study_dir>/slurm_jobs.json.

  Args:
    plan: the study's plan.
    executor: submitit.SlurmExecutor (slurm_options.make_executor; Slurm starts a job after the
      one it needs, afterok), or an executor whose jobs see this machine's files and ignore
      dependencies (submitit.LocalExecutor, for tests: a job then waits for the result file of
      the one it needs).
    log: takes one line per job and a summary.
    command: a process -> the command its job runs (default: what the local runner runs).
    queued: the records ({'job_id', 'folder', ...}) of earlier jobs -> {job id: state} of those
      still pending or running (default: squeue_states for Slurm, else local_states).

  Raises:
    StudyError: a run was made with other flags than the study gives it.
    SlurmError: squeue or sbatch failed (the jobs submitted before are recorded).
  """
  status.check_identities(plan)
  command = command or (lambda process: process.command(sys.executable))
  on_slurm = isinstance(executor, submitit.SlurmExecutor)
  if queued is None:
    queued = (lambda rs: squeue_states([r['job_id'] for r in rs])) if on_slurm else local_states
  jobs_path = os.path.join(plan.study_dir, JOBS_FILE)
  records = _read_jobs(jobs_path)
  pending = runner.pending_processes(plan)
  names = {p.key: f'{os.path.relpath(p.run.workdir, plan.study_dir)}:{p.stage}' for p in pending}
  earlier = [records[names[p.key]] for p in pending if names[p.key] in records]
  states = queued(earlier) if earlier else {}
  extra = dict(executor.parameters.get('additional_parameters') or {}) if on_slurm else {}
  current = {}  # key of a pending process -> the record of its job, queued or submitted now
  submitted = []  # jobs submitted now, and their processes' keys
  for process in pending:
    record = records.get(names[process.key])
    state = states.get(record['job_id']) if record else None
    dependency = current.get(process.needs)
    renewed = process.needs in {key for key, _ in submitted}
    if state and not renewed:
      log(f'{process.label}: job {record["job_id"]} is {state}; left queued')
      current[process.key] = record
      continue
    if state:  # its afterok names a job that ended unfinished: it would never start
      _cancel(executor, record)
      why = f'; cancelled job {record["job_id"]}, which waited for a job now resubmitted'
    else:
      why = f'; job {record["job_id"]} ended unfinished ({_error_log(record)})' if record else ''
    if on_slurm:
      sbatch = dict(extra)
      if dependency:
        sbatch.update(dependency=f'afterok:{dependency["job_id"]}', kill_on_invalid_dep='yes')
      executor.update_parameters(job_name=_job_name(plan, process), additional_parameters=sbatch)
    after = [_result_file(dependency)] if dependency and not on_slurm else []
    try:
      job = executor.submit(_study_job(plan, process, command(process), after))
    except submitit_utils.FailedJobError as e:
      lines = str(e).strip().splitlines() or ['(no message)']
      raise slurm_options.SlurmError(
        f'sbatch refused the job of {process.label}: {lines[-1]}; fix the --slurm_* flags'
      ) from e
    current[process.key] = records[names[process.key]] = {
      'job_id': str(job.job_id),
      'folder': str(executor.folder),
      'after': dependency['job_id'] if dependency else None,
      'submitted': datetime.datetime.now().isoformat(timespec='seconds'),
    }
    os.makedirs(plan.study_dir, exist_ok=True)
    processes.write_json(jobs_path, records)  # after each job: an interruption loses none
    submitted.append((process.key, job))
    after_text = f' after job {dependency["job_id"]}' if dependency else ''
    log(f'{process.label}: job {job.job_id}{after_text}{why}')
  every = len(runner.all_processes(plan))
  if not pending:
    log(f'Every process of study {plan.name} has finished ({every}).')
  else:
    log(
      f'Study {plan.name}: {len(submitted)} job(s) submitted, '
      f'{len(pending) - len(submitted)} left queued, {every - len(pending)} of {every} '
      f'processes finished before; job logs in {executor.folder}. Run this command again to '
      'resubmit what fails; --report_only writes the report of what has finished.'
    )
  return Launched(tuple(job for _, job in submitted), len(pending) - len(submitted))


@dataclasses.dataclass(frozen=True)
class Launcher:
  """runner.run's launcher for --launcher=slurm: the executor of `options` (its job logs in
  options.logs, or <study_dir>/slurm), then launch."""

  options: slurm_options.Options

  def __call__(self, plan: plan_lib.Plan, log) -> bool:
    """Submits the pending processes -> whether the study is complete (nothing left to run)."""
    folder = self.options.logs or os.path.join(plan.study_dir, 'slurm')
    return launch(plan, slurm_options.make_executor(folder, self.options), log=log).complete

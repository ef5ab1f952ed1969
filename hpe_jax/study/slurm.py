"""Running a study on a Slurm cluster: every pending process of its plan becomes a job submitted
through submitit, started by Slurm after the job it depends on (afterok): a fine-tune after its
pre-training, an evaluation after its training.

  hpe-study --study=configs/study_small.py --launcher=slurm --slurm_partition=gpu
      --slurm_time=120 --slurm_extra=account=abc   (one command line)

Each job runs the command the local runner would run (runner.Process.command, from the plan), in
the same environment, with the same log and time record (processes.StudyJob). The job ids go to
<study_dir>/slurm_jobs.json; running the command again skips finished processes, leaves those
whose job Slurm still holds (squeue) alone, and resubmits the others (a failed job, or one Slurm
no longer knows, whose process did not finish), saying why each ended (the last error line of
its log, or the job it waited for). A process whose jobs failed the same way twice is not
resubmitted unless asked (retry_failed); a pending job that squeue says will never start as
asked (its time over the partition's limit, ...) is named with the flag to change, and
cancelled and resubmitted once that flag has changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import getpass
import io
import json
import os
import pickle
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
# What a job of submitit's local executor (tests) says when the job it waits for failed
# (processes.wait_for_jobs): it did not run its process, as a Slurm job cancelled by afterok.
DEPENDENCY_FAILED = 'the job this one depends on failed'
# Lines of a job's log that say nothing of why it failed: srun's report of the exit code.
LOG_NOISE = re.compile(r'srun: (error: .*(Exited with exit code|Terminating)|Job step aborted)')
ERROR_WORDS = re.compile(
  r'error|exception|cancelled|killed|oom|failed \(exit|timed-out|time limit', re.IGNORECASE
)
REASON_CHARS = 300  # a reason longer than this is cut
# sbatch's complaints (lower case) -> the flag that asks for it; the first that matches.
SBATCH_COMPLAINTS = (
  ('generic resource', 'gpus'),
  ('gres', 'gpus'),
  ('time limit', 'time'),
  ('partition', 'partition'),
  ('account', 'account'),
  ('qos', 'qos'),
  ('memory', 'mem'),
  ('cpu count', 'cpus'),
  ('processor', 'cpus'),
  ('node configuration', 'node'),
)


class JobsFailedError(slurm_options.SlurmError):
  """A re-run found jobs of the study that failed or will never start; the lines before say which
  and why."""

  exit_code = 3


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


def _paths(record: dict) -> submitit_utils.JobPaths:
  return submitit_utils.JobPaths(record['folder'], record['job_id'])


def _result_file(record: dict) -> str:
  return str(_paths(record).result_pickle)


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
  try:
    with open(path) as f:
      records = json.load(f)
  except (OSError, ValueError) as e:
    records = e
  if not isinstance(records, dict):
    raise slurm_options.SlurmError(
      f"{path} is damaged ({records}): it lists the study's jobs. Cancel those squeue still "
      "lists (their names start with the study's name), delete the file, then run the "
      'command again'
    )
  return records


def error_line(text: str) -> str:
  """The line of a job's log or traceback that says why it failed: the last `error: ...` line
  (an hpe_jax command's own), else the last that speaks of an error, else the last line."""
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  lines = [line for line in lines if not LOG_NOISE.search(line)]
  found = [line for line in lines if line.startswith('error:')]
  found = found or [line for line in lines if ERROR_WORDS.search(line)] or lines
  return _cut(found[-1]) if found else ''


def _cut(line: str) -> str:
  return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + '...'


def _same_failure(a: str, b: str) -> bool:
  """Whether two reasons say the same, whatever job ids, times or steps they name."""
  return re.sub(r'\d+', '#', a) == re.sub(r'\d+', '#', b)


@dataclasses.dataclass(frozen=True)
class Ended:
  """How a job ended whose process did not finish."""

  # 'failed': it ran and failed; 'cut': a training that advanced before it ended (a time limit,
  # a pre-emption); 'not_run': it never ran (cancelled, as when the job it waited for failed);
  # 'finished': it succeeded, but what it wrote is gone.
  kind: str
  reason: str  # one line
  log: str  # the file that says why ('' if none)
  step: int = 0  # 'cut': the step the training reached


def _read_result(path: str) -> tuple[str | None, str]:
  """submitit's result file -> ('success' or 'error', the traceback of an error), (None, '') if
  there is none."""
  try:
    with open(path, 'rb') as f:
      outcome, value = pickle.load(f)
  except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError):
    return None, ''
  return outcome, value if isinstance(value, str) else ''


def _read_text(path: str) -> str | None:
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except OSError:
    return None


def how_it_ended(
  record: dict, records_by_id: dict[str, dict], process: runner.Process | None = None, depth=0
) -> Ended:
  """Why a job that Slurm no longer holds left its process unfinished, from its result file and
  its error log; for a job that never ran, from the job it waited for (its `after`), whose log
  is the one named. `process`: the job's, to tell a training that advanced."""
  paths = _paths(record)
  outcome, trace = _read_result(str(paths.result_pickle))
  log_text = _read_text(str(paths.stderr))
  if (outcome is None and log_text is None) or DEPENDENCY_FAILED in trace:
    after = record.get('after')
    if after and after in records_by_id and depth < 100:
      first = how_it_ended(records_by_id[after], records_by_id, depth=depth + 1)
      why = f'it never ran: job {after}, which it waited for, ended unfinished ({first.reason})'
      return Ended('not_run', why, first.log)
    return Ended('not_run', 'it never ran (cancelled before it started) and left no log', '')
  reason = error_line(trace) or error_line(log_text or '') or 'its log says no more'
  log = str(paths.stderr) if log_text is not None else str(paths.result_pickle)
  if process is not None and process.stage == 'train':
    step = processes.latest_step(process.run.workdir)
    if step > record.get('step', 0):
      return Ended('cut', reason, log, step)
  if outcome == 'success':
    return Ended('finished', 'it succeeded, but what it wrote is gone', log)
  return Ended('failed', reason, log)


def pending_reason_fix(state: str, requested: dict) -> str:
  """What to change for a job that squeue lists as pending for a reason that does not pass
  ('PENDING (PartitionTimeLimit)'): one sentence naming the flag; '' for a reason that passes
  (Priority, Resources, Dependency, ...). `requested`: the job's sbatch parameters."""
  found = re.search(r'\((\w+)\)$', state)
  if not state.startswith('PENDING') or not found:
    return ''
  reason = found.group(1)
  partition = requested.get('partition')
  partition = f'partition {partition}' if partition else "the cluster's default partition"
  if reason == 'PartitionTimeLimit' or reason.endswith('MaxWallDurationPerJobLimit'):
    return (
      f'--slurm_time={requested.get("time")} (minutes) is over the time limit of {partition} '
      "(`sinfo -o '%P %l'` lists each partition's): run the command again with a smaller "
      '--slurm_time, which cancels and resubmits it; a training cut short at its limit resumes '
      'from its checkpoint when the command is run again'
    )
  if reason in ('PartitionNodeLimit', 'PartitionConfig', 'BadConstraints'):
    return (
      f'no node of {partition} has what each job asks for: ask for less '
      '(--slurm_gpus_per_node, --slurm_cpus_per_task, --slurm_mem_gb) or another '
      "--slurm_partition (`sinfo -o '%P %G %c %m'` lists GPUs, CPUs and memory per node)"
    )
  if 'PerJob' in reason or reason.startswith('QOSMin'):
    return (
      f'each job asks for more than its QOS or account allows ({reason}): ask for less '
      '(--slurm_gpus_per_node, --slurm_cpus_per_task, --slurm_mem_gb, --slurm_time) or pass '
      'another --slurm_extra=qos=... (`sacctmgr show qos` lists the limits)'
    )
  if reason in ('InvalidAccount', 'InvalidQOS'):
    option = 'account' if reason == 'InvalidAccount' else 'qos'
    return (
      f'Slurm no longer accepts its {option}: pass another --slurm_extra={option}=... '
      '(`sacctmgr show assoc user=$USER` lists yours)'
    )
  return ''


def refusal_fix(text: str, requested: dict) -> str:
  """What to change for a submission sbatch refused with `text`: the flag and its value."""
  lowered, partition = text.lower(), requested.get('partition')
  where = f'partition {partition}' if partition else "the cluster's default partition"
  flag = next((flag for words, flag in SBATCH_COMPLAINTS if words in lowered), '')
  gpus = requested.get('gpus_per_node')
  if flag == 'gpus' and gpus:
    return (
      f'--slurm_gpus_per_node={gpus} (the default) asks each job for GPUs, which {where} does '
      'not have: pass --slurm_gpus_per_node=0 for a CPU partition, or name a GPU partition '
      "with --slurm_partition (`sinfo -o '%P %G'` lists each partition's GPUs)"
    )
  fixes = {
    'time': f'--slurm_time={requested.get("time")} (minutes) is over the time limit of {where}: '
    "pass a smaller --slurm_time (`sinfo -o '%P %l'` lists each partition's)",
    'partition': f'--slurm_partition={partition}: name one of the partitions `sinfo -s` lists',
    'account': 'pass --slurm_extra=account=... with one of your accounts '
    '(`sacctmgr show assoc user=$USER format=account,partition`)',
    'qos': 'pass --slurm_extra=qos=... with a QOS your account may use (`sacctmgr show qos`)',
    'mem': f'--slurm_mem_gb asks for more memory than a node of {where} has: pass less '
    "(`sinfo -o '%P %m'` lists it in MB)",
    'cpus': f'--slurm_cpus_per_task asks for more CPUs than a node of {where} has: pass fewer '
    "(`sinfo -o '%P %c'`)",
    'node': f'no node of {where} has what each job asks for: ask for less (--slurm_gpus_per_node, '
    "--slurm_cpus_per_task, --slurm_mem_gb) or another --slurm_partition (`sinfo -o '%P %G %c "
    "%m'`)",
  }
  return fixes.get(flag, 'fix the --slurm_* flags')


def _submission_leftovers(folder: str) -> set[str]:
  """submitit's temporary files of a submission in `folder` (the pickle and the sbatch script
  it renames once sbatch answers with a job id)."""
  if not os.path.isdir(folder):
    return set()
  pattern = re.compile(r'(\.submission_file_)?[0-9a-f]{32}\.(sh|pkl)')
  return {name for name in os.listdir(folder) if pattern.fullmatch(name)}


def _submit(executor: submitit.Executor, work, label: str, requested: dict) -> submitit.Job:
  """executor.submit(work); a refusal is a SlurmError that says sbatch's complaint once, with
  the flag to change, and leaves none of submitit's temporary files behind."""
  folder = str(executor.folder)
  before = _submission_leftovers(folder)
  try:
    with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's complaint too
      return executor.submit(work)
  except submitit_utils.FailedJobError as e:
    for name in _submission_leftovers(folder) - before:
      os.remove(os.path.join(folder, name))
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    text = error_line('\n'.join(lines)) or '(no message)'
    text = re.sub(r'^(sbatch: )?(error: )?(Batch job submission failed: )?', '', text)
    raise slurm_options.SlurmError(
      f'sbatch refused the job of {label}: {text}; {refusal_fix(text, requested)}'
    ) from e


@dataclasses.dataclass(frozen=True)
class Launched:
  """What a launch did: the jobs it submitted, how many it left queued from before, and (labels)
  the processes whose job failed (resubmitted), that failed the same way twice (not resubmitted,
  nor what needs them), and whose queued job will never start as asked."""

  jobs: tuple[submitit.Job, ...]
  queued: int
  failed: tuple[str, ...] = ()
  held: tuple[str, ...] = ()
  stuck: tuple[str, ...] = ()

  @property
  def complete(self) -> bool:
    """Whether the study is finished: nothing was submitted, queued or held back."""
    return not self.jobs and not self.queued and not self.held

  def problems(self) -> str:
    """'' if nothing failed, else what failed, in one sentence."""
    parts = []
    if self.failed:
      parts.append(f'{len(self.failed)} job(s) failed and were resubmitted')
    if self.held:
      parts.append(
        f'{len(self.held)} process(es) failed the same way twice and were not resubmitted: fix '
        'the cause, then run the command again with --retry_failed'
      )
    if self.stuck:
      parts.append(
        f'{len(self.stuck)} queued job(s) will never start as asked: change the flag named '
        'above and run the command again'
      )
    return '; '.join(parts)


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


def _requested(executor: submitit.Executor, extra: dict) -> dict:
  """The sbatch parameters every job of this launch asks for (not its name or dependency), as
  slurm_jobs.json records them: a queued job asked for other ones if they differ."""
  own = {
    k: v for k, v in executor.parameters.items() if k not in ('job_name', 'additional_parameters')
  }
  return json.loads(json.dumps({**own, **extra}, sort_keys=True))


def launch(
  plan: plan_lib.Plan,
  executor: submitit.Executor,
  *,
  log=print,
  command: Callable[[runner.Process], list[str]] | None = None,
  queued: Callable[[list[dict]], dict[str, str]] | None = None,
  retry_failed: bool = False,
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
    retry_failed: resubmit also the processes whose last two jobs failed the same way.

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
  by_id = {record['job_id']: record for record in records.values()}
  pending = runner.pending_processes(plan)
  labels = {p.key: p.label for p in pending}
  names = {p.key: f'{os.path.relpath(p.run.workdir, plan.study_dir)}:{p.stage}' for p in pending}
  earlier = [records[names[p.key]] for p in pending if names[p.key] in records]
  states = queued(earlier) if earlier else {}
  extra = dict(executor.parameters.get('additional_parameters') or {}) if on_slurm else {}
  requested = _requested(executor, extra) if on_slurm else {}
  current = {}  # key of a pending process -> the record of its job, queued or submitted now
  submitted = []  # jobs submitted now, and their processes' keys
  failed, held, stuck = [], [], []
  blocked = set()  # keys of the processes not submitted (held back, or needing one that is)
  left_queued = 0
  for process in pending:
    record = records.get(names[process.key])
    state = states.get(record['job_id']) if record else None
    dependency = current.get(process.needs)
    renewed = process.needs in {key for key, _ in submitted}
    failures = list(record.get('failures', ())) if record else []
    if process.needs in blocked:
      blocked.add(process.key)
      note = ''
      if state:  # its afterok names a failed job: it would never start
        _cancel(executor, record)
        note = f'; cancelled job {record["job_id"]}, which waited for it'
      log(f'{process.label}: not submitted: it needs {labels[process.needs]}, which failed{note}')
      continue
    fix = pending_reason_fix(state, requested) if state and on_slurm else ''
    if state and not renewed and fix and record.get('sbatch') == requested:
      log(f'{process.label}: job {record["job_id"]} is {state} and will never start: {fix}')
      stuck.append(process.label)
      current[process.key] = record
      left_queued += 1
      continue
    if state and not renewed and not fix:
      log(f'{process.label}: job {record["job_id"]} is {state}; left queued')
      current[process.key] = record
      left_queued += 1
      continue
    if state and not renewed:  # it will never start, and the flags have changed since
      _cancel(executor, record)
      why = f'; cancelled job {record["job_id"]}, {state} as the earlier --slurm_* flags asked'
    elif state:  # its afterok names a job that ended unfinished: it would never start
      _cancel(executor, record)
      why = f'; cancelled job {record["job_id"]}, which waited for a job now resubmitted'
    elif record:
      ended = how_it_ended(record, by_id, process)
      see = f' (log: {ended.log})' if ended.log else ''
      if ended.kind == 'failed':
        if failures and _same_failure(failures[-1], ended.reason) and not retry_failed:
          log(
            f'{process.label}: not resubmitted: job {record["job_id"]} failed as the one before '
            f'it did: {ended.reason}{see}; fix the cause, then run the command again with '
            '--retry_failed'
          )
          held.append(process.label)
          blocked.add(process.key)
          continue
        failures.append(ended.reason)
        failed.append(process.label)
      elif ended.kind == 'cut':
        failures = []
      why = f'; job {record["job_id"]} ended unfinished: {ended.reason}{see}'
      if ended.kind == 'cut':
        why += f'; it resumes from step {ended.step}'
    else:
      why = ''
    if on_slurm:
      sbatch = dict(extra)
      if dependency:
        sbatch.update(dependency=f'afterok:{dependency["job_id"]}', kill_on_invalid_dep='yes')
      executor.update_parameters(job_name=_job_name(plan, process), additional_parameters=sbatch)
    after = [_result_file(dependency)] if dependency and not on_slurm else []
    work = _study_job(plan, process, command(process), after)
    job = _submit(executor, work, process.label, requested)
    current[process.key] = records[names[process.key]] = {
      'job_id': str(job.job_id),
      'folder': str(executor.folder),
      'after': dependency['job_id'] if dependency else None,
      'submitted': datetime.datetime.now().isoformat(timespec='seconds'),
      'step': processes.latest_step(process.run.workdir) if process.stage == 'train' else 0,
      'sbatch': requested,
      'failures': failures,
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
    not_submitted = f', {len(blocked)} not submitted' if blocked else ''
    log(
      f'Study {plan.name}: {len(submitted)} job(s) submitted, {left_queued} left queued'
      f'{not_submitted}, {every - len(pending)} of {every} processes finished before; job logs '
      f'in {executor.folder}. Run this command again to resubmit what fails; --report_only '
      'writes the report of what has finished.'
    )
  return Launched(
    tuple(job for _, job in submitted), left_queued, tuple(failed), tuple(held), tuple(stuck)
  )


@dataclasses.dataclass(frozen=True)
class Launcher:
  """runner.run's launcher for --launcher=slurm: the executor of `options` (its job logs in
  options.logs, or <study_dir>/slurm), then launch."""

  options: slurm_options.Options
  retry_failed: bool = False

  def __call__(self, plan: plan_lib.Plan, log) -> bool:
    """Submits the pending processes -> whether the study is complete (nothing left to run).
    Raises JobsFailedError, after the lines that say why, if a job failed or will never
    start."""
    folder = self.options.logs or os.path.join(plan.study_dir, 'slurm')
    executor = slurm_options.make_executor(folder, self.options)
    launched = launch(plan, executor, log=log, retry_failed=self.retry_failed)
    if launched.problems():
      raise JobsFailedError(f'study {plan.name}: {launched.problems()}')
    return launched.complete

"""Faults of studies on Slurm (hpe_jax/study/slurm.py) and of their records (results.py): a failed
job's reason and log on a re-run, a process that fails the same way twice held back, sbatch's
refusals naming the flag, jobs that will never start, damaged results set aside.

No job runs: test_study.py's stand-ins for sbatch, squeue and scancel take the jobs, and each test
writes what a job would have left (its submitit log and result file, a checkpoint).

python -m pytest -q -n 0 tests/study/test_study_slurm_faults.py
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

from conftest import REPO
import pytest
from study_fakes import fake_slurm  # noqa: F401  (a fixture)
from study_fakes import sbatch_options
from study_fakes import study_source
from submitit.core import utils as submitit_utils

from hpe_jax import study
from hpe_jax.evaluation import trained_run
from hpe_jax.study import processes
from hpe_jax.study import results
from hpe_jax.study import runner
from hpe_jax.study import slurm
from hpe_jax.study import slurm_options
from hpe_jax.study import status

# What a job whose run refused a bad override leaves in its error log (and, as a traceback, in
# its result file): submitit's line, the traceback, the run's own error line, srun's exit line.
BAD_OVERRIDE = (
  'submitit ERROR (2024-05-01 10:00:00,000) - Submitted job triggered an exception\n'
  'Traceback (most recent call last):\n'
  '  File "processes.py", line 150, in run_process\n'
  'hpe_jax.study.processes.ProcessError: [cell 2/2] python -m hpe_jax.commands.train\n'
  'failed (exit 2). Its output is in study.log; the last lines:\n'
  "error: a --config.* override names no config field 'train.batch_sise'\n"
)
SRUN_EXIT = 'srun: error: node{}: task 0: Exited with exit code 1\n'


@pytest.fixture
def plan(tmp_path):
  """The tiny study's plan (5 processes: pre-training, fine-tune and its evaluation, 3D-only
  training and its evaluation), planned without building anything."""
  flag = tmp_path / 'tiny_study.py'
  flag.write_text(study_source(str(tmp_path / 'data')))
  return study.plan_study(str(flag), str(tmp_path / 'run'), plan_only=True)


def executor(tmp_path, **options):
  return slurm_options.make_executor(str(tmp_path / 'logs'), slurm_options.Options(**options))


def fail_job(tmp_path, job_id: int, log: str, *, error: bool = True) -> str:
  """Writes what job `job_id` left when it failed -> its error log's path."""
  paths = submitit_utils.JobPaths(tmp_path / 'logs', str(job_id))
  paths.stderr.write_text(log)
  if error:
    with open(paths.result_pickle, 'wb') as f:
      pickle.dump(('error', log), f)
  return str(paths.stderr)


def job_lines(lines: list[str]) -> dict[str, str]:
  """The per-process lines of a launch by the process's tag and stage ('[cell 2/2] train')."""
  found = {}
  for line in lines[:-1]:
    stage = 'eval' if ': evaluating on ' in line else 'train'
    found[f'{line.split("]")[0]}] {stage}'] = line
  return found


def test_a_rerun_says_why_a_job_failed_and_holds_back_a_repeat(fake_slurm, plan, tmp_path):
  launcher = slurm.Launcher(slurm_options.Options(logs=str(tmp_path / 'logs')))
  assert not launcher(plan, lambda line: None)  # jobs 101-105
  # The 3D-only training (104) failed on a bad override; Slurm cancelled its evaluation (105),
  # which left no log; the others are still queued.
  log_104 = fail_job(tmp_path, 104, BAD_OVERRIDE + SRUN_EXIT.format(1))
  (fake_slurm / 'queue').write_text(
    '101|RUNNING|None\n102|PENDING|Dependency\n103|PENDING|Dependency\n'
  )
  lines = []
  with pytest.raises(slurm.JobsFailedError) as failed:
    launcher(plan, lines.append)
  assert failed.value.exit_code == 3
  assert str(failed.value) == 'study tiny_study: 1 job(s) failed and were resubmitted'
  why = "error: a --config.* override names no config field 'train.batch_sise'"
  train, evaluate = job_lines(lines)['[cell 2/2] train'], job_lines(lines)['[cell 2/2] eval']
  assert train.endswith(f': job 106; job 104 ended unfinished: {why} (log: {log_104})')
  assert evaluate.startswith('[cell 2/2]') and ': job 107 after job 106; job 105 ended ' in evaluate
  assert f'job 104, which it waited for, ended unfinished ({why})' in evaluate
  assert evaluate.endswith(f'(log: {log_104})') and os.path.isfile(log_104)
  assert ', 3 left queued,' in lines[-1]

  # The new job fails the same way: neither it nor its evaluation is submitted again, each time.
  fail_job(tmp_path, 106, BAD_OVERRIDE + SRUN_EXIT.format(7))
  for _ in range(2):
    lines = []
    with pytest.raises(slurm.JobsFailedError, match='1 process.*failed the same way twice'):
      launcher(plan, lines.append)
    assert job_lines(lines)['[cell 2/2] train'].endswith(
      f'not resubmitted: job 106 failed as the one before it did: {why} (log: '
      f'{tmp_path / "logs" / "106_0_log.err"}); fix the cause, then run the command again with '
      '--retry_failed'
    )
    training = job_lines(lines)['[cell 2/2] train'].split(': not resubmitted')[0]
    assert job_lines(lines)['[cell 2/2] eval'].endswith(
      f': not submitted: it needs {training}, which failed'
    )
    assert ', 2 not submitted,' in lines[-1] and not (fake_slurm / 'job_108.sh').exists()
  with pytest.raises(slurm.JobsFailedError, match='^study tiny_study: 1 job'):
    slurm.Launcher(launcher.options, retry_failed=True)(plan, lines.append)
  assert (fake_slurm / 'job_108.sh').exists() and (fake_slurm / 'job_109.sh').exists()


def test_a_training_cut_short_resumes_and_is_no_failure(fake_slurm, plan, tmp_path):
  slurm.launch(plan, executor(tmp_path), log=lambda line: None)  # jobs 101-105
  time_limit = (
    'slurmstepd: error: *** JOB 101 ON node3 CANCELLED AT 2024-05-01T10:00:00 DUE TO TIME '
    'LIMIT ***\n'
  )
  fail_job(tmp_path, 101, time_limit, error=False)
  os.makedirs(os.path.join(plan.pretrains[0].workdir, 'checkpoints', '1'))  # of 2 steps
  lines = []
  launched = slurm.launch(plan, executor(tmp_path), log=lines.append)
  assert lines[0].endswith(
    f': job 106; job 101 ended unfinished: {time_limit.strip()} (log: '
    f'{tmp_path / "logs" / "101_0_log.err"}); it resumes from step 1'
  )
  assert len(launched.jobs) == 5 and not launched.problems()


def test_sbatch_refusals_name_the_flag_once_and_leave_no_files(fake_slurm, plan, tmp_path, capsys):
  (fake_slurm / 'refuse').write_text(
    'sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification\n'
  )
  with pytest.raises(slurm_options.SlurmError) as refused:
    slurm.launch(plan, executor(tmp_path, partition='cpu'), log=lambda line: None)
  assert str(refused.value) == (
    'sbatch refused the job of [pretrain 1/1] resnet18 on synthetic_humans/tiny, seed 0, 2 steps: '
    'training: Invalid generic resource (gres) specification; --slurm_gpus_per_node=1 (the '
    'default) asks each job for GPUs, which partition cpu does not have: pass '
    '--slurm_gpus_per_node=0 for a CPU partition, or name a GPU partition with --slurm_partition '
    "(`sinfo -o '%P %G'` lists each partition's GPUs)"
  )
  assert capsys.readouterr().err == ''  # said once: in the error, not also by submitit
  assert os.listdir(tmp_path / 'logs') == []  # submitit's pickle and sbatch script removed


def test_a_job_pending_past_the_time_limit_names_the_flag(fake_slurm, plan, tmp_path):
  slurm.launch(plan, executor(tmp_path, partition='cpu', time_min=4000), log=lambda line: None)
  (fake_slurm / 'queue').write_text(
    '101|PENDING|PartitionTimeLimit\n102|PENDING|Dependency\n103|PENDING|Dependency\n'
    '104|PENDING|PartitionTimeLimit\n105|PENDING|Dependency\n'
  )
  launcher = slurm.Launcher(
    slurm_options.Options(partition='cpu', time_min=4000, logs=str(tmp_path / 'logs'))
  )
  lines = []
  with pytest.raises(slurm.JobsFailedError, match='2 queued job.* will never start as asked'):
    launcher(plan, lines.append)
  assert lines[0].endswith(
    ': job 101 is PENDING (PartitionTimeLimit) and will never start: --slurm_time=4000 (minutes) '
    "is over the time limit of partition cpu (`sinfo -o '%P %l'` lists each partition's): run the "
    'command again with a smaller --slurm_time, which cancels and resubmits it; a training cut '
    'short at its limit resumes from its checkpoint when the command is run again'
  )
  assert lines[1].endswith('job 102 is PENDING (Dependency); left queued')
  assert not (fake_slurm / 'job_106.sh').exists()
  # With a smaller --slurm_time: cancelled and resubmitted, the dependent jobs after the new ones.
  lines = []
  launched = slurm.launch(plan, executor(tmp_path, partition='cpu', time_min=600), log=lines.append)
  assert lines[0].endswith(
    ': job 106; cancelled job 101, PENDING (PartitionTimeLimit) as the earlier --slurm_* flags '
    'asked'
  )
  assert len(launched.jobs) == 5 and not launched.problems()
  assert (fake_slurm / 'cancelled').read_text().split() == ['101', '102', '103', '104', '105']
  assert {sbatch_options(fake_slurm, i)['time'] for i in range(106, 111)} == {'600'}
  assert sbatch_options(fake_slurm, 107)['dependency'] == 'afterok:106'


def test_damaged_results_are_set_aside_and_redone(plan):
  cell = plan.cells[1]
  for run in (*plan.pretrains, *cell.stages):  # trained: only the evaluation may be pending
    os.makedirs(os.path.join(run.workdir, 'checkpoints', str(run.num_steps)))
  for dataset, path in status.result_files(cell, cell.evals).items():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      f.write('{"mpjpe": 12.5}' if dataset == cell.evals[0] else '{"mpjpe": 12')  # half written
  half_written = trained_run.result_path(cell.run.workdir, cell.evals[1])
  time_record = os.path.join(plan.study_dir, study.TIME_FILE)
  with open(time_record, 'w') as f:
    f.write('')
  assert [p.label for p in runner.pending_processes(plan) if p.cell is cell] == []  # as if done
  lines = []
  assert results.set_aside_damaged(plan, lines.append) == [time_record, half_written]
  assert lines == [
    f'{time_record} is damaged (not JSON, half written? Expecting value: line 1 column 1 (char '
    "0)): set aside as study_time.json.damaged; the study's time record starts again.",
    f"{half_written} is damaged (not JSON, half written? Expecting ',' delimiter: line 1 "
    f'column 13 (char 12)): set aside as {os.path.basename(half_written)}.damaged; the '
    f'evaluation on {cell.evals[1]} runs again.',
  ]
  assert os.path.isfile(half_written + '.damaged') and not os.path.exists(half_written)
  (redo,) = [p for p in runner.pending_processes(plan) if p.cell is cell]
  assert redo.stage == 'eval' and redo.datasets == (cell.evals[1],)
  assert processes.read_time(plan.study_dir) == {}
  assert results.set_aside_damaged(plan, lines.append) == []  # nothing more


@pytest.mark.slow
def test_print_commands_names_a_damaged_evaluation(tmp_path):
  """--print_commands (which writes nothing) names a damaged evaluation in one line, where it
  raised a JSONDecodeError (the other modes set it aside: set_aside_damaged above)."""
  flag = tmp_path / 'study.py'
  flag.write_text(study_source(str(tmp_path / 'data')))
  plan = study.plan_study(str(flag), str(tmp_path / 'run'), plan_only=True)
  path = trained_run.result_path(plan.cells[0].run.workdir, plan.cells[0].evals[0])
  os.makedirs(os.path.dirname(path))
  with open(path, 'w') as f:
    f.write('{"mpjpe": ')
  command = [sys.executable, '-m', 'hpe_jax.commands.study', f'--study={flag}']
  command.append(f'--study_dir={plan.study_dir}')
  printed = subprocess.run([*command, '--print_commands'], cwd=REPO, capture_output=True, text=True)
  assert printed.returncode == 2 and printed.stdout == '' and printed.stderr.count('\n') == 1
  assert printed.stderr.startswith(f'error: {path} is damaged (not JSON, half written?')
  assert os.path.isfile(path)

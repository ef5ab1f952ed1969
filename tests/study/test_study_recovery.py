"""A study after a fault: a failed process leaves its workdir free for a corrected config, and a
cluster's SIGUSR2 goes on to the run, after which submitit's handler requeues the job.

Stand-in processes (`python -c`), no training:
python -m pytest -q -n 0 tests/study/test_study_recovery.py
"""

from __future__ import annotations

import os
import signal
import sys

import pytest
from study_fakes import study_source

from hpe_jax import study
from hpe_jax.study import processes


def _study_config(path, data_dir, log_every: int) -> str:
  """A one-backbone, one-dataset study config (one pre-training, two cells) -> its --study flag."""
  path.write_text(study_source(str(data_dir), log_every, eval_datasets=()))
  return str(path)


def _run_process(workdir: str, code: str, identity: dict) -> None:
  """processes.run_process of a stand-in training `python -c code WORKDIR`, as the local runner
  and a cluster job run one."""
  processes.run_process(
    workdir,
    'train',
    [sys.executable, '-c', code, workdir],
    '[pretrain 1/1]',
    identity,
    env=dict(os.environ),
    device_kind='cpu',
    echo=False,
    log=print,
  )


def _commands(flag: str, study_dir: str) -> list[str]:
  """The training commands the study has pending (--print_commands, which checks the runs'
  identities first)."""
  lines = []
  study.run(flag, study_dir, print_commands=True, log=lines.append)
  return [line for line in lines if 'hpe_jax.commands.train ' in line]


def test_a_failed_run_does_not_block_its_corrected_config(tmp_path):
  first = _study_config(tmp_path / 'first.py', tmp_path / 'tfds', log_every=1)
  corrected = _study_config(tmp_path / 'corrected.py', tmp_path / 'tfds', log_every=2)
  study_dir = str(tmp_path / 'run')
  run = study.plan_study(first, study_dir, plan_only=True).pretrains[0]

  # The process fails before its first checkpoint: its time is recorded, its flags are not.
  with pytest.raises(study.ProcessError, match=r'failed \(exit 3\)'):
    _run_process(run.workdir, 'import sys; sys.exit(3)', run.identity())
  record = study.read_time(run.workdir)
  assert record['processes'] == 1 and 'identity' not in record
  assert len(_commands(corrected, study_dir)) == 3  # nothing refused, everything pending

  # A record with the flags but no checkpoint (what a failed process left before) holds nothing.
  processes.write_json(
    os.path.join(run.workdir, study.TIME_FILE), {**record, 'identity': run.identity()}
  )
  assert len(_commands(corrected, study_dir)) == 3

  # Once the process saved a checkpoint the run is made with those flags: the other config is
  # refused, and the record names them.
  saves = 'import os, sys; os.makedirs(os.path.join(sys.argv[1], "checkpoints", "1"))'
  with pytest.raises(study.ProcessError, match=r'failed \(exit 1\)'):
    _run_process(run.workdir, saves + '; sys.exit(1)', run.identity())
  assert study.read_time(run.workdir)['identity'] == run.identity()
  with pytest.raises(study.StudyError, match=f'{run.workdir} was made by another config'):
    _commands(corrected, study_dir)
  assert len(_commands(first, study_dir)) == 3


# A stand-in training that asks its parent (the study) for SIGUSR2, as Slurm sends it ahead of a
# time limit, then on receiving it saves a checkpoint and exits 130, as hpe_jax.main does.
_SAVES_ON_SIGUSR2 = """
import os, signal, sys, time
received = []
signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
time.sleep(0.1)  # the parent passes the signal on from just after it started this process
os.kill(os.getppid(), signal.SIGUSR2)
deadline = time.monotonic() + 30
while not received and time.monotonic() < deadline:
  time.sleep(0.01)
if not received:
  print('no SIGUSR2 came'); sys.exit(1)
os.makedirs(os.path.join(sys.argv[1], 'checkpoints', '7'))
print('saved at step 7'); sys.exit(130)
"""


def test_sigusr2_goes_on_to_the_run_then_to_submitits_handler(tmp_path):
  workdir = str(tmp_path / 'run')
  identity = {'config': 'c.py', 'flags': ['seed=0']}
  calls = []

  def requeue(signum, frame):  # submitit's handler in a job: requeues it, then exits
    calls.append((signum, processes.latest_step(workdir), study.read_time(workdir)['processes']))

  previous = signal.signal(signal.SIGUSR2, requeue)
  try:
    with pytest.raises(study.ProcessError, match='was interrupted; run the study again'):
      _run_process(workdir, _SAVES_ON_SIGUSR2, identity)
    assert signal.getsignal(signal.SIGUSR2) is requeue
  finally:
    signal.signal(signal.SIGUSR2, previous)
  # Called once, after the run had saved and its time was recorded.
  assert calls == [(signal.SIGUSR2, 7, 1)]
  with open(os.path.join(workdir, study.LOG_FILE)) as f:
    assert f.read().splitlines()[-1] == 'saved at step 7'
  assert study.read_time(workdir)['identity'] == identity

  # What submitit requeues on a time limit (it needs a checkpoint method): the same job.
  job = processes.StudyJob('[cell 1/1]', workdir, 'train', ('true',), identity, '.', '.')
  assert job.checkpoint().function == job


def test_a_damaged_time_record_read_by_the_library_is_one_line(tmp_path):
  """hpe-study sets damaged records aside first (test_study_slurm_faults.py); a caller of the
  library that reads one gets a typed line, not json's traceback."""
  (tmp_path / processes.TIME_FILE).write_text('{"train_s": 1.5, "ev')
  with pytest.raises(processes.ProcessError) as damaged:
    processes.read_time(str(tmp_path))
  message = str(damaged.value)
  assert '\n' not in message
  assert message.startswith(f'{tmp_path / processes.TIME_FILE} is damaged (not JSON: ')
  assert message.endswith('run hpe-study again, which sets it aside and starts the record again')

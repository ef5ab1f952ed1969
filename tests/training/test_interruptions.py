"""Interrupted training: a SIGKILL resumes with each step once and the same losses, SIGTERM and
SIGUSR2 save the current step."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from conftest import TESTS
from conftest import metrics_records
from conftest import tiny_config
from conftest import tiny_main_command
import pytest

from hpe_jax.storage import checkpoint
from hpe_jax.storage import workdir as workdir_lib
from hpe_jax.training import step as step_lib
from hpe_jax.training import train


@pytest.mark.slow  # three commands of 30 steps; test_sigkill_after_a_logged_step_... is its twin
def test_resume_after_sigkill_logs_each_step_once_with_the_same_losses(data_dir, tmp_path):
  args = (
    '--config.train.num_steps=30',
    '--config.train.checkpoint_every=5',
    '--config.train.lr_drop_steps=(15,)',
  )
  reference = tmp_path / 'uninterrupted'
  subprocess.run(tiny_main_command(reference, data_dir, *args), check=True, capture_output=True)
  expected = metrics_records(reference)

  interrupted = tmp_path / 'interrupted'
  process = subprocess.Popen(
    tiny_main_command(interrupted, data_dir, *args),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 120
  while not (interrupted / 'checkpoints' / '10').is_dir() and time.time() < deadline:
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL
  assert len(metrics_records(interrupted)) < 30, 'the run finished before it could be killed'
  resumed_from = checkpoint.manager(interrupted / 'checkpoints', read_only=True).latest_step()
  assert resumed_from >= 10

  subprocess.run(tiny_main_command(interrupted, data_dir, *args), check=True, capture_output=True)
  # Records logged after the checkpoint resumed from are dropped: each step appears once, with
  # the loss of the uninterrupted run (images_per_s and time aside, which measure the machine).
  untimed = lambda records: [
    {k: v for k, v in r.items() if k not in ('images_per_s', 'time')} for r in records
  ]
  assert untimed(metrics_records(interrupted)) == untimed(expected)


# A tiny run (`tiny_2d_run`'s config) that kills itself with SIGKILL once step 4 is logged and the
# checkpoint of step 3 is on disk. argv: data_dir, workdir, the tests' folder (conftest).
_KILLED_AFTER_STEP_4 = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, sys.argv[3])
    from conftest import tiny_config
    from hpe_jax.storage import workdir as workdir_lib
    from hpe_jax.training import train

    data_dir, workdir = sys.argv[1], sys.argv[2]
    write = workdir_lib.MetricsLog.write

    def write_then_die(self, record):
      written = write(self, record)
      if record['step'] == 4 and 'split' not in record:
        while not os.path.isdir(os.path.join(workdir, 'checkpoints', '3')):  # saved async
          time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
      return written

    workdir_lib.MetricsLog.write = write_then_die
    train.train_and_evaluate(tiny_config(data_dir), workdir)
""")


@pytest.mark.slow  # a training command, killed, then resumed (about 12 s)
def test_sigkill_after_a_logged_step_resumes_with_each_step_once_and_the_same_losses(
  tiny_2d_run, data_dir, tmp_path
):
  """The SIGKILL resume on `tiny_2d_run`'s 6 steps (the cheaper twin of the test above): killed with
  step 4 logged past the checkpoint of step 3, then resumed, the run logs what `tiny_2d_run` did."""
  interrupted = tmp_path / 'interrupted'
  process = subprocess.run(
    [
      sys.executable,
      '-c',
      _KILLED_AFTER_STEP_4,
      data_dir,
      str(interrupted),
      TESTS,
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
  assert [r['step'] for r in metrics_records(interrupted)] == [1, 2, 3, 4]
  assert checkpoint.manager(interrupted / 'checkpoints', read_only=True).latest_step() == 3

  train.train_and_evaluate(tiny_config(data_dir), str(interrupted))
  untimed = lambda records: [
    {k: v for k, v in r.items() if k not in ('images_per_s', 'time')} for r in records
  ]
  assert untimed(metrics_records(interrupted)) == untimed(metrics_records(tiny_2d_run))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_at_the_current_step(data_dir, tmp_path):
  workdir = tmp_path / 'preempted'
  args = ('--config.train.num_steps=500', '--config.train.checkpoint_every=1000')
  process = subprocess.Popen(
    tiny_main_command(workdir, data_dir, *args),
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
  )
  for line in process.stdout:  # the first logged step: training is under way
    if line.startswith('step 3/'):
      process.send_signal(signal.SIGTERM)
      break
  output = process.stdout.read()
  assert process.wait() == 130
  assert 'checkpoint saved. Run the same command to resume' in output
  last_logged = metrics_records(workdir)[-1]['step']
  saved = checkpoint.manager(workdir / 'checkpoints', read_only=True).latest_step()
  assert 3 <= saved == last_logged < 500


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGUSR2])
def test_a_stop_signal_sets_the_flag_and_the_handlers_come_back(sig):
  """The stop flag alone (no training): the fast check of what the two tests around it train."""
  previous = signal.signal(sig, signal.SIG_IGN)
  try:
    stop = train._StopRequest()
    os.kill(os.getpid(), sig)
    os.kill(os.getpid(), sig)  # Slurm's, then the study's: a second one only stops too
    assert stop.requested
    stop.restore()
    assert signal.getsignal(sig) == signal.SIG_IGN
  finally:
    signal.signal(sig, previous)


def _stopped_by_sigusr2(config, workdir: str) -> None:
  """Runs train_and_evaluate(config, workdir), which the test arranges to get SIGUSR2, and checks
  that the run took it: SystemExit(130), the signal not reaching the handler it displaced (a
  stand-in here: were it reached, nothing stopped and pytest lives on)."""
  unhandled = []
  previous = signal.signal(signal.SIGUSR2, lambda signum, frame: unhandled.append(signum))
  try:
    with pytest.raises(SystemExit) as stopped:
      train.train_and_evaluate(config, workdir)
  finally:
    signal.signal(signal.SIGUSR2, previous)
  assert stopped.value.code == 130 and not unhandled


@pytest.mark.slow  # two tiny trainings in process, ~10 s
def test_sigusr2_saves_the_current_step_and_the_rerun_has_the_same_losses(
  tiny_2d_run, data_dir, tmp_path, monkeypatch
):
  """Slurm's warning before a time limit or pre-emption (submitit's --signal=USR2@90), in
  process: SIGUSR2 once step 4 is logged saves step 4 (not a checkpoint_every step) and exits
  130; the re-run logs what the uninterrupted `tiny_2d_run` did."""
  unhandled = []  # the handler the run must displace: were SIGUSR2 to reach it, nothing stopped
  previous = signal.signal(signal.SIGUSR2, lambda signum, frame: unhandled.append(signum))
  write = workdir_lib.MetricsLog.write

  def write_then_signal(self, record):
    written = write(self, record)
    if record['step'] == 4 and 'split' not in record:
      os.kill(os.getpid(), signal.SIGUSR2)
    return written

  workdir = str(tmp_path / 'signalled')
  monkeypatch.setattr(workdir_lib.MetricsLog, 'write', write_then_signal)
  _stopped_by_sigusr2(tiny_config(data_dir), workdir)
  assert [r['step'] for r in metrics_records(workdir)] == [1, 2, 3, 4]
  assert checkpoint.manager(os.path.join(workdir, 'checkpoints'), read_only=True).latest_step() == 4

  monkeypatch.setattr(workdir_lib.MetricsLog, 'write', write)
  train.train_and_evaluate(tiny_config(data_dir), workdir)
  untimed = lambda records: [
    {k: v for k, v in r.items() if k not in ('images_per_s', 'time')} for r in records
  ]
  assert untimed(metrics_records(workdir)) == untimed(metrics_records(tiny_2d_run))


@pytest.mark.slow  # a tiny training in process, ~5 s
def test_sigusr2_while_the_steps_compile_stops_after_the_first_step_saved(
  data_dir, tmp_path, monkeypatch
):
  """A pre-emption before training is under way (data loading, compilation: minutes on a GPU
  node) does not kill the run: it stops after its first step, which it saves."""
  jit_steps = step_lib.jit_steps

  def signal_then_compile(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGUSR2)
    return jit_steps(*args, **kwargs)

  monkeypatch.setattr(step_lib, 'jit_steps', signal_then_compile)
  workdir = str(tmp_path / 'preempted')
  _stopped_by_sigusr2(tiny_config(data_dir), workdir)
  assert [r['step'] for r in metrics_records(workdir)] == [1]
  assert checkpoint.manager(os.path.join(workdir, 'checkpoints'), read_only=True).latest_step() == 1

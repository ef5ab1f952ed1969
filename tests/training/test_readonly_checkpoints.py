"""A workdir whose checkpoints/ cannot be written is refused at the start, in one line, before any
step is trained (it used to fail at the first save, after minutes of retries)."""

import os
import subprocess
import sys

from conftest import REPO
from conftest import tiny_main_command
import pytest

# Takes away root's power to write where permissions forbid it (for others a harmless no-op):
# prctl(PR_CAPBSET_DROP) of CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, then exec of the command.
_WITHOUT_PERMISSION_OVERRIDE = (
  'import ctypes, os, sys\nlibc = ctypes.CDLL(None)\n'
  'for capability in (1, 2):\n  libc.prctl(24, capability, 0, 0, 0)\n'
  'os.execv(sys.argv[1], sys.argv[1:])'
)


def _without_override(command: list[str], **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-c', _WITHOUT_PERMISSION_OVERRIDE, *command],
    capture_output=True,
    text=True,
    **kwargs,
  )


@pytest.mark.slow  # a command that loads jax
def test_a_read_only_checkpoint_dir_is_refused_at_the_start_in_one_line(tmp_path):
  workdir = tmp_path / 'run'
  checkpoints = workdir / 'checkpoints'
  os.makedirs(checkpoints)
  os.chmod(checkpoints, 0o555)
  try:
    probe = _without_override([sys.executable, '-c', f'open({str(checkpoints / "x")!r}, "w")'])
    if probe.returncode == 0:
      pytest.skip('cannot make a directory unwritable here: root kept its write permission')
    command = tiny_main_command(workdir, str(tmp_path / 'tfds'), '--config.train.num_steps=3')
    result = _without_override(command, cwd=REPO, timeout=120)
  finally:
    os.chmod(checkpoints, 0o755)
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
    f'error: cannot write in {checkpoints} (Permission denied), where the run saves its '
    'checkpoints: make it writable or choose another --workdir'
  )
  # Refused before the run wrote its config or trained a step.
  assert os.listdir(checkpoints) == [] and not (workdir / 'config.json').exists()

"""Files written whole or not at all (hpe_jax/files.py)."""

import errno
import os

import pytest

from hpe_jax import files


def test_a_write_replaces_the_file_whole(tmp_path):
  path = str(tmp_path / 'record.json')
  files.write_text(path, 'old')
  files.write_text(path, 'new')
  with open(path) as f:
    assert f.read() == 'new'
  assert os.listdir(tmp_path) == ['record.json']


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / 'record.json')
  files.write_text(path, 'old')

  def full_disk(temporary):
    with open(temporary, 'w') as f:
      f.write('half a rec')
    raise OSError(errno.ENOSPC, 'No space left on device')

  with pytest.raises(OSError, match='No space left'):
    files.replace_atomically(path, full_disk)
  with open(path) as f:
    assert f.read() == 'old'
  assert os.listdir(tmp_path) == ['record.json']

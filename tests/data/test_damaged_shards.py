"""A damaged dataset file is one line naming it and how to rebuild the dataset; a build prints
none of TFDS's download lines."""

from __future__ import annotations

import glob
import os
import shutil

from conftest import TINY_DATASET
from conftest import tiny_config
import pytest

from hpe_jax import default_config
from hpe_jax.data import datasets
from hpe_jax.data import pipeline


def test_build_prints_what_is_built_and_no_download(tmp_path, capsys):
  datasets.resolve(TINY_DATASET, '2d', str(tmp_path))
  out = capsys.readouterr().out
  assert 'Downloading and preparing' not in out
  assert 'downloaded and prepared' not in out
  lines = out.splitlines()
  assert lines[0] == f'Building {TINY_DATASET} in {tmp_path} (first use; it needs no download)...'
  assert lines[-1].startswith(f'Built {TINY_DATASET} in {tmp_path}/synthetic_humans/tiny/')


def _damaged_copy(data_dir: str, tmp_path, split: str, damage) -> tuple[str, str]:
  """A copy of the tiny dataset's `data_dir` whose `split` file `damage` changed -> (the copy,
  the damaged file)."""
  copy = str(tmp_path / 'tfds')
  shutil.copytree(data_dir, copy)
  [shard] = glob.glob(os.path.join(copy, 'synthetic_humans', 'tiny', '*', f'*-{split}.*'))
  with open(shard, 'rb') as f:
    data = bytearray(f.read())
  with open(shard, 'wb') as f:
    f.write(damage(data))
  return copy, shard


def _flip_middle(data: bytearray) -> bytes:
  middle = len(data) // 2
  data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
  return bytes(data)


def _assert_names(error: datasets.DatasetError, shard: str, copy: str) -> None:
  message = str(error)
  assert '\n' not in message
  assert message.startswith(f'{shard} cannot be read (example ')
  assert message.endswith(
    f'delete {os.path.dirname(shard)} and rebuild it: '
    f'hpe-build-dataset synthetic_humans --config=tiny --data_dir={copy}'
  )


def test_flipped_bytes_stop_training_with_the_file(data_dir, tmp_path):
  copy, shard = _damaged_copy(data_dir, tmp_path, 'train_2d', _flip_middle)
  batches = iter(pipeline.train_dataset(default_config.describe(tiny_config(copy))))
  with pytest.raises(datasets.DatasetError) as caught:
    for _ in range(64):  # 8 passes over the 64 examples: the damaged ones come up
      next(batches)
  _assert_names(caught.value, shard, copy)
  assert 'hash mismatch' in str(caught.value)


def test_shard_cut_in_half_stops_evaluation_with_the_file(data_dir, tmp_path):
  copy, shard = _damaged_copy(
    data_dir, tmp_path, 'test', lambda data: bytes(data[: len(data) // 2])
  )
  ref = datasets.resolve(TINY_DATASET, 'eval', copy)
  with pytest.raises(datasets.DatasetError) as caught:
    list(pipeline.eval_batches(ref, tiny_config(copy), batch_size=8))
  _assert_names(caught.value, shard, copy)

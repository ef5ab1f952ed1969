"""Readers of a run still training: the checkpoint they pick may be deleted before or while they
read it (train.keep_checkpoints); they read the newest remaining and say so in one line. And
--step=best refuses a checkpoint that is not the best by the run's own rule."""

from __future__ import annotations

import glob
import json
import os
import shutil

import grain
import numpy as np
import pytest

from hpe_jax.inference import loading
from hpe_jax.storage import checkpoint


@pytest.fixture
def run_copy(tiny_2d_run, tmp_path) -> str:
  """A copy of the tiny 2D run (checkpoints 3 and 6), which the test may delete from."""
  copy = str(tmp_path / 'run')
  shutil.copytree(tiny_2d_run, copy)
  return copy


def _delete_before_linking(monkeypatch, times: int) -> list[int]:
  """The first `times` holds find their step deleted, as a run still training deletes it between
  a reader's listing and its read. -> the steps deleted."""
  deleted = []
  link_tree = checkpoint._link_tree

  def deleting(source, target):
    if len(deleted) < times and os.path.basename(os.path.dirname(target)).startswith('.reading-'):
      deleted.append(int(os.path.basename(source)))
      shutil.rmtree(source)
    link_tree(source, target)

  monkeypatch.setattr(checkpoint, '_link_tree', deleting)
  return deleted


def test_newest_deleted_before_it_is_read_reads_the_next(run_copy, monkeypatch, capsys):
  deleted = _delete_before_linking(monkeypatch, times=1)
  _, record = loading.load_model(run_copy, None)
  assert deleted == [6] and record['step'] == 3
  [line] = capsys.readouterr().err.strip().splitlines()
  assert line == (
    f'warning: step 6 of {run_copy}/checkpoints was deleted as it was about to be read (its run '
    'is still training); reading step 3, the newest now'
  )
  assert not glob.glob(os.path.join(run_copy, '.reading-*'))  # the hold is released


def test_every_checkpoint_deleted_is_one_line(run_copy, monkeypatch):
  _delete_before_linking(monkeypatch, times=2)
  with pytest.raises(checkpoint.CheckpointError) as caught:
    loading.load_model(run_copy, None)
  assert str(caught.value).startswith(f"'{run_copy}' holds no checkpoint.")
  assert '\n' not in str(caught.value)


def test_numbered_step_deleted_is_one_line(run_copy, monkeypatch):
  _delete_before_linking(monkeypatch, times=1)
  with pytest.raises(checkpoint.StepGoneError) as caught:
    loading.load_model(run_copy, None, step=6)
  assert str(caught.value) == (
    f'step 6 of {run_copy}/checkpoints was deleted while it was being read (its run, still '
    'training, keeps only its newest checkpoints); it has [3] now: give one of them'
  )


def test_deleted_while_read_in_place_reads_the_next(run_copy, monkeypatch, capsys):
  """Where no hold can be made (no hard links), a checkpoint deleted mid-read is read again."""

  def no_links(source, target):
    raise PermissionError(1, 'Operation not permitted', source)

  monkeypatch.setattr(checkpoint, '_link_tree', no_links)
  graft = checkpoint._graft
  deleted = []

  def deleting_midway(directory, read_from, step, model_state):
    if not deleted:
      deleted.append(step)
      shutil.rmtree(os.path.join(directory, str(step)))
    return graft(directory, read_from, step, model_state)

  monkeypatch.setattr(checkpoint, '_graft', deleting_midway)
  _, record = loading.load_model(run_copy, None)
  assert deleted == [6] and record['step'] == 3
  [line] = capsys.readouterr().err.strip().splitlines()
  assert line == (
    f'warning: step 6 of {run_copy}/checkpoints was deleted while it was being read (its run is '
    'still training); reading the newest of [3]'
  )


def test_best_deleted_is_refused_not_replaced(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  best = ('mpjpe', 'min')
  mngr = checkpoint.manager(directory, keep=2, best=best)
  data_iterator = iter(grain.MapDataset.range(1).to_iter_dataset())
  evaluated = {2: 150.0, 4: 120.0, 6: 130.0}
  for step in range(1, 7):
    metrics = {'mpjpe': evaluated[step]} if step in evaluated else None
    checkpoint.save(mngr, step, {'model': {'w': np.zeros(2, np.float32)}}, data_iterator, metrics)
  mngr.wait_until_finished()
  mngr.close()
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    for step, value in evaluated.items():
      f.write(json.dumps({'step': step, 'split': 'x:test', 'mpjpe': value}) + '\n')
  assert checkpoint.find_checkpoint(str(tmp_path), 'best', best=best) == (directory, 4)
  shutil.rmtree(os.path.join(directory, '4'))  # by hand, or set aside as unreadable
  with pytest.raises(checkpoint.CheckpointError) as caught:
    checkpoint.find_checkpoint(str(tmp_path), 'best', best=best)
  assert str(caught.value) == (
    f'the best checkpoint of {directory} by train.keep_best=mpjpe:min, step 4 (mpjpe 120 in '
    'metrics.jsonl), is gone; the best of those left is step 6 (mpjpe 130): give --step=6 to '
    'use it'
  )

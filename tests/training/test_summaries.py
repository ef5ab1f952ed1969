"""TensorBoard event files beside metrics.jsonl, progress lines where a run was silent, and the
warning about evaluating on another dataset than the run trains on."""

import collections
import os
import shutil
import struct

from conftest import metrics_records
from conftest import tiny_config
import cv2
import numpy as np
import pytest

from hpe_jax import default_config
from hpe_jax.data import building
from hpe_jax.training import summaries
from hpe_jax.training import train

EVAL_PREFIX = 'eval/synthetic_humans_tiny_test/'  # data.eval of tiny_config


def _events(logdir: str) -> list:
  """Every event of the event files in `logdir`, file by file in name order (as TensorBoard reads
  them), from the record format: length (uint64), its masked CRC-32C, the Event proto, its
  masked CRC-32C; both checksums checked."""
  tbx = summaries._import_tensorboardx()
  crc = tbx.record_writer.masked_crc32c
  events = []
  for name in sorted(os.listdir(logdir)):
    with open(os.path.join(logdir, name), 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      header = data[offset : offset + 8]
      (length,) = struct.unpack('<Q', header)
      assert struct.unpack('<I', data[offset + 8 : offset + 12])[0] == crc(header)
      payload = data[offset + 12 : offset + 12 + length]
      assert struct.unpack('<I', data[offset + 12 + length : offset + 16 + length])[0] == crc(
        payload
      )
      events.append(tbx.proto.event_pb2.Event.FromString(payload))
      offset += 16 + length
  return events


def _shown(events: list) -> tuple[dict, dict]:
  """What TensorBoard shows: {tag: [(step, value, wall_time)]} of the scalars and {tag: [(step,
  PNG bytes)]} of the images, after its purge rule: a SessionLog START at step s drops the points
  read before it from step s on."""
  scalars, images = collections.defaultdict(list), collections.defaultdict(list)
  for event in events:
    if event.session_log.status == event.session_log.START:
      for series in (*scalars.values(), *images.values()):
        series[:] = [point for point in series if point[0] < event.step]
    for value in event.summary.value:
      if value.HasField('image'):
        images[value.tag].append((event.step, value.image.encoded_image_string))
      else:
        scalars[value.tag].append((event.step, value.simple_value, event.wall_time))
  return scalars, images


def _expected(records: list[dict]) -> dict:
  """{tag: [(step, value, time)]} of metrics.jsonl's records, as summaries tags them."""
  expected = collections.defaultdict(list)
  for record in records:
    prefix = EVAL_PREFIX if 'split' in record else 'train/'
    for name, value in summaries.scalars(record).items():
      expected[prefix + name].append((record['step'], value, record['time']))
  return expected


def _assert_same_points(shown: dict, expected: dict) -> None:
  assert sorted(shown) == sorted(expected)
  for tag, points in expected.items():
    assert [(s, t) for s, _, t in shown[tag]] == [(s, t) for s, _, t in points], tag
    values = [v for _, v, _ in shown[tag]]
    np.testing.assert_allclose(values, [v for _, v, _ in points], rtol=1e-6, err_msg=tag)


def test_a_run_writes_the_points_of_metrics_jsonl_and_prediction_pictures(tiny_depth_run):
  records = metrics_records(tiny_depth_run)
  times = [r['time'] for r in records]
  assert all(isinstance(t, float) for t in times) and times == sorted(times)
  scalars, images = _shown(_events(os.path.join(tiny_depth_run, summaries.LOG_DIR)))
  expected = _expected(records)
  # Every train number at steps 1..6 (images_per_s from step 2: step 1 includes compilation)
  # and every evaluation number at step 6.
  assert [s for s, _, _ in expected['train/depth_loss']] == [1, 2, 3, 4, 5, 6]
  assert [s for s, _, _ in expected['train/images_per_s']] == [2, 3, 4, 5, 6]
  assert [s for s, _, _ in expected[EVAL_PREFIX + 'mpjpe']] == [6]
  _assert_same_points(scalars, expected)
  ((step, png),) = images[EVAL_PREFIX + 'predictions']
  picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
  assert step == 6 and picture.shape == (64, summaries.NUM_OVERLAYS * 64, 3)


@pytest.mark.slow
def test_a_resumed_run_hides_the_points_past_its_checkpoint_and_logs_its_progress(
  tiny_depth_run, data_dir, tmp_path, capsys
):
  workdir = str(tmp_path / 'run')
  shutil.copytree(tiny_depth_run, workdir)
  # As if killed after logging step 6 but before its checkpoint: the run resumes from step 3.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '6'))
  before = metrics_records(workdir)
  train.train_and_evaluate(tiny_config(data_dir, depth=True, **{'train.num_steps': 4}), workdir)
  out = capsys.readouterr().out
  records = metrics_records(workdir)
  assert [r['step'] for r in records] == [1, 2, 3, 4, 4]
  assert records[:3] == before[:3]

  logdir = os.path.join(workdir, summaries.LOG_DIR)
  assert len(os.listdir(logdir)) == 2  # one file per start
  scalars, images = _shown(_events(logdir))
  _assert_same_points(scalars, _expected(records))  # steps 4..6 of the first start are hidden
  assert [step for step, _ in images[EVAL_PREFIX + 'predictions']] == [4]

  for line in (
    'Mean-pose baseline: reading 64 of the 64 labels of synthetic_humans/tiny:train_2d...',
    'Mean-pose baseline ready in ',
    'Compiling the train step...\nCompiled the train step in ',
    'Compiling the eval step...\nCompiled the eval step in ',
    'eval synthetic_humans/tiny:test: batch 4/4 | ',
  ):
    assert line in out
  assert out.count('Compiling') == 2  # once per step function
  # A progress line at most every scoring.LOG_SECONDS: a short evaluation prints only its last.
  assert out.count('eval synthetic_humans/tiny:test: batch') == 1


def test_scalars_are_the_finite_numbers_of_a_record():
  record = {
    'step': 3,
    'time': 1.5,
    'split': 'mpii:validation',
    'loss': float('nan'),
    'pck': 0.5,
    'num_examples': 10,
    'diverged': True,
    'per_action': {'walk': {'mpjpe': 1.0}},
  }
  assert summaries.scalars(record) == {'pck': 0.5, 'num_examples': 10.0}
  assert summaries.dataset_tag('synthetic_humans/tiny:test[:8]') == 'synthetic_humans_tiny_test_8_'


def test_a_disabled_log_writes_nothing(tmp_path):
  board = summaries.TensorBoardLog(str(tmp_path), enabled=False)
  board.write_train({'step': 1, 'time': 1.0, 'loss': 1.0})
  board.write_eval({'step': 1, 'time': 1.0, 'split': 'x:y', 'pck': 1.0}, np.zeros((4, 4, 3)))
  board.flush()
  board.close()
  assert not os.listdir(tmp_path)


def test_draw_predictions_puts_the_first_crops_side_by_side():
  images = np.zeros((6, 32, 32, 3), np.uint8)
  prediction = {'pred_xy': np.full((6, 16, 2), 16.0), 'pred_peak': np.ones((6, 16))}
  picture = summaries.draw_predictions(images, prediction)
  assert picture.shape == (32, 4 * 32, 3) and picture.dtype == np.uint8
  for crop in np.split(picture, 4, axis=1):  # each crop has its skeleton drawn at its centre
    assert crop[16, 16].any() and not crop[0, 0].any()


@pytest.mark.parametrize(
  'train_2d, train_3d, data_eval, suggestion',
  [
    ('mpii', '', None, 'mpii'),
    ('mpii', 'human36m:train', None, 'human36m'),  # a 3D source: the 3D metrics too
    ('synthetic_humans/tiny', '', None, ''),  # trains on the default eval dataset
    ('mpii', '', 'lsp_extended', ''),  # data.eval set: not the default
    ('mpii', '', '', ''),  # no evaluation
  ],
)
def test_eval_source_warning(train_2d, train_3d, data_eval, suggestion):
  config = default_config.base_config()
  config.data.train_2d, config.data.train_3d = train_2d, train_3d
  if data_eval is not None:
    config.data.eval = data_eval
  warning = train.eval_source_warning(default_config.describe(config))
  if not suggestion:
    assert warning == ''
  else:
    assert warning.startswith(f'Warning: training on {train_3d or train_2d}')
    assert 'evaluating on synthetic_humans (the default data.eval)' in warning
    assert f'set --config.data.eval={suggestion} to evaluate' in warning
    assert '\n' not in warning


def test_a_build_logs_each_split_with_its_count(tmp_path, monkeypatch):
  monkeypatch.setattr(building, 'PROGRESS_SECONDS', 0.0)  # pytest's output is no terminal
  lines = []
  building.build('synthetic_humans', config='tiny', data_dir=str(tmp_path), log=lines.append)
  assert lines[0] == 'synthetic_humans: listing the examples of each split...'
  assert lines[1].startswith('synthetic_humans: listed train_2d, train_3d, test in ')
  for split, count in (('train_2d', 64), ('train_3d', 64), ('test', 32)):
    assert any(line.startswith(f'{split}: {count} examples in ') for line in lines)
    assert f'{split}: 1 examples so far' in '\n'.join(lines)

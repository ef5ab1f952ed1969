"""hpe-predict's inputs: every one checked before the model loads and nothing created before, a
directory standing for its images, one rule and one message for every box, the low-confidence
warning agreeing with its numbers, and one writer per output directory."""

import json
import os

import cv2
import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax import locks
from hpe_jax.inference import boxes
from hpe_jax.inference import image_io
from hpe_jax.inference import inputs
from hpe_jax.inference import loading
from hpe_jax.inference import predict_run
from hpe_jax.inference import records
from hpe_jax.inference import visualize


def _image(path, width=64, height=48) -> str:
  cv2.imwrite(str(path), np.full((height, width, 3), 128, np.uint8))
  return str(path)


def _boxes_file(tmp_path, entries) -> str:
  path = tmp_path / 'boxes.json'
  path.write_text(json.dumps(entries))
  return str(path)


@pytest.fixture
def no_loading(monkeypatch):
  """Fails the test if the model is loaded."""

  def load_model(*args, **kwargs):
    pytest.fail('the model was loaded')

  monkeypatch.setattr(loading, 'load_model', load_model)


# --- 7: every input checked before the model loads; nothing created ---


@pytest.mark.parametrize(
  'kwargs, message',
  [
    (
      {'bbox': [(100, 10, 20, 20)]},
      'a.png: box 100,10,20,20 (--bbox) lies wholly outside the 64 x 48',
    ),
    ({'bbox': [(0, 0, 1e6, 10)]}, 'a.png: box 0,0,1e+06,10 (--bbox) is over 10 times the 64 x 48'),
    (
      {'boxes': [{'file_name': 'a.png', 'bbox': [100, 10, 20, 20]}]},
      'keeps no box for any image given: 1 lay wholly outside their image or were over 10 times',
    ),
    ({'boxes': {'file_name': 'a.png'}}, 'holds a JSON dict'),
  ],
  ids=['bbox-outside', 'bbox-too-large', 'boxes-all-outside', 'boxes-not-a-list'],
)
def test_bad_boxes_stop_the_run_before_loading_and_create_nothing(
  tmp_path, no_loading, kwargs, message
):
  image = _image(tmp_path / 'a.png')
  out_dir = tmp_path / 'out'
  boxes_file = _boxes_file(tmp_path, kwargs['boxes']) if 'boxes' in kwargs else None
  with pytest.raises(boxes.BoxError) as error:
    predict_run.predict(
      [image],
      workdir=str(tmp_path / 'run'),
      bbox=kwargs.get('bbox', ()),
      boxes_file=boxes_file,
      out_dir=str(out_dir),
    )
  assert message in str(error.value) and '\n' not in str(error.value), error.value
  assert isinstance(error.value, errors.HpeError)
  assert not out_dir.exists()


# --- 8: a directory is its images; files given by name are all images, or one error ---


def test_a_directory_stands_for_its_images_and_its_other_files_are_counted(tmp_path, capfd):
  folder = tmp_path / 'photos'
  (folder / 'sub').mkdir(parents=True)
  paths = [_image(folder / 'b.jpg'), _image(folder / 'a.png')]
  (folder / 'notes.txt').write_text('not an image')
  _image(folder / 'sub' / 'c.png')  # not predicted: subdirectories are not searched
  checked = inputs.check([str(folder)], str(tmp_path / 'out'))
  assert checked.images == sorted(paths) and list(checked.people) == sorted(paths)
  assert capfd.readouterr().err == (
    f'warning: {folder}: 1 file that is not an image skipped: notes.txt\n'
  )
  (folder / 'a.png').unlink()
  (folder / 'b.jpg').unlink()
  with pytest.raises(image_io.ImageError, match='is a directory with no image OpenCV reads'):
    inputs.check([str(folder)], str(tmp_path / 'out'))


def test_files_given_that_are_not_images_are_one_error_naming_all_before_loading(
  tmp_path, no_loading
):
  good = _image(tmp_path / 'a.png')
  text = tmp_path / 'notes.txt'
  text.write_text('not an image')
  missing = str(tmp_path / 'gone.jpg')
  with pytest.raises(image_io.ImageError) as error:
    predict_run.predict(
      [good, str(text), missing], workdir=str(tmp_path / 'run'), out_dir=str(tmp_path / 'out')
    )
  assert str(error.value) == (
    f'2 inputs cannot be predicted (no such file: {missing}; not an image OpenCV reads: {text}): '
    'leave them out, or give their directory (its images are predicted, its other files skipped)'
  )
  assert not (tmp_path / 'out').exists()


# --- 21: one rule and one message for every box ---


def test_boxes_dropped_for_their_category_say_so_not_lower_the_threshold(tmp_path):
  image = _image(tmp_path / 'a.png')
  path = _boxes_file(tmp_path, [{'file_name': 'a.png', 'bbox': [1, 1, 9, 9], 'category_id': 3}])
  with pytest.raises(boxes.BoxError) as error:
    inputs.check([image], str(tmp_path / 'out'), boxes_file=path)
  assert '1 had a "category_id" other than 1 (a person): give person boxes' in str(error.value)
  assert 'threshold' not in str(error.value)
  path = _boxes_file(tmp_path, [{'file_name': 'a.png', 'bbox': [1, 1, 9, 9], 'score': 0.1}])
  with pytest.raises(boxes.BoxError, match=r'1 scored below --box_threshold=0.5 \(lower it'):
    inputs.check([image], str(tmp_path / 'out'), boxes_file=path)


def test_a_huge_box_and_a_far_box_get_one_rule_and_short_numbers(tmp_path, capfd):
  image = _image(tmp_path / 'a.png')
  path = _boxes_file(
    tmp_path,
    [
      {'file_name': 'a.png', 'bbox': [0, 0, 1e308, 1e308]},  # covers the image: too large
      {'file_name': 'a.png', 'bbox': [0, 0, 1e6, 1e6]},  # the same
      {'file_name': 'a.png', 'bbox': [1e308, 0, 10, 10]},  # wholly outside
      {'file_name': 'a.png', 'bbox': [4, 4, 20, 30]},  # kept
    ],
  )
  checked = inputs.check([image], str(tmp_path / 'out'), boxes_file=path)
  assert [person.box for person in checked.people[image]] == [(4, 4, 20, 30)]
  too_large = 'is over 10 times the 64 x 48 image (a typo, or not pixels?): skipped'
  assert capfd.readouterr().err.splitlines() == [
    f'warning: {image}: box 0,0,1e+308,1e+308 (--boxes entry 0) {too_large}',
    f'warning: {image}: box 0,0,1e+06,1e+06 (--boxes entry 1) {too_large}',
    f'warning: {image}: box 1e+308,0,10,10 (--boxes entry 2) lies wholly outside the 64 x 48 '
    'image: skipped',
    f'warning: 3 boxes of --boxes={path} could not be used in their images and were skipped',
  ]
  assert boxes.outside_fraction((0, 0, 1e308, 1e308), (48, 64)) <= 1  # no overflow to nan


# --- 9: the low-confidence warning agrees with its own numbers ---


@pytest.mark.parametrize('best', [0.2999, 0.29, 0.1])
def test_the_low_confidence_warning_never_shows_the_threshold_as_its_best(best):
  warning = records.low_confidence_warning(np.array([0.0, best]))
  shown = float(warning.split('(best ')[1].split(')')[0])
  assert shown < visualize.MIN_CONFIDENT_SCORE and shown <= best
  assert records.low_confidence_warning(np.array([visualize.MIN_CONFIDENT_SCORE])) == ''


# --- 12: one output directory, one writer ---


def test_a_second_predict_into_a_held_out_dir_stops_before_loading(tmp_path, no_loading):
  image = _image(tmp_path / 'a.png')
  out_dir = tmp_path / 'out'
  out_dir.mkdir()
  with locks.exclusive_directory(str(out_dir)):
    with pytest.raises(image_io.ImageError) as error:
      predict_run.predict([image], workdir=str(tmp_path / 'run'), out_dir=str(out_dir))
  assert str(error.value) == (
    f'--out_dir={out_dir} is being written by another hpe-predict (PID {os.getpid()}): wait for '
    'it to end, or choose another --out_dir'
  )
  assert os.listdir(out_dir) == []


class _StubModel:
  """A PoseModel that puts every joint at the crop's centre (no jax: the lock is the point)."""

  image_size = 32

  def predict_inputs(self, batch):
    count = len(batch)
    return {'pred_xy': np.full((count, 16, 2), 16.0), 'pred_peak': np.full((count, 16), 0.9)}


def test_a_predict_holds_its_out_dir_from_creation_to_its_last_file(tmp_path, monkeypatch):
  run = {'workdir': 'stub', 'step': 1, 'depth': False}
  monkeypatch.setattr(loading, 'load_model', lambda *args, **kwargs: (_StubModel(), run))
  folder = tmp_path / 'photos'
  folder.mkdir()
  paths = [_image(folder / 'a.png'), _image(folder / 'b.png')]
  out_dir = str(tmp_path / 'out')  # created after loading, then held
  held = []

  def try_lock(result):
    try:
      with locks.exclusive_directory(out_dir):
        held.append(False)
    except locks.LockHeld as e:
      held.append(e.pid == str(os.getpid()))

  result = predict_run.predict(
    [str(folder)],
    workdir=str(tmp_path / 'run'),
    out_dir=out_dir,
    output_format='coco',
    on_image=try_lock,
    finish=try_lock,
  )
  assert [r['image'] for r in result['images']] == paths and held == [True, True, True]
  with locks.exclusive_directory(out_dir):  # released once done
    pass
  assert sorted(os.listdir(out_dir)) == sorted(
    ['keypoints_coco.json', 'keypoints_coco.names.json']
    + [f'{stem}{end}' for stem in 'ab' for end in ('.json', '_2d.png')]
  )

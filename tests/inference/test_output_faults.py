"""What predict's outputs and exported models do when something is wrong (issue 27): box outlines
on any background, a full disk while writing images and videos (the files left agree), many
people per image (the JSON first, the 3D figure capped), and damaged exported-model headers (one
line each). Faults are injected in-process: a writer that raises OSError(ENOSPC) after N frames or
N bytes, a header rewritten or a byte flipped.
"""

import errno
import json
import os
import zipfile

import av
import cv2
from matplotlib import figure
import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax import files
from hpe_jax import inference
from hpe_jax.inference import export_run
from hpe_jax.inference import exported
from hpe_jax.inference import image_io
from hpe_jax.inference import image_loop
from hpe_jax.inference import outputs
from hpe_jax.inference import video
from hpe_jax.inference import video_writer
from hpe_jax.inference import visualize

FRAMES = 12


@pytest.fixture(scope='module')
def model_file(tiny_depth_run, tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp('faults_export') / 'model.hpe')
  export_run.export(tiny_depth_run, path)
  return path


class _Model:
  """A PoseModel with depth whose network is a fixed pose: the writing under test, no jax."""

  image_size, has_depth, step = 64, True, 0

  def predict_inputs(self, inputs):
    count = len(inputs)
    xy = np.stack([np.linspace(10, 50, 16), np.linspace(5, 60, 16)], 1)
    return {
      'pred_xy': np.broadcast_to(xy, (count, 16, 2)),
      'pred_peak': np.full((count, 16), 0.9),
      'pred_depth': np.broadcast_to(np.linspace(-0.2, 0.2, 16), (count, 16)),
    }


@pytest.fixture
def model():
  return _Model()


def _one_line(error: BaseException, *words: str) -> str:
  message = str(error)
  assert isinstance(error, errors.HpeError) and '\n' not in message, message
  for word in words:
    assert word in message, message
  return message


def _enospc() -> OSError:
  return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# Item 10: the box outline shows on any image.


def test_the_box_outline_shows_on_white_and_on_black():
  person = {'box': [20.0, 20.0, 60.0, 40.0], 'joints_2d': np.full((16, 2), -100.0)}
  person['scores'] = np.ones(16)
  for background in (0, 255):
    image = np.full((100, 100, 3), background, np.uint8)
    drawn = visualize.draw_people(image, [person]).astype(int)
    # The top edge (y = 19.5) crossed at x = 50, and the left edge (x = 19.5) at y = 40.
    for pixels in (drawn[14:26, 50], drawn[40, 14:26]):
      assert np.abs(pixels - background).max() >= 100, (background, pixels[:, 0])
    assert (drawn[50, 50] == background).all()  # inside the box: untouched


# Item 13: a full disk while writing.


def _clip(directory) -> str:
  path = os.path.join(directory, 'clip.mp4')
  rng = np.random.default_rng(0)
  with video_writer.H264Writer(path, 12.5, 96, 64) as writer:
    for _ in range(FRAMES):
      writer.write(cv2.GaussianBlur(rng.integers(0, 256, (64, 96, 3), np.uint8), (9, 9), 3))
  return path


def _predict_video(model, directory) -> None:
  out_dir = os.path.join(directory, 'out')
  os.makedirs(out_dir, exist_ok=True)
  run = {'model': 'test', 'step': model.step, 'depth': model.has_depth}
  return video.predict_video(
    model,
    video.open_source(_clip(directory)),
    out_dir,
    run=run,
    batch_size=4,
    log=lambda line: None,
    warn=lambda line: None,
  )


def _files_left(directory) -> tuple[dict, list[dict], dict]:
  paths = video.output_paths(os.path.join(directory, 'out'), 'clip')
  with open(paths['json']) as f:
    header = json.load(f)
  with open(paths['jsonl']) as f:
    lines = [json.loads(line) for line in f]  # no torn line
  assert header['frames'] == len(lines)
  assert [line['frame'] for line in lines] == list(range(len(lines)))
  return header, lines, paths


class _FailingContainer:
  """An output container whose mux refuses packets (ENOSPC) once `packets` were written."""

  def __init__(self, container, packets: int):
    self.container, self.left = container, packets

  def mux(self, packets):
    if self.left <= 0:
      raise _enospc()
    self.left -= 1
    return self.container.mux(packets)

  def __getattr__(self, name):
    return getattr(self.container, name)


def test_a_full_disk_under_the_overlay_removes_it_and_the_header_agrees(
  model, tmp_path, monkeypatch
):
  real_open = av.open

  def failing_open(path, *args, **kwargs):
    container = real_open(path, *args, **kwargs)
    return _FailingContainer(container, 5) if str(path).endswith('_2d.mp4') else container

  _clip(tmp_path)  # written before the disk fills
  monkeypatch.setattr(video_writer.av, 'open', failing_open)
  with pytest.raises(video.VideoError) as error:
    _predict_video(model, tmp_path)
  header, lines, paths = _files_left(tmp_path)
  _one_line(error.value, paths['mp4'], 'No space left on device', 'removed')
  assert f'{len(lines)} frames done' in str(error.value)
  assert 5 <= len(lines) <= FRAMES  # the frames before the failure, as the .jsonl holds them
  assert not os.path.exists(paths['mp4'])
  assert header['overlay_file'] is None and header['error'] == str(error.value)


class _FullFile:
  """A binary file that takes `budget` bytes, then writes what fits and raises ENOSPC."""

  def __init__(self, file, budget: int):
    self.file, self.budget = file, budget

  def write(self, data) -> int:
    data = data.encode() if isinstance(data, str) else data  # json.dump's text, as bytes
    if len(data) > self.budget:
      self.file.write(data[: self.budget])  # a torn line, as a full disk leaves it
      self.file.flush()
      self.budget = 0
      raise _enospc()
    self.budget -= len(data)
    return self.file.write(data)

  def __getattr__(self, name):
    return getattr(self.file, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.file.close()


def test_a_full_disk_under_the_jsonl_cuts_it_to_whole_lines_that_the_header_and_overlay_count(
  model, tmp_path, monkeypatch
):
  def full_open(path, mode='r', *args, **kwargs):
    file = open(path, mode, *args, **kwargs)
    return _FullFile(file, 2500) if str(path).endswith('.jsonl') else file

  monkeypatch.setattr(video, 'open', full_open, raising=False)
  with pytest.raises(video.VideoError) as error:
    _predict_video(model, tmp_path)
  header, lines, paths = _files_left(tmp_path)
  _one_line(error.value, paths['jsonl'], 'No space left on device')
  assert 0 < len(lines) < FRAMES and header['error'] == str(error.value)
  with av.open(paths['mp4']) as container:  # finished, holding the frames of the lines
    assert sum(1 for _ in container.decode(video=0)) == len(lines)
  assert header['overlay_file'] == os.path.basename(paths['mp4'])


def test_a_full_disk_under_an_image_json_leaves_no_partial_file(tmp_path, monkeypatch):
  path = str(tmp_path / 'a.json')

  def full_open(name, mode='r', *args, **kwargs):
    return _FullFile(open(name, mode.replace('w', 'wb'), *args, **kwargs), 100)

  monkeypatch.setattr(files, 'open', full_open, raising=False)
  with pytest.raises(image_io.ImageError) as error:
    outputs.write_image_json(path, {'people': [{'joints_2d': [[1.0, 2.0]] * 16}] * 4})
  _one_line(error.value, path, 'No space left on device')
  assert not os.path.exists(path)


# Item 17: many people in one image.


def test_many_people_the_json_first_and_a_capped_3d_figure(model, tmp_path, monkeypatch, capsys):
  photo = str(tmp_path / 'crowd.png')
  cv2.imwrite(photo, np.random.default_rng(0).integers(0, 256, (120, 300, 3), np.uint8))
  people = [((10.0 * i, 10.0, 40.0, 80.0), 0.9, 'crowd.png', i) for i in range(10)]
  run = {'model': 'test', 'step': model.step, 'depth': True}
  sizes = []
  real_savefig = figure.Figure.savefig

  def savefig(fig, path, *args, **kwargs):
    sizes.append(fig.get_size_inches() * fig.dpi)
    return real_savefig(fig, path, *args, **kwargs)

  monkeypatch.setattr(figure.Figure, 'savefig', savefig)
  [result] = image_loop.predict_images(model, run, {photo: people}, str(tmp_path))
  with open(result['files']['json']) as f:
    assert len(json.load(f)['people']) == 10
  [(width, height)] = sizes
  rows = visualize.MAX_PEOPLE_3D // visualize.PAIRS_PER_ROW
  assert width <= 2000 and height <= 600 * rows
  shown = f'the first {visualize.MAX_PEOPLE_3D} of 10 people'
  assert f'{result["files"]["3d"]}: the 3D figure shows {shown}' in capsys.readouterr().err

  # The disk fills before the figure: the JSON, written first, holds every person.
  def full(fig, path, *args, **kwargs):
    with open(path, 'wb') as f:
      f.write(b'\x89PNG')  # a partial file
    raise _enospc()

  monkeypatch.setattr(figure.Figure, 'savefig', full)
  monkeypatch.setattr(visualize, 'MAX_PEOPLE_3D', 1)  # a cheap figure
  os.remove(result['files']['json'])
  with pytest.raises(image_io.ImageError) as error:
    image_loop.predict_images(model, run, {photo: people}, str(tmp_path))
  _one_line(error.value, result['files']['3d'], 'No space left on device')
  assert not os.path.exists(result['files']['3d'])
  with open(result['files']['json']) as f:
    assert len(json.load(f)['people']) == 10


# Item 18: exported-model headers checked against the module.


def _rewritten(model_file: str, path: str, edit) -> str:
  """A copy of `model_file` at `path` whose header is edit(header)."""
  with zipfile.ZipFile(model_file) as source, zipfile.ZipFile(path, 'w') as target:
    for item in source.infolist():
      data = source.read(item)
      if item.filename == exported.HEADER:
        header = json.loads(data)
        edit(header)
        data = json.dumps(header)
      target.writestr(item, data)
  return path


def _flipped_header_byte(model_file: str, path: str) -> str:
  """A copy with one byte of the (deflated) header's data flipped."""
  with zipfile.ZipFile(model_file) as archive:
    info = archive.getinfo(exported.HEADER)
  data = bytearray(open(model_file, 'rb').read())
  # The local header: 30 bytes, then the name and the extra field, then the data.
  name_length, extra_length = np.frombuffer(data[info.header_offset + 26 :][:4], '<u2')
  data[info.header_offset + 30 + name_length + extra_length + 10] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(data)
  return path


@pytest.mark.parametrize(
  ('damage', 'words'),
  [
    (lambda h: h.update(image_size=h['image_size'] * 2), ['"image_size"', 'takes 64 x 64']),
    (lambda h: h.pop('step'), ['lacks "step"']),
    (lambda h: h.update(weights=h['weights'][:-3]), ['"weights" lists', 'the module takes']),
    (lambda h: h.update(has_depth=False), ['"has_depth" is false', 'predicts depth']),
    (lambda h: h.update(num_joints='16'), ['"num_joints"', 'not a number']),
    (lambda h: h['weights'][0].update(shape=[1]), ['"weights"[0]']),
    (None, [exported.HEADER, 'does not read back']),
  ],
  ids=[
    'image_size',
    'no_step',
    'short_weights',
    'has_depth',
    'num_joints_type',
    'weight_shape',
    'flipped_byte',
  ],
)
def test_a_damaged_header_is_one_line(model_file, tmp_path, damage, words):
  path = str(tmp_path / 'damaged.hpe')
  if damage is None:
    _flipped_header_byte(model_file, path)
  else:
    _rewritten(model_file, path, damage)
  with pytest.raises(exported.ExportError) as error:
    inference.load_exported(path)
  _one_line(error.value, path, 'damaged', 'export the run again', *words)

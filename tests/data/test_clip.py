"""The demo clip: a readable video as asked, deterministic, people drawn where their labels say,
walking or squatting a given number of times, and the boxes file that `hpe-predict --boxes`
reads; and its command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

from hpe_jax import joints
from hpe_jax.data.synthetic import clip
from hpe_jax.inference import boxes as boxes_lib

# Tiny, so that the whole file runs in seconds.
SIZE = {'frames': 12, 'width': 160, 'height': 96, 'fps': 15.0, 'people': 2, 'seed': 3}
PELVIS = joints.MPII16.index('pelvis')
# Three squats at 30 fps, each the shortest a clip takes (clip.MIN_REP_SECONDS).
SQUATS = {'frames': 90, 'width': 64, 'height': 48, 'fps': 30.0, 'people': 2, 'seed': 5}
REPS = 3
# (hip, knee, ankle) of either leg.
LEGS = [[joints.MPII16.index(f'{side}_{j}') for j in ('hip', 'knee', 'ankle')] for side in 'rl']


def _decode(path: str) -> list[np.ndarray]:
  """Every frame of the video at path, (H, W, 3) uint8 RGB."""
  capture = cv2.VideoCapture(path)
  frames = []
  while (read := capture.read())[0]:
    frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
  capture.release()
  return frames


@pytest.fixture(scope='module')
def written(tmp_path_factory):
  """(video path, boxes path, write_clip's labels) of the tiny clip."""
  directory = tmp_path_factory.mktemp('clip')
  video, boxes = str(directory / 'walk.mp4'), str(directory / 'walk_boxes.json')
  return video, boxes, clip.write_clip(video, boxes_path=boxes, **SIZE)


def test_the_video_reads_back_as_asked(written):
  video, _, labels = written
  capture = cv2.VideoCapture(video)
  assert capture.isOpened()
  assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == SIZE['frames']
  assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) == SIZE['width']
  assert capture.get(cv2.CAP_PROP_FRAME_HEIGHT) == SIZE['height']
  assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(SIZE['fps'])
  capture.release()
  assert len(_decode(video)) == SIZE['frames']
  frames, people = SIZE['frames'], SIZE['people']
  assert labels['joints_2d'].shape == (frames, people, 16, 2)
  assert labels['joints_3d'].shape == (frames, people, 16, 3)
  assert labels['boxes'].shape == (frames, people, 4)
  assert labels['fps'] == SIZE['fps'] and labels['size'] == (SIZE['width'], SIZE['height'])


def test_the_video_is_h264_that_browsers_play(written):
  video, _, _ = written
  with av.open(video) as container:
    stream = container.streams.video[0]
    assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ('h264', 'yuv420p')
    shape = (stream.frames, stream.width, stream.height)
    assert shape == (SIZE['frames'], SIZE['width'], SIZE['height'])
    assert stream.average_rate == SIZE['fps']


def test_a_seed_fixes_the_clip(written, tmp_path):
  video, _, labels = written
  again = clip.write_clip(str(tmp_path / 'again.mp4'), **SIZE)
  for key in ('joints_2d', 'joints_3d', 'boxes', 'intrinsics'):
    np.testing.assert_array_equal(again[key], labels[key], err_msg=key)
  np.testing.assert_array_equal(_decode(str(tmp_path / 'again.mp4')), _decode(video))
  other = clip.write_clip(str(tmp_path / 'other.mp4'), **{**SIZE, 'seed': SIZE['seed'] + 1})
  for key in ('joints_2d', 'joints_3d', 'boxes'):
    assert not np.allclose(other[key], labels[key]), key


def test_boxes_hold_their_joints_and_the_file_holds_the_boxes(written):
  video, boxes_path, labels = written
  uv, boxes = labels['joints_2d'], labels['boxes']
  inside = np.all((uv >= 0) & (uv <= (SIZE['width'], SIZE['height'])), axis=-1)
  assert inside.mean() > 0.9  # people stay (mostly) in the frame
  low, high = boxes[..., None, :2], boxes[..., None, :2] + boxes[..., None, 2:]
  within = np.all((uv >= low - 1e-3) & (uv <= high + 1e-3), axis=-1)
  assert within[inside].all()
  assert (boxes[..., 2:] > 0).all()
  # Margins: a box is wider than its joints' extent where it is not clipped.
  assert (boxes[..., 2] >= np.ptp(uv[..., 0], axis=-1) - 1e-3).all()

  with open(boxes_path) as f:
    entries = json.load(f)
  assert len(entries) == SIZE['frames'] * SIZE['people']
  for entry in entries:
    assert set(entry) == {'frame', 'bbox', 'score', 'category_id'}
    assert isinstance(entry['frame'], int) and entry['score'] == 1.0
    assert entry['category_id'] == 1 and len(entry['bbox']) == 4
    assert all(round(v, 1) == v for v in entry['bbox'])
  from_file = np.array([e['bbox'] for e in entries]).reshape(boxes.shape)
  np.testing.assert_allclose(from_file, boxes, atol=0.05 + 1e-4)
  assert [e['frame'] for e in entries] == list(np.repeat(range(SIZE['frames']), SIZE['people']))
  # The predict command's reader takes the file: every frame of the video, every person.
  detections = boxes_lib.read_boxes(boxes_path, [], videos=[video])
  per_frame = detections.per_video[video]
  assert sorted(per_frame) == list(range(SIZE['frames']))
  assert all(len(people) == SIZE['people'] for people in per_frame.values())


def test_people_walk_sideways(written):
  video, _, labels = written
  seconds = (SIZE['frames'] - 1) / SIZE['fps']
  for person in range(SIZE['people']):
    # The camera only pitches: a walk along the world's x is one along the camera's.
    x_mm = labels['joints_3d'][:, person, PELVIS, 0]
    steps = np.diff(x_mm)
    assert (steps > 0).all() or (steps < 0).all(), x_mm
    speed = abs(x_mm[-1] - x_mm[0]) / seconds
    assert clip.WALK_SPEEDS_MM_S[0] - 1 <= speed <= clip.WALK_SPEEDS_MM_S[1] + 1
    x_px = labels['joints_2d'][:, person, PELVIS, 0]
    assert (np.sign(np.diff(x_px)) == np.sign(steps)).all(), x_px
    assert 3 < abs(x_px[-1] - x_px[0]) < SIZE['width']
  # At different depths, and so different sizes on screen.
  depths = labels['joints_3d'][0, :, PELVIS, 2]
  assert abs(depths[0] - depths[1]) > 200
  # A still scene decodes to identical frames: differences are movement.
  frames = np.array(_decode(video), np.float32)
  assert (np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3)) > 0.5).all()


def test_people_are_drawn_in_their_boxes(written):
  video, _, labels = written
  scene = clip.sample_scene(**SIZE)
  decoded = np.array(_decode(video), np.float32)
  first = scene.render(0)
  np.testing.assert_array_equal(first.joints_2d, labels['joints_2d'][0])
  # RGB written as BGR: the decoded frame is the rendered one, up to the codec's loss.
  assert np.abs(decoded[0] - first.image).mean() < 12  # swapped channels: ~50
  difference = np.abs(decoded - scene.background.astype(np.float32)).mean(axis=-1)
  covered = np.zeros(difference.shape, bool)
  for f, frame_boxes in enumerate(labels['boxes']):
    for x, y, w, h in np.round(frame_boxes).astype(int):
      assert difference[f, y : y + h, x : x + w].mean() > 12
      covered[f, y : y + h, x : x + w] = True
  # Away from the people the frame is the background, up to the codec's loss.
  assert difference[~covered].mean() < 8


def _knee_flexion(joints_3d: np.ndarray, hip: int, knee: int, ankle: int) -> np.ndarray:
  """Degrees between thigh and shin (0: a straight leg) in joints_3d (..., 16, 3)."""
  thigh = joints_3d[..., knee, :] - joints_3d[..., hip, :]
  shin = joints_3d[..., ankle, :] - joints_3d[..., knee, :]
  cosine = (thigh * shin).sum(-1) / np.linalg.norm(thigh, axis=-1) / np.linalg.norm(shin, axis=-1)
  return np.degrees(np.arccos(np.clip(cosine, -1, 1)))


def _bends(flexion: np.ndarray) -> int:
  """How many times flexion (frames,) goes from below 20 degrees to above 80."""
  count, down = 0, False
  for degrees in flexion:
    if not down and degrees > 80:
      count, down = count + 1, True
    elif down and degrees < 20:
      down = False
  return count


def test_people_squat_in_place_as_often_as_asked(tmp_path):
  labels = clip.write_clip(str(tmp_path / 'squat.mp4'), motion='squat', reps=REPS, **SQUATS)
  joints_3d = labels['joints_3d']
  for person in range(SQUATS['people']):
    for hip, knee, ankle in LEGS:
      flexion = _knee_flexion(joints_3d[:, person], hip, knee, ankle)
      assert flexion[0] < 20 and flexion[-1] < 20, flexion
      assert _bends(flexion) == REPS and flexion.max() < 115, flexion
      # The feet stay put: the body goes down and up above them.
      feet = joints_3d[:, person, ankle]
      assert np.abs(feet - feet[0]).max() < 3
  uv = labels['joints_2d']
  assert np.all((uv >= 0) & (uv <= (SQUATS['width'], SQUATS['height'])))


@pytest.mark.parametrize(
  'motion, match',
  [
    ({'reps': 3}, r"^reps=3: only squats are counted; ask for motion='squat'"),
    ({'motion': 'squat', 'reps': 0}, r'^reps=0: .* integer >= 1'),
    ({'motion': 'squat'}, r'^reps=None: a squat clip needs the number of squats'),
    ({'motion': 'squat', 'reps': 3, 'frames': 60}, r'^frames=60: too few .* frames >= 90 or'),
    ({'motion': 'jump'}, r"^motion='jump': expected one of walk, squat"),
  ],
)
def test_bad_motions_are_one_line_errors(tmp_path, motion, match):
  with pytest.raises(clip.ClipError, match=match) as error:
    clip.write_clip(str(tmp_path / 'squat.mp4'), **{'frames': 90, 'fps': 30.0, **motion})
  assert '\n' not in str(error.value)
  assert not os.listdir(tmp_path)


def test_bad_arguments_are_one_line_errors(tmp_path):
  with pytest.raises(clip.ClipError, match=r'\.mp4'):
    clip.write_clip(str(tmp_path / 'walk.avi'), frames=2, width=32, height=32)
  with pytest.raises(clip.ClipError, match='width=33'):
    clip.write_clip(str(tmp_path / 'walk.mp4'), frames=2, width=33, height=32)
  with pytest.raises(clip.ClipError, match='frames=0'):
    clip.write_clip(str(tmp_path / 'walk.mp4'), frames=0)
  assert not os.listdir(tmp_path)
  empty = clip.write_clip(str(tmp_path / 'empty.mp4'), frames=2, width=32, height=32, people=0)
  assert empty['boxes'].shape == (2, 0, 4)


def _command(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'hpe_jax.commands.make_clip', *flags],
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_the_command_writes_the_video_and_boxes(tmp_path):
  video, boxes = str(tmp_path / 'demo.mp4'), str(tmp_path / 'demo_boxes.json')
  result = _command(f'--out={video}', f'--boxes={boxes}', '--frames=4', '--width=64', '--height=48')
  assert result.returncode == 0, result.stderr[-3000:]
  assert video in result.stdout and boxes in result.stdout
  assert len(_decode(video)) == 4
  with open(boxes) as f:
    assert len(json.load(f)) == 4 * 2


# /sys: a directory no one may write in, root included.
def test_the_command_writes_squats(tmp_path):
  video = str(tmp_path / 'squat.mp4')
  flags = ('--motion=squat', '--reps=2', '--frames=16', '--fps=8', '--people=1')
  truth = tmp_path / 'squat_truth.jsonl'
  result = _command(f'--out={video}', *flags, '--width=64', '--height=48', f'--truth={truth}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert '1 person, 2 squats each' in result.stdout
  assert len(_decode(video)) == 16
  lines = [json.loads(line) for line in truth.read_text().splitlines()]
  assert [line['frame'] for line in lines] == list(range(16))
  person = lines[0]['people'][0]
  assert person['track'] == 0 and person['scores'] == [1.0] * 16
  assert person['joints_3d'][joints.PELVIS] == [0.0, 0.0, 0.0]  # pelvis-relative, as predicted
  header = json.loads((tmp_path / 'squat_truth.json').read_text())
  assert header['fps'] == 8.0 and header['image_size'] == {'width': 64, 'height': 48}


@pytest.mark.parametrize(
  'out', ['missing/demo.mp4', '/dev/full/demo.mp4', '/sys/demo.mp4', 'demo.avi']
)
def test_the_command_reports_a_bad_out_in_one_line(tmp_path, out):
  out = out if out.startswith('/') else str(tmp_path / out)
  result = _command(f'--out={out}', '--frames=2', '--width=32', '--height=32')
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and out in lines[0], result.stderr
  assert not os.path.exists(out)

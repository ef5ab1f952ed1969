"""Predicting on videos: one JSON line and one overlay frame per input frame, many people per frame
from a boxes file, tracks, smoothing, a live source, Ctrl-C, a full disk, and one-line errors.

The video pans across a real two-person MPII photo (../shared/realdata), so the two men move
through the frames; without realdata it is the synthetic clip of two walking people. The model is
the session's briefly trained tiny run: every property checked holds for any weights.
"""

from fractions import Fraction
import importlib.util
import json
import os
import signal
import subprocess
import sys

import av
from conftest import REPO
from conftest import RIGHT_MAN_BOX
from conftest import TWO_PEOPLE_PHOTO
from conftest import annotated_box
from conftest import realdata_dir
from conftest import tiny_config
import cv2
import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax import inference
from hpe_jax.data.synthetic import clip
from hpe_jax.inference import boxes
from hpe_jax.inference import tracking
from hpe_jax.inference import video
from hpe_jax.inference import video_writer

FRAMES = 20
FPS = 12.5
PAN_PX = 8  # photo pixels the window moves per frame
SCALE = 0.5  # photo -> video pixels


def _pan_video(directory: str) -> tuple[str, np.ndarray]:
  """A video of FRAMES frames and each frame's two person boxes (FRAMES, 2, 4), x, y, w, h."""
  path = os.path.join(directory, 'pan.mp4')
  realdata = realdata_dir()
  photo = os.path.join(realdata or '', 'mpii', 'images', TWO_PEOPLE_PHOTO)
  if not os.path.isfile(photo):
    result = clip.write_clip(path, frames=FRAMES, width=320, height=240, fps=FPS)
    return path, np.asarray(result['boxes'], np.float64)
  image = cv2.imread(photo)  # 854 x 480: the window is 640 x 480, halved
  people = np.array([annotated_box(realdata, TWO_PEOPLE_PHOTO), RIGHT_MAN_BOX])
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), FPS, (320, 240))
  frame_boxes = []
  for index in range(FRAMES):
    left = PAN_PX * index
    writer.write(cv2.resize(image[:, left : left + 640], (320, 240), interpolation=cv2.INTER_AREA))
    moved = people - [left, 0, 0, 0]
    frame_boxes.append(moved * SCALE)
  writer.release()
  return path, np.array(frame_boxes)


@pytest.fixture(scope='module')
def pan(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('video'))
  path, frame_boxes = _pan_video(directory)
  return {'dir': directory, 'video': path, 'boxes': frame_boxes}


def _read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


def _decoded(path: str) -> list[np.ndarray]:
  capture = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      return frames
    frames.append(frame)


@pytest.fixture(scope='module')
def boxes_run(pan, tiny_depth_run):
  """One CLI call on the video with a boxes file: both men in every frame but frame 5 (none),
  and in frame 3 a third box wholly outside the frame."""
  entries = []
  for frame, people in enumerate(pan['boxes']):
    if frame == 5:
      continue
    for score, box in zip((0.95, 0.9), people):
      entries.append({'frame': frame, 'file_name': 'pan.mp4', 'bbox': box.tolist(), 'score': score})
  entries.append({'frame': 3, 'bbox': [400, 10, 50, 50], 'score': 0.9})
  boxes_file = os.path.join(pan['dir'], 'frames.json')
  with open(boxes_file, 'w') as f:
    json.dump(entries, f)
  out_dir = os.path.join(pan['dir'], 'boxes_out')
  command = [
    sys.executable,
    '-m',
    'hpe_jax.commands.predict',
    f'--workdir={tiny_depth_run}',
    f'--boxes={boxes_file}',
    f'--out_dir={out_dir}',
    '--analyze',
    '--reps=knee_flexion_left',
    pan['video'],
  ]
  process = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
  assert process.returncode == 0, process.stderr
  files = video.output_paths(out_dir, 'pan')
  with open(files['json']) as f:
    header = json.load(f)
  return {
    'process': process,
    'files': files,
    'lines': _read_jsonl(files['jsonl']),
    'header': header,
  }


def test_one_json_line_and_one_overlay_frame_per_frame(boxes_run, pan):
  files, lines = boxes_run['files'], boxes_run['lines']
  for path in files.values():
    assert path in boxes_run['process'].stdout
  assert [line['frame'] for line in lines] == list(range(FRAMES))
  np.testing.assert_allclose([line['time_s'] for line in lines], np.arange(FRAMES) / FPS, atol=1e-4)
  overlay = _decoded(files['mp4'])
  assert len(overlay) == FRAMES and overlay[0].shape == (240, 320, 3)
  capture = cv2.VideoCapture(files['mp4'])
  assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
  header = boxes_run['header']
  assert header['frames'] == FRAMES and header['fps'] == pytest.approx(FPS)
  assert header['video'] == pan['video'] and header['frames_file'] == 'pan.jsonl'
  assert header['image_size'] == {'width': 320, 'height': 240} and len(header['joint_names']) == 16
  # The overlay is the input with skeletons drawn: close to it away from the people.
  source = _decoded(pan['video'])
  assert np.mean(np.abs(overlay[5].astype(int) - source[5])) < 3  # frame 5 has no people


def test_analyze_follows_the_prediction(boxes_run):
  """--analyze: hpe-analyze on the frames file just written (its own tests: test_analyze.py)."""
  stdout = boxes_run['process'].stdout
  assert 'repetitions of knee_flexion_left: track 0: ' in stdout
  folder = os.path.join(os.path.dirname(boxes_run['files']['jsonl']), 'pan_analysis')
  with open(os.path.join(folder, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['source'] == boxes_run['files']['jsonl'] and summary['frames'] == FRAMES
  assert os.path.isfile(os.path.join(folder, 'report.html'))


def test_every_person_of_a_frame_with_joints_inside_its_own_square_and_a_stable_track(
  boxes_run, pan
):
  lines = boxes_run['lines']
  assert lines[5]['people'] == []
  tracks = set()
  for line in lines[:5] + lines[6:]:
    people = line['people']
    assert len(people) == 2, line['frame']
    for person, box in zip(people, pan['boxes'][line['frame']]):
      np.testing.assert_allclose(person['box'], box, atol=1e-9)
      center, side = np.array(person['square']['center']), person['square']['side']
      joints_2d = np.array(person['joints_2d'])
      assert joints_2d.shape == (16, 2) and np.array(person['joints_3d']).shape == (16, 3)
      assert np.all(np.abs(joints_2d - center) <= side / 2 + 0.5)
    tracks.add(tuple(person['track'] for person in people))
  # The men keep their numbers through the pan (and past the frame without boxes).
  assert tracks == {(0, 1)}


def test_boxes_outside_the_frame_are_counted_and_reported(boxes_run):
  stderr = boxes_run['process'].stderr
  assert 'pan.mp4: 1 box lay wholly outside their frames and were skipped' in stderr
  assert len(boxes_run['lines'][3]['people']) == 2


@pytest.fixture(scope='module')
def predictor(tiny_depth_run):
  return inference.load(tiny_depth_run, batch_size=4)


def _predict_video(predictor, source, out_dir, **kwargs) -> tuple[dict, list[dict]]:
  os.makedirs(out_dir, exist_ok=True)
  run = {'workdir': 'test', 'step': predictor.step, 'depth': predictor.has_depth}
  summary = video.predict_video(
    predictor,
    source,
    out_dir,
    run=run,
    batch_size=4,
    log=lambda line: None,
    warn=lambda line: None,
    **kwargs,
  )
  return summary, _read_jsonl(summary['files']['jsonl'])


@pytest.fixture(scope='module')
def whole_frame_run(predictor, pan):
  return _predict_video(
    predictor, video.open_source(pan['video']), os.path.join(pan['dir'], 'whole')
  )


def test_whole_frame_batched_predictions_equal_one_frame_at_a_time(whole_frame_run, predictor, pan):
  summary, lines = whole_frame_run
  assert summary['frames'] == FRAMES and not summary['interrupted']
  frames = _decoded(pan['video'])
  for index in (0, 7, FRAMES - 1):
    [person] = lines[index]['people']
    assert person['box'] is None and person['track'] == 0
    alone = predictor.predict(cv2.cvtColor(frames[index], cv2.COLOR_BGR2RGB))
    np.testing.assert_allclose(person['joints_2d'], alone['joints_2d'], atol=0.006)
    np.testing.assert_allclose(person['joints_3d'], alone['joints_3d'], atol=0.006)
    np.testing.assert_allclose(person['scores'], alone['scores'], atol=6e-5)


def test_smoothing_is_the_one_euro_filter_of_each_track(whole_frame_run, predictor, pan):
  params = tracking.OneEuroParams(min_cutoff=0.5, beta=0.5)
  _, smoothed = _predict_video(
    predictor,
    video.open_source(pan['video']),
    os.path.join(pan['dir'], 'smooth'),
    smoothing=params,
  )
  raw = whole_frame_run[1]
  tracker = tracking.Tracker(params)
  moved = 0.0
  for raw_line, line in zip(raw, smoothed):
    [person] = raw_line['people']
    square = person['square']
    x, y = np.array(square['center']) + 0.5 - square['side'] / 2
    pose = {key: np.array(person[key]) for key in ('joints_2d', 'joints_3d')}
    _, [expected] = tracker.update(
      raw_line['time_s'], [(x, y, square['side'], square['side'])], [pose]
    )
    for key in ('joints_2d', 'joints_3d'):
      np.testing.assert_allclose(line['people'][0][key], expected[key], atol=0.02)
    moved += np.abs(np.array(line['people'][0]['joints_2d']) - pose['joints_2d']).mean()
  assert moved > 0  # the filter did something


def test_a_live_source_takes_frames_as_they_come_with_clock_times(predictor, pan):
  source = video.open_source(pan['video'])
  source = video.Source(
    **{**source.__dict__, 'name': 'camera 0', 'stem': 'camera0', 'frames': None}
  )
  summary, lines = _predict_video(predictor, source, os.path.join(pan['dir'], 'live'))
  assert summary['frames'] == FRAMES == len(lines)
  times = [line['time_s'] for line in lines]
  # Clock times (to 0.1 ms in the file): frames decoded faster than that may share one.
  assert all(b >= a for a, b in zip(times, times[1:])) and times[-1] > times[0] >= 0


class _InterruptedPredictor:
  """Ctrl-C during the third device call."""

  def __init__(self, predictor):
    self.predictor, self.calls = predictor, 0
    self.image_size, self.has_depth, self.step = predictor.image_size, predictor.has_depth, 0

  def predict_inputs(self, inputs):
    self.calls += 1
    if self.calls == 3:
      raise KeyboardInterrupt
    return self.predictor.predict_inputs(inputs)


def test_ctrl_c_leaves_every_file_whole_with_the_frames_done(predictor, pan):
  out_dir = os.path.join(pan['dir'], 'interrupted')
  summary, lines = _predict_video(
    _InterruptedPredictor(predictor), video.open_source(pan['video']), out_dir
  )
  assert summary['interrupted'] and summary['frames'] == 8  # two calls of 4 frames
  assert [line['frame'] for line in lines] == list(range(8))
  assert len(_decoded(summary['files']['mp4'])) == 8
  with open(summary['files']['json']) as f:
    assert json.load(f)['frames'] == 8


def test_a_full_disk_is_one_error_naming_the_file(predictor, pan, monkeypatch):
  out_dir = os.path.join(pan['dir'], 'full')
  os.makedirs(out_dir)
  paths = video.output_paths(out_dir, 'pan')
  monkeypatch.setattr(video, 'output_paths', lambda *args: {**paths, 'jsonl': '/dev/full'})
  with pytest.raises(video.VideoError, match='cannot write /dev/full .*space') as error:
    _predict_video(predictor, video.open_source(pan['video']), out_dir)
  assert isinstance(error.value, errors.HpeError) and '\n' not in str(error.value)


def test_boxes_file_frame_entries_go_to_videos_and_image_entries_to_images(tmp_path):
  entries = [
    {'frame': 0, 'bbox': [0, 0, 10, 10], 'score': 0.9},  # every video
    {'frame': 2, 'file_name': 'b.mp4', 'bbox': [1, 1, 10, 10], 'score': 0.8},
    {'frame': 2, 'file_name': 'b.mp4', 'bbox': [1, 1, 10, 10], 'score': 0.1},  # below threshold
    {'file_name': 'a.jpg', 'bbox': [2, 2, 10, 10], 'score': 0.9},
  ]
  path = tmp_path / 'boxes.json'
  path.write_text(json.dumps(entries))
  detections = boxes.read_boxes(str(path), ['x/a.jpg'], 0.5, ['x/a.mp4', 'y/b.mp4'])
  assert [p.box for p in detections.per_image['x/a.jpg']] == [(2, 2, 10, 10)]
  assert list(detections.per_video['x/a.mp4']) == [0]
  assert sorted(detections.per_video['y/b.mp4']) == [0, 2]
  [person] = detections.per_video['y/b.mp4'][2]
  assert (person.box, person.score, person.image_id, person.entry) == ((1, 1, 10, 10), 0.8, 2, 1)
  assert detections.below_threshold == 1
  # Without videos, frame entries name nothing; with none of them naming an image: an error.
  assert boxes.read_boxes(str(path), ['x/a.jpg'], 0.5).other_images == 3


def test_progress_line_has_frames_per_s_and_eta():
  source = video.Source('a.mp4', 'a', None, 25.0, 64, 48, frames=300)
  assert (
    video._progress_line(source, 100, 20.0) == 'a.mp4: frame 100/300 | 20.0 frames/s | ETA 0m10s'
  )
  live = video.Source('camera 0', 'camera0', None, 25.0, 64, 48, frames=None)
  assert video._progress_line(live, 7, None) == 'camera 0: frame 7 | Ctrl-C stops'


@pytest.mark.parametrize(
  'args, message',
  [
    (['missing.mp4'], 'missing.mp4: no such video file'),
    (['NOT_A_VIDEO'], 'cannot be read as a video'),
    (['--camera=63'], '--camera=63: no camera opens at index 63'),
    (['--smooth', '--smooth_min_cutoff=0', 'missing.mp4'], '--smooth_min_cutoff=0'),
  ],
  ids=['missing', 'not-a-video', 'no-camera', 'bad-smoothing'],
)
def test_video_errors_are_one_line_before_the_model_loads(tmp_path, args, message):
  not_a_video = tmp_path / 'text.mp4'
  not_a_video.write_text('not a video')
  args = [str(not_a_video) if a == 'NOT_A_VIDEO' else a for a in args]
  # The workdir holds no run: the input errors come first.
  command = [sys.executable, '-m', 'hpe_jax.commands.predict', f'--workdir={tmp_path}', *args]
  process = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
  assert process.returncode == 2 and message in process.stderr, process.stderr
  assert len(process.stderr.strip().splitlines()) == 1, process.stderr


def test_video_benchmark_times_every_stage_on_a_tiny_model(pan):
  from tools.lib import benchmark_video

  with_peer = importlib.util.find_spec('torch') is not None  # the peer needs torch
  config = tiny_config('', depth=True)
  logged = []
  lines = benchmark_video.benchmark_video(
    config,
    video_path=pan['video'],
    batch_size=4,
    peer=with_peer,
    steps=1,
    repeats=1,
    log=logged.append,
  )
  systems = ['decode', 'predict_step', 'torch_eager_forward', 'video_whole_frame', 'summary']
  if not with_peer:
    systems.remove('torch_eager_forward')
  assert [json.loads(line).get('system', 'summary') for line in logged] == systems
  assert lines['decode']['frames'] == lines['video_whole_frame']['frames'] == FRAMES
  assert lines['predict_step']['batch_size'] == 4 and lines['predict_step']['flip_test']
  if with_peer:
    ratio = lines['predict_step']['people_per_s'] / lines['torch_eager_forward']['people_per_s']
    assert lines['summary']['predict_step_over_torch_eager_forward'] == pytest.approx(ratio, 1e-2)


def test_a_partial_device_call_is_padded_to_a_power_of_two_at_most_the_batch(predictor):
  assert predictor.batch_size == 4 and predictor.mesh.size == 1
  assert [predictor.padded_size(count) for count in (1, 2, 3, 4)] == [1, 2, 4, 4]


def test_a_second_run_into_the_same_directory_replaces_the_files(whole_frame_run, predictor, pan):
  first, _ = whole_frame_run
  out_dir = os.path.dirname(first['files']['jsonl'])
  summary, lines = _predict_video(predictor, video.open_source(pan['video']), out_dir)
  assert summary['files'] == first['files'] and len(lines) == FRAMES
  assert len(_decoded(summary['files']['mp4'])) == FRAMES


@pytest.mark.parametrize(
  'command, message',
  [
    (
      ['tools.benchmark_video', '--config=configs/finetune.py', '--boxes=b.json'],
      '--boxes goes with --video',
    ),
    (
      [
        'tools.benchmark_video',
        '--config=configs/finetune.py',
        '--nopeer',
        '--min_ratio_eager=1.2',
      ],
      '--min_ratio_eager needs --peer',
    ),
    (
      ['hpe_jax.commands.predict', '--workdir=w', '--step=latest', 'a.mp4'],
      "'latest' is not a step",
    ),
    (
      ['hpe_jax.commands.predict', '--model=m.hpe', '--step=3', 'a.mp4'],
      '--step picks a checkpoint',
    ),
  ],
  ids=['benchmark-boxes-without-video', 'benchmark-ratio-without-peer', 'bad-step', 'step-model'],
)
@pytest.mark.slow
def test_flag_errors_are_one_line(command, message):
  process = subprocess.run(
    [sys.executable, '-m', *command], capture_output=True, text=True, cwd=REPO
  )
  assert process.returncode == 2 and message in process.stderr, process.stderr
  assert len(process.stderr.strip().splitlines()) == 1, process.stderr


def _gradient(width: int, height: int) -> np.ndarray:
  """A smooth (height, width, 3) uint8 RGB image: what a codec keeps nearly as it is."""
  x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
  return (np.stack([x, y, 1 - x * y], axis=-1) * 200 + 20).astype(np.uint8)


@pytest.mark.parametrize(
  'width, height, fps, rate',
  [(64, 48, 25.0, Fraction(25)), (63, 47, 29.97, Fraction(2997, 100))],
  ids=['even', 'odd-ntsc'],
)
def test_the_writer_writes_h264_that_reads_back_as_written(tmp_path, width, height, fps, rate):
  path, frames = str(tmp_path / 'out.mp4'), 5
  image = _gradient(width, height)
  with video_writer.H264Writer(path, fps, width, height) as writer:
    for i in range(frames):
      writer.write(np.roll(image, i, axis=1))
  writer.close()  # again: nothing
  with av.open(path) as container:
    stream = container.streams.video[0]
    assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ('h264', 'yuv420p')
    assert stream.average_rate == rate and stream.frames == frames
    context = stream.codec_context  # tagged BT.601 (smpte170m), limited range: as converted
    assert (context.colorspace, context.color_range) == (6, 1)
    # An odd side is padded to even by repeating the last column / row.
    assert (stream.width, stream.height) == (width + width % 2, height + height % 2)
    decoded = [f.to_ndarray(format='rgb24') for f in container.decode(stream)]
  assert len(decoded) == frames
  # Of 255 levels; converting to yuv420p and back alone costs 1.9 on this image.
  assert np.abs(decoded[0][:height, :width].astype(float) - image).mean() < 4
  assert np.abs(decoded[0][:, -1].astype(float) - decoded[0][:, -2]).mean() < 2
  # The index comes first (+faststart): a browser plays the file before it has all of it.
  with open(path, 'rb') as f:
    data = f.read()
  assert 0 <= data.find(b'moov') < data.find(b'mdat')
  capture = cv2.VideoCapture(path)  # OpenCV, which decodes our inputs, reads it too
  assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == frames
  assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(fps)
  capture.release()


def test_a_one_pixel_line_keeps_its_colour(tmp_path):
  # yuv420p colours 2x2 blocks: a red line in a block's right column must not turn grey.
  image = np.full((48, 64, 3), 128, np.uint8)
  image[:, 33] = (255, 0, 0)
  with video_writer.H264Writer(tmp_path / 'line.mp4', 25.0, 64, 48) as writer:
    writer.write(image)
  with av.open(str(tmp_path / 'line.mp4')) as container:
    red, green, _ = next(container.decode(video=0)).to_ndarray(format='rgb24')[24, 33].astype(int)
  assert red - green > 80


def _unwritable_directory(tmp_path) -> str:
  """A directory this process cannot create files in (root writes in a mode 0o555 one)."""
  directory = tmp_path / 'read_only'
  directory.mkdir(mode=0o555)
  if os.access(directory, os.W_OK):
    directory = '/sys'  # read-only for root too
    if not os.path.isdir(directory):
      pytest.skip('no directory here is read-only to this process')
  return str(directory)


@pytest.mark.parametrize(
  'where, message',
  [
    ('missing', r'there is no directory \S*missing \(create it first\)'),
    ('read_only', r'\(Permission denied\): check that its directory is writable and has space'),
    ('full', r'\(No space left on device\): check that its directory is writable and has space'),
  ],
)
def test_an_unwritable_video_is_one_line_naming_it(tmp_path, where, message):
  path = {
    'missing': str(tmp_path / 'missing' / 'out.mp4'),
    'read_only': os.path.join(_unwritable_directory(tmp_path), 'out.mp4'),
    'full': '/dev/full',
  }[where]
  if where == 'full' and not os.path.exists(path):
    pytest.skip('no /dev/full here')
  with pytest.raises(video_writer.VideoWriteError, match=message) as error:
    video_writer.H264Writer(path, 25.0, 64, 48)
  assert isinstance(error.value, errors.HpeError)
  assert path in str(error.value) and '\n' not in str(error.value)
  # The overlay's writer says the same as a VideoError, and leaves the .jsonl closed.
  paths = video.output_paths(str(tmp_path), 'a')
  source = video.Source('a.mp4', 'a', None, 25.0, 64, 48, frames=1)
  with pytest.raises(video.VideoError, match=message):
    video.FrameWriter(source, {**paths, 'mp4': path}, tracking.Tracker(None), {})


def test_a_disk_filling_up_while_writing_is_one_line(tmp_path):
  resource = pytest.importorskip('resource')
  path = str(tmp_path / 'out.mp4')
  rng = np.random.default_rng(0)
  writer = video_writer.H264Writer(path, 25.0, 64, 48)
  limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.getsignal(signal.SIGXFSZ)
  # Files may grow to 20 kB: writing beyond fails with EFBIG, as a full disk fails with ENOSPC.
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limits[1]))
  try:
    with pytest.raises(video_writer.VideoWriteError, match='File too large') as error:
      for _ in range(200):  # noise: ~1 kB a frame
        writer.write(rng.integers(0, 256, (48, 64, 3), np.uint8))
      writer.close()
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    signal.signal(signal.SIGXFSZ, handler)
  assert path in str(error.value) and '\n' not in str(error.value)
  writer.close()  # after the error: nothing

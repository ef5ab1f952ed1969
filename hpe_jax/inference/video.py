"""Predicting on a video file or a live camera: frames decoded on a background thread, people
predicted in batches through the model's jitted predict step, and each frame's record and overlay
written in order by a second background thread, so that decoding, the device and the writing
overlap (what `hpe-predict VIDEO` and `--camera=N` do; its module doc describes the
files).

  source = video.open_source('walk.mp4')           # or video.open_source(0): camera 0
  summary = video.predict_video(predictor, source, out_dir, run=run)

Per source, in out_dir: <stem>.jsonl (one line per frame: {"frame", "time_s", "people"}, people as
in an image's JSON, each with its "track"), <stem>_2d.mp4 (the skeletons over the frames, the
input's size and frame rate: H.264 in MP4 (`video_writer`), which browsers and notebooks play) and
<stem>.json (the video, the model, the joint names and conventions, and the frame count once
done). An interrupted run (Ctrl-C) leaves every file whole, holding the frames predicted so far.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import queue
import re
import sys
import tempfile
import threading
import time
from typing import Callable
from typing import Sequence

import cv2
import numpy as np

from hpe_jax import errors
from hpe_jax import files
from hpe_jax import progress
from hpe_jax.inference import boxes as boxes_lib
from hpe_jax.inference import crops
from hpe_jax.inference import outputs
from hpe_jax.inference import pose_model
from hpe_jax.inference import records
from hpe_jax.inference import tracking
from hpe_jax.inference import video_writer
from hpe_jax.inference import visualize

# File extensions predicted as videos (OpenCV decodes them through FFmpeg); others are images.
VIDEO_EXTENSIONS = frozenset(
  ('.mp4', '.m4v', '.mov', '.avi', '.mkv', '.webm', '.mpg', '.mpeg', '.wmv', '.flv', '.3gp')
)
CAMERA_FPS = 30.0  # a camera (or a video header) without a frame rate is written at this one
DEFAULT_BATCH_SIZE = 16  # people per device call for a video file
PROGRESS_EVERY_S = 5.0
# Decimals kept in the .jsonl: pixels and mm to a hundredth, scores to 1e-4.
_DIGITS = {'joints_2d': 2, 'joints_3d': 2, 'scores': 4}
_DECODE_AHEAD = 32  # frames decoded ahead of the predictions
_WRITE_AHEAD = 64  # frames predicted ahead of the writing


class VideoError(errors.HpeError, ValueError):
  """A video, a camera or an output file cannot be used; the message names it."""


def is_video(path: str) -> bool:
  """Whether `path` is predicted as a video: by its extension (VIDEO_EXTENSIONS)."""
  return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class Source:
  """An opened video file or camera (`open_source`)."""

  name: str  # the video's path, or 'camera N'
  stem: str  # the output files' stem: the video's file stem, or 'cameraN'
  capture: cv2.VideoCapture
  fps: float
  width: int
  height: int
  frames: int | None  # as the file's header says (an estimate for some formats); None: a camera

  @property
  def live(self) -> bool:
    return self.frames is None


@contextlib.contextmanager
def _stderr_captured(lines: list[str]):
  """Collects what C libraries (OpenCV's log, FFmpeg's) write to stderr meanwhile into `lines`:
  their notes belong in our one-line error, not above it."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode='w+b') as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines.extend(line.strip() for line in captured.read().decode(errors='replace').splitlines())


def _library_note(lines: list[str]) -> str:
  """The last note of `_stderr_captured`, without FFmpeg's '[demuxer @ 0x...]' prefix."""
  notes = [re.sub(r'^\[[^]]*@ 0x[0-9a-f]+\] ', '', line) for line in lines if line]
  return f' (FFmpeg: {notes[-1]})' if notes and notes[-1] else ''


def open_source(video: str | int) -> Source:
  """Opens a video file (a path) or a camera (an index).

  Raises:
    VideoError: no such file, a file OpenCV cannot decode or without frames, or no camera there.
  """
  notes = []
  if isinstance(video, int):
    with _stderr_captured(notes):  # OpenCV warns about every backend it tried
      capture = cv2.VideoCapture(video)
    if not capture.isOpened():
      raise VideoError(
        f'--camera={video}: no camera opens at index {video}: on Linux `ls /dev/video*` lists '
        'the cameras (/dev/video0 is --camera=0)'
      )
    name, stem, frames = f'camera {video}', f'camera{video}', None
  else:
    if not os.path.isfile(video):
      raise VideoError(f'{video}: no such video file')
    with _stderr_captured(notes):
      capture = cv2.VideoCapture(video)
    if not capture.isOpened():
      raise VideoError(
        f'{video}: cannot be read as a video{_library_note(notes)}; OpenCV decodes MP4, MOV, '
        'AVI, MKV, WebM, ... through FFmpeg: convert it, e.g. ffmpeg -i INPUT out.mp4'
      )
    name, stem = video, os.path.splitext(os.path.basename(video))[0]
    frames = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
  fps = capture.get(cv2.CAP_PROP_FPS)
  width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
  height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
  if frames is not None and (width <= 0 or height <= 0 or frames == 0):
    capture.release()
    raise VideoError(f'{video}: holds no video frames OpenCV can decode')
  return Source(
    name=name,
    stem=stem,
    capture=capture,
    fps=float(fps) if math.isfinite(fps) and fps > 0 else CAMERA_FPS,
    width=width,
    height=height,
    frames=frames,
  )


def output_paths(out_dir: str, stem: str) -> dict[str, str]:
  """The files written for one video: {'jsonl': per-frame records, 'mp4': overlay, 'json':
  what the frames are}."""
  base = os.path.join(out_dir, stem)
  return {'jsonl': f'{base}.jsonl', 'mp4': f'{base}_2d.mp4', 'json': f'{base}.json'}


@dataclasses.dataclass(frozen=True)
class Frame:
  index: int  # 0 for the first frame
  time_s: float  # a file's: index / fps; a camera's: seconds since the first frame
  image: np.ndarray  # (H, W, 3) uint8 RGB


_END = object()


class _Worker:
  """A background thread fed through a bounded queue; an exception it raises is raised again in
  the thread that feeds or drains it."""

  def __init__(self, name: str, size: int):
    self.queue: queue.Queue = queue.Queue(maxsize=size)
    self.stop = threading.Event()
    self.error: BaseException | None = None
    self.thread = threading.Thread(target=self._guarded, name=name, daemon=True)

  def _guarded(self) -> None:
    try:
      self.work()
    except BaseException as e:  # pylint: disable=broad-except  (handed to the other thread)
      self.error = e

  def work(self) -> None:
    raise NotImplementedError

  def put(self, item) -> bool:
    """Queues `item` unless stopped (then -> False); waits while the queue is full."""
    while not self.stop.is_set():
      if self.error is not None and threading.current_thread() is not self.thread:
        raise self.error
      try:
        self.queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False


class FrameReader(_Worker):
  """The frames of a source, decoded on a background thread (OpenCV lets go of the GIL while it
  decodes) at most _DECODE_AHEAD frames ahead of the consumer. Iterate it; `close` stops it."""

  def __init__(self, source: Source):
    super().__init__('decode', _DECODE_AHEAD)
    self.source = source
    self.thread.start()

  def work(self) -> None:
    start, index, previous = time.monotonic(), 0, -1.0
    try:
      while not self.stop.is_set():
        ok, bgr = self.source.capture.read()
        if not ok:
          break
        if self.source.live:  # strictly increasing, as the smoothing needs
          time_s = max(time.monotonic() - start, previous + 1e-6)
        else:
          time_s = index / self.source.fps
        previous = time_s
        if not self.put(Frame(index, time_s, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))):
          break
        index += 1
    finally:
      self.source.capture.release()
      self.put(_END)

  def ready(self) -> int:
    """Frames decoded and waiting."""
    return self.queue.qsize()

  def __iter__(self):
    while True:
      try:
        item = self.queue.get(timeout=0.1)
      except queue.Empty:
        if self.error is not None:
          raise self.error
        continue
      if item is _END:
        if self.error is not None:
          raise self.error
        return
      yield item

  def close(self) -> None:
    self.stop.set()
    self.thread.join()


@dataclasses.dataclass
class _Predicted:
  """A frame with its people's boxes, crops and model outputs, for the writer."""

  frame: Frame
  people: list  # (box or None, box score or None, crop, outputs or None, warnings)


class FrameWriter(_Worker):
  """Writes predicted frames in order on a background thread: tracks people (and smooths their
  joints), appends the record to the .jsonl and the overlay to the .mp4.

  The files agree whatever fails: a frame counts once its line is on disk and its overlay is
  with the encoder; a write the OS refuses (e.g. a full disk) cuts the .jsonl back to the frames
  that count (no torn line), an overlay that cannot be finished (its index is written last) is
  removed, and the header (<stem>.json) says how many frames the .jsonl holds, whether the
  overlay is there and, after a failure, the error.
  """

  def __init__(
    self, source: Source, paths: dict[str, str], tracker: tracking.Tracker, header: dict
  ):
    super().__init__('write', _WRITE_AHEAD)
    self.source, self.paths, self.tracker, self.header = source, paths, tracker, header
    self.written = 0
    self.unconfident: list[int] = []  # frames with a person whose every joint scores low
    self.mostly_outside: list[int] = []  # frames with a box mostly outside the frame
    self._jsonl_bytes = 0  # the .jsonl's length after the frames that count
    self._video_failed = False
    self._write_header(frames=None)
    try:
      self.jsonl = open(paths['jsonl'], 'wb')
    except OSError as e:
      raise VideoError(outputs.cannot_write(paths['jsonl'], e)) from None
    try:
      self.video = video_writer.H264Writer(paths['mp4'], source.fps, source.width, source.height)
    except video_writer.VideoWriteError as e:
      self.jsonl.close()
      raise VideoError(str(e)) from None
    self.thread.start()

  def _write_header(self, frames: int | None, **fields) -> None:
    """Writes the header whole or not at all (the previous one stays)."""
    header = dict(self.header, frames=frames, **fields)
    try:
      files.write_text(self.paths['json'], json.dumps(header, indent=2))
    except OSError as e:
      raise VideoError(outputs.cannot_write(self.paths['json'], e)) from None

  def work(self) -> None:
    while True:
      item = self.queue.get()
      if item is _END:
        return
      self._write(item)

  def _write(self, item: _Predicted) -> None:
    frame = item.frame
    poses, boxes, persons = [], [], []
    for box, _, crop, person_outputs, _ in item.people:
      poses.append(crops.person_pose(crop, person_outputs))
      if box is None:  # the whole frame: the square the model saw
        x, y = crop.center + 0.5 - crop.side / 2
        box = (x, y, crop.side, crop.side)
      boxes.append(box)
    track_ids, poses = self.tracker.update(frame.time_s, boxes, poses)
    for (box, box_score, _, _, warnings), pose, track in zip(item.people, poses, track_ids):
      person = records.person_record(box, pose, box_score)
      person['track'] = track
      low = records.low_confidence_warning(pose['scores'])
      if low:
        warnings = [*warnings, low]
        if not self.unconfident or self.unconfident[-1] != frame.index:
          self.unconfident.append(frame.index)
      if warnings:
        person['warning'] = '; '.join(warnings)
      persons.append(person)
    overlay = visualize.draw_people(frame.image, persons)
    line = {'frame': frame.index, 'time_s': round(frame.time_s, 4), 'people': persons}
    for person in persons:  # shorter lines; the digits dropped are below the model's precision
      for key, digits in _DIGITS.items():
        if person[key] is not None:
          person[key] = np.round(np.asarray(person[key]), digits).tolist()
    data = (json.dumps(line) + '\n').encode()
    try:  # on disk before the frame counts (a buffered line could tear at close)
      self.jsonl.write(data)
      self.jsonl.flush()
    except OSError as e:
      raise VideoError(outputs.cannot_write(self.paths['jsonl'], e)) from None
    try:
      self.video.write(overlay)
    except video_writer.VideoWriteError as e:
      self._video_failed = True
      raise VideoError(str(e)) from None
    self._jsonl_bytes += len(data)
    self.written += 1

  def close(self) -> None:
    """Writes what is queued, then closes the files, each whole and agreeing with the others
    (the class doc), whatever came before; raises the first error."""
    if self.error is None:
      try:
        self.put(_END)
      except BaseException as e:  # pylint: disable=broad-except
        if e is not self.error:  # the writer's own error (it has stopped): handled below
          raise
    else:
      self.stop.set()
    self.thread.join()
    try:
      self.video.close()
    except video_writer.VideoWriteError as e:
      self._video_failed = True
      self.error = self.error or VideoError(str(e))
    try:
      self.jsonl.close()
    except OSError as e:
      self.error = self.error or VideoError(outputs.cannot_write(self.paths['jsonl'], e))
    fields = {}
    if self.error is not None:
      # The frames that count: a torn or uncounted last line goes.
      with contextlib.suppress(OSError):
        if os.path.getsize(self.paths['jsonl']) > self._jsonl_bytes:
          os.truncate(self.paths['jsonl'], self._jsonl_bytes)
      fields['error'] = str(self.error)
    if self._video_failed:
      # An MP4 whose index was never written plays nowhere: no file rather than a broken one.
      with contextlib.suppress(OSError):
        os.remove(self.paths['mp4'])
      fields['overlay_file'] = None
      if isinstance(self.error, VideoError):
        self.error = VideoError(
          f'{self.error}; {self.paths["mp4"]} is removed, {self.paths["jsonl"]} holds the '
          f'{self.written} frames done'
        )
        fields['error'] = str(self.error)
    try:
      self._write_header(frames=self.written, **fields)
    except VideoError as e:
      self.error = self.error or e
    if self.error is not None:
      raise self.error


def _describe_frames(frames: Sequence[int]) -> str:
  shown = ', '.join(str(f) for f in frames[:5])
  return f'{len(frames)} frames ({shown}{", ..." if len(frames) > 5 else ""})'


def _progress_line(source: Source, written: int, rate: float | None) -> str:
  line = f'{source.name}: frame {written}'
  if source.frames:
    line += f'/{source.frames}'
  if rate:
    line += f' | {rate:.1f} frames/s'
    if source.frames and written < source.frames:
      line += f' | ETA {progress.duration((source.frames - written) / rate)}'
  if source.live:
    line += ' | Ctrl-C stops'
  return line


def predict_video(
  predictor: pose_model.PoseModel,
  source: Source,
  out_dir: str,
  *,
  run: dict,
  box=None,
  frame_boxes: dict[int, list[boxes_lib.PersonBox]] | None = None,
  smoothing: tracking.OneEuroParams | None = None,
  batch_size: int = DEFAULT_BATCH_SIZE,
  log: Callable[[str], None] = print,
  warn: Callable[[str], None] = print,
) -> dict:
  """Predicts every frame of `source` and writes its files (module doc).

  Args:
    predictor: a run's or an exported model (`loading.load_model`).
    source: from `open_source`; read to its end (a camera: until Ctrl-C).
    out_dir: an existing directory.
    run: {'workdir' or 'model', 'step', 'depth'}: the model, as the records name it.
    box: one person's (x, y, w, h) in every frame; None: the whole frame. Not with `frame_boxes`.
    frame_boxes: per frame index its detector boxes (`boxes.read_boxes`' per_video); a frame
      without any has no people.
    smoothing: One-Euro parameters to smooth each track's joints; None: raw per-frame poses.
    batch_size: people per device call (a camera's calls take what has arrived, up to it).
    log, warn: take the progress lines and the warnings.
  Returns:
    {'source', 'files': output_paths, 'frames': frames written, 'seconds', 'frames_per_s',
    'interrupted': whether Ctrl-C stopped it}.
  Raises:
    VideoError: an output file cannot be written (the files keep the frames before it).
  """
  paths = output_paths(out_dir, source.stem)
  header = records.joints_record(source.name, (source.height, source.width), [], run)
  del header['people'], header['image']
  header = {
    'video': source.name,
    'fps': source.fps,
    'frames_file': os.path.basename(paths['jsonl']),
    'overlay_file': os.path.basename(paths['mp4']),
    'smoothing': None if smoothing is None else dataclasses.asdict(smoothing),
    'track_note': 'people are matched across frames by box overlap; "track" numbers them from '
    '0 in order of appearance',
    **header,
  }
  tracker = tracking.Tracker(smoothing)
  reader = FrameReader(source)
  try:
    writer = FrameWriter(source, paths, tracker, header)
  except BaseException:
    reader.close()
    raise
  start = last_time = time.monotonic()
  last_written, interrupted, outside = 0, False, 0
  pending: list[_Predicted] = []

  def flush() -> None:
    people = [p for item in pending for p in item.people]
    if people:
      inputs = np.stack([crop.model_input for _, _, crop, _, _ in people])
      padding = -len(inputs) % batch_size  # one compiled shape, whatever the count
      if padding:
        inputs = np.concatenate([inputs, np.repeat(inputs[-1:], padding, axis=0)])
      model_outputs = predictor.predict_inputs(inputs)
      for i, person in enumerate(people):
        person[3] = {key: value[i] for key, value in model_outputs.items()}
    for item in pending:
      item.people = [tuple(p) for p in item.people]
      if not writer.put(item):
        break
    pending.clear()

  try:
    crops_pending = 0
    for frame in reader:
      if frame_boxes is not None:
        people = [(p.box, p.score) for p in frame_boxes.get(frame.index, [])]
      else:
        people = [(box, None)]
      item = _Predicted(frame, [])
      for person_box, score in people:
        warnings = []
        if person_box is not None:
          fraction = boxes_lib.outside_fraction(person_box, frame.image.shape)
          if fraction >= 1:
            outside += 1
            continue
          if fraction > boxes_lib.MOSTLY_OUTSIDE:
            warnings.append(f'{fraction:.0%} of the box lies outside the frame')
            if not writer.mostly_outside or writer.mostly_outside[-1] != frame.index:
              writer.mostly_outside.append(frame.index)
        crop = crops.crop_person(frame.image, person_box, predictor.image_size)
        item.people.append([person_box, score, crop, None, warnings])
      pending.append(item)
      crops_pending += len(item.people)
      if crops_pending >= batch_size or (source.live and reader.ready() == 0):
        flush()
        crops_pending = 0
      now = time.monotonic()
      if now - last_time >= PROGRESS_EVERY_S:
        rate = (writer.written - last_written) / (now - last_time)
        log(_progress_line(source, writer.written, rate if last_written else None))
        last_time, last_written = now, writer.written
    flush()
  except KeyboardInterrupt:
    interrupted = True
  finally:
    reader.close()
    writer.close()
  seconds = time.monotonic() - start
  if outside:
    boxes_lay = '1 box lay' if outside == 1 else f'{outside} boxes lay'
    warn(f'{source.name}: {boxes_lay} wholly outside their frames and were skipped')
  if writer.mostly_outside:
    warn(
      f'{source.name}: in {_describe_frames(writer.mostly_outside)} a box lies mostly outside '
      'the frame: the model sees mostly padding'
    )
  if writer.unconfident:
    warn(
      f'{source.name}: in {_describe_frames(writer.unconfident)} a person has no joint scoring '
      f'above {visualize.MIN_CONFIDENT_SCORE}: the box holds no person the model recognises, or '
      'the model is barely trained'
    )
  return {
    'source': source.name,
    'files': paths,
    'frames': writer.written,
    'seconds': seconds,
    'frames_per_s': writer.written / seconds if seconds > 0 else 0.0,
    'interrupted': interrupted,
  }

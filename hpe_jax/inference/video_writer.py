"""Writing RGB frames to a video that browsers play: H.264 (libx264 through PyAV), yuv420p, in
an MP4 whose index comes first (`movflags=+faststart`), so that it streams before it has loaded.

  with video_writer.H264Writer('out.mp4', fps=29.97, width=640, height=360) as writer:
    writer.write(rgb)  # (360, 640, 3) uint8

OpenCV's own MP4 writer codes MPEG-4 Part 2 (mp4v), which browsers (Chromium: MediaError 4) do
not decode. yuv420p stores colour per 2x2 pixels, so a frame of odd width or height is padded by
repeating its last column or row: the video is then one pixel wider or taller than the frames.
"""

from __future__ import annotations

import fractions
import os

import av
import cv2
import numpy as np

from hpe_jax import errors

# Speed first: ultrafast encodes a 640x360 frame in ~1 ms on 2 cores, as mp4v did (VP9: 91), and
# keeps predict_video's frames/s within 5% of mp4v's; veryfast's files are 3.7x smaller but cost
# it 12-16% (BENCHMARKS.md, "Video encoding"). crf 23, x264's default: skeletons and text sharp.
PRESET = 'ultrafast'
CRF = 23
# BT.601, limited range: what cv2's RGB -> I420 conversion computes (`_yuv420`), tagged in the
# stream so that no player takes it for BT.709 (the usual guess for untagged HD video).
_SMPTE170M, _LIMITED_RANGE = 6, 1  # FFmpeg's AVColorSpace / AVColorPrimaries / AVColorTRC, range


class VideoWriteError(errors.HpeError):
  """A video cannot be written; the message names the file and the fix."""


def _even_size(width: int, height: int) -> tuple[int, int]:
  """The size of the video written from width x height frames (module doc)."""
  return width + width % 2, height + height % 2


def _yuv420(rgb: np.ndarray) -> np.ndarray:
  """(H * 3 / 2, W) planar yuv420p of an even-sized RGB frame: 4x faster than PyAV's swscale.

  cv2 takes each 2x2 block's colour from its top-left pixel, which would drop or flicker the
  colour of 1-pixel lines; the chroma here is of the block's mean instead, as swscale's is.
  """
  height, width = rgb.shape[:2]
  yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
  mean = cv2.resize(rgb, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
  blocks = cv2.resize(mean, (width, height), interpolation=cv2.INTER_NEAREST)
  yuv[height:] = cv2.cvtColor(blocks, cv2.COLOR_RGB2YUV_I420)[height:]
  return yuv


def _message(path: str, error: OSError) -> str:
  directory = os.path.dirname(path) or '.'
  if not os.path.isdir(directory):
    if os.path.exists(directory):
      return f'cannot write the video {path}: {directory} is not a directory'
    return f'cannot write the video {path}: there is no directory {directory} (create it first)'
  return (
    f'cannot write the video {path} ({error.strerror or error}): check that its directory is '
    'writable and has space'
  )


class H264Writer:
  """An H.264 MP4 file written frame by frame (module doc); `close` it, or use it in `with`.
  `preset` and `crf` are x264's (the defaults: PRESET, CRF).

  Raises VideoWriteError (one line: the path and the fix) from the constructor for a path that
  cannot be created, and from `write` or `close` when the disk refuses the data (e.g. full).
  """

  def __init__(
    self,
    path: str | os.PathLike,
    fps: float,
    width: int,
    height: int,
    *,
    preset: str = PRESET,
    crf: int = CRF,
  ):
    self.path = os.fspath(path)
    self.width, self.height = width, height
    self.closed = False
    # An exact rational rate: 29.97 becomes 2997/100 and 30000/1001 stays itself.
    rate = fractions.Fraction(fps).limit_denominator(100_000)
    try:
      self._container = av.open(self.path, 'w', format='mp4', options={'movflags': '+faststart'})
    except OSError as e:
      raise VideoWriteError(_message(self.path, e)) from None
    try:
      self._stream = self._container.add_stream(
        'libx264', rate=rate, options={'preset': preset, 'crf': str(crf)}
      )
      self._stream.width, self._stream.height = _even_size(width, height)
      self._stream.pix_fmt = 'yuv420p'
      context = self._stream.codec_context
      context.colorspace = context.color_primaries = context.color_trc = _SMPTE170M
      context.color_range = _LIMITED_RANGE
      # Opens the file now: a bad path fails here rather than at the first frame.
      self._container.start_encoding()
    except OSError as e:
      self._abandon()
      raise VideoWriteError(_message(self.path, e)) from None
    self._frames = 0

  def write(self, rgb: np.ndarray) -> None:
    """Appends one (height, width, 3) uint8 RGB frame."""
    if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
      raise ValueError(
        f'expected a ({self.height}, {self.width}, 3) uint8 frame, got {rgb.shape} {rgb.dtype}'
      )
    if self.width % 2 or self.height % 2:
      rgb = np.pad(rgb, ((0, self.height % 2), (0, self.width % 2), (0, 0)), mode='edge')
    frame = av.VideoFrame.from_ndarray(_yuv420(rgb), format='yuv420p')
    frame.pts = self._frames
    self._mux(frame)
    self._frames += 1

  def _mux(self, frame: av.VideoFrame | None) -> None:
    """Encodes frame (None: flushes the encoder) and writes its packets."""
    try:
      self._container.mux(self._stream.encode(frame))
    except OSError as e:
      self._abandon()
      raise VideoWriteError(_message(self.path, e)) from None

  def _abandon(self) -> None:
    """Releases the file after an error (the error said what went wrong)."""
    self.closed = True
    try:
      self._container.close()
    except OSError:
      pass

  def close(self) -> None:
    """Flushes the encoder and finishes the file; again: nothing."""
    if self.closed:
      return
    self._mux(None)
    self.closed = True
    try:
      self._container.close()
    except OSError as e:
      raise VideoWriteError(_message(self.path, e)) from None

  def __enter__(self) -> H264Writer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

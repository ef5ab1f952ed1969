"""People tracked across video frames by box overlap, and their joints smoothed over time.

Video prediction predicts each frame's people independently, so the poses jitter from frame to
frame. `Tracker` matches this frame's people to the tracks of earlier frames (greedy, by box IoU)
and, when asked, smooths each track's joints with its own One-Euro filters (Casiez, Roussel, Vogel,
CHI 2012, "1 Euro Filter: A Simple Speed-based Low-pass Filter for Noisy Input in Interactive
Systems"): a low-pass filter whose cutoff rises with the speed, so that a still joint is steadied
and a moving one is not left behind.

  tracker = Tracker(OneEuroParams())
  for time_s, boxes, poses in frames:
    track_ids, poses = tracker.update(time_s, boxes, poses)

Numpy only: it imports nothing from jax or flax.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import math

import numpy as np

# A person box (x, y, w, h) in pixels, COCO style: top-left corner, width, height.
Box = tuple[float, float, float, float]

# The pose arrays a tracker smooths, and the scale of each in the filter's units: the box's larger
# side for 2D joints in pixels (None below), a metre for 3D joints in millimetres.
_SMOOTHED = {'joints_2d': None, 'joints_3d': 1000.0}


def iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
  """Intersection over union of every box of one set with every box of another.

  Args:
    boxes_a: (A, 4) boxes (x, y, w, h) in pixels, COCO style (top-left corner, width, height).
    boxes_b: (B, 4) boxes likewise.

  Returns:
    (A, B) float64 IoU in [0, 1]; 0 where both boxes have no area.
  """
  a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
  b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
  a_lo, a_hi = a[:, None, :2], a[:, None, :2] + a[:, None, 2:]
  b_lo, b_hi = b[None, :, :2], b[None, :, :2] + b[None, :, 2:]
  sides = np.clip(np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo), 0.0, None)
  inter = sides[..., 0] * sides[..., 1]
  union = (a[:, None, 2] * a[:, None, 3]) + (b[None, :, 2] * b[None, :, 3]) - inter
  # Two empty boxes share nothing: 0 rather than 0 / 0.
  return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclasses.dataclass(frozen=True)
class OneEuroParams:
  """The One-Euro filter's parameters.

  The defaults were chosen on synthetic 30 fps joints (tests/inference/test_tracking.py): min_cutoff
  = 1 Hz cuts a still joint's noise (std 2% of the box side) to 0.34 of its std, the test asking for
  at most half; beta = 1 raises the cutoff with speed so that a joint moving 1 box side per second
  trails by 0.047 box sides (47 ms), where a plain 1 Hz low-pass (beta = 0) trails by 0.16.

  Attributes:
    min_cutoff: the cutoff frequency at rest, in Hz. Lower steadies still joints more and lags
      more on slow moves.
    beta: how fast the cutoff rises with speed, in Hz per (scale unit / s), i.e. 1 / scale units,
      where the speed is measured in the filter's `scale` units (the box's larger side for 2D
      joints, metres for 3D ones). Higher lags less on fast moves; 0 is a plain low-pass.
    d_cutoff: the cutoff frequency of the low-pass on the speed estimate, in Hz.
  """

  min_cutoff: float = 1.0
  beta: float = 1.0
  d_cutoff: float = 1.0

  def __post_init__(self):
    # Named as the command-line flags, since the CLI shows these messages as they are.
    for name in ('min_cutoff', 'd_cutoff'):
      value = getattr(self, name)
      if not (math.isfinite(value) and value > 0):
        raise ValueError(
          f'--smooth_{name}={value} must be positive (Hz): a cutoff frequency, e.g. 1.0; '
          'lower smooths more'
        )
    if not (math.isfinite(self.beta) and self.beta >= 0):
      raise ValueError(
        f'--smooth_beta={self.beta} must be zero or positive: how fast the cutoff rises with '
        'speed, e.g. 1.0; 0 turns the speed adaptation off'
      )


def _alpha(cutoff: float | np.ndarray, dt: float) -> float | np.ndarray:
  """The smoothing factor of a first-order low-pass at `cutoff` Hz sampled `dt` seconds apart."""
  tau = 1.0 / (2.0 * np.pi * cutoff)
  return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
  """One-Euro filters over an array of any shape: each element its own scalar filter.

  Each call follows the paper's pseudo-code (Casiez et al. 2012, Appendix A, Algorithm 1), with
  its rate 1 / dt taken from the timestamps, in this order:

    first call:  x_hat = x; dx_hat = 0 (the derivative's low-pass starts at 0)
    later calls: dt = time_s - previous time_s
                 dx = (x - x_hat_prev) / dt                     # from the previous *filtered* x
                 dx_hat = dx_hat_prev + alpha(d_cutoff) * (dx - dx_hat_prev)
                 cutoff = min_cutoff + beta * |dx_hat| / scale
                 x_hat = x_hat_prev + alpha(cutoff) * (x - x_hat_prev)
    with alpha(fc) = 1 / (1 + tau / dt), tau = 1 / (2 pi fc).

  `scale` makes `beta` independent of the units: the speed |dx_hat| (units / s) is divided by it,
  so the same beta suits joints in pixels with scale = the person's box side and joints in mm with
  scale = 1000.
  """

  def __init__(self, params: OneEuroParams | None = None):
    self.params = params or OneEuroParams()
    self._time_s: float | None = None
    self._x_hat: np.ndarray | None = None
    self._dx_hat: np.ndarray | None = None

  @property
  def shape(self) -> tuple[int, ...] | None:
    """The shape every call must give, fixed by the first call; None before it."""
    return None if self._x_hat is None else self._x_hat.shape

  def __call__(self, time_s: float, x: np.ndarray, scale: float | np.ndarray = 1.0) -> np.ndarray:
    """Filters one sample.

    Args:
      time_s: the sample's time in seconds; larger than the previous call's.
      x: the sample, an array of any shape, the same on every call (e.g. (16, 2) pixels).
      scale: a positive scalar (or an array broadcasting against x), in x's units: the speed is
        measured in scale units per second before beta multiplies it.

    Returns:
      The filtered sample, x's shape, float64 (or x's float dtype).

    Raises:
      ValueError: time not increasing, a shape change, non-finite x or a non-positive scale.
    """
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    x64 = x.astype(np.float64)
    # A NaN would stay in the filter's state for good: refuse it rather than poison the track.
    if not np.isfinite(x64).all():
      raise ValueError(f'OneEuroFilter: the sample at t={time_s} s has non-finite values')
    if self._x_hat is None:
      self._time_s, self._x_hat, self._dx_hat = float(time_s), x64, np.zeros_like(x64)
      return x64.astype(dtype)
    if x64.shape != self._x_hat.shape:
      raise ValueError(
        f'OneEuroFilter: the sample shape changed from {self._x_hat.shape} to {x64.shape}; '
        'use one filter per array'
      )
    dt = float(time_s) - self._time_s
    if not dt > 0:
      raise ValueError(
        f'OneEuroFilter: timestamps must increase, got t={time_s} s after t={self._time_s} s'
      )
    scale = np.asarray(scale, np.float64)
    if not (np.isfinite(scale).all() and (scale > 0).all()):
      raise ValueError(f'OneEuroFilter: scale must be positive and finite, got {scale}')
    p = self.params
    dx = (x64 - self._x_hat) / dt
    dx_hat = self._dx_hat + _alpha(p.d_cutoff, dt) * (dx - self._dx_hat)
    cutoff = p.min_cutoff + p.beta * np.abs(dx_hat) / scale
    x_hat = self._x_hat + _alpha(cutoff, dt) * (x64 - self._x_hat)
    self._time_s, self._x_hat, self._dx_hat = float(time_s), x_hat, dx_hat
    return x_hat.astype(dtype)


@dataclasses.dataclass
class _Track:
  id: int
  box: np.ndarray  # (4,) the last box seen, (x, y, w, h) pixels
  time_s: float  # when it was last seen
  filters: dict[str, OneEuroFilter]  # pose key -> its filter; empty without smoothing


class Tracker:
  """Matches people across video frames into tracks and, optionally, smooths their joints.

  Matching is greedy on the IoU between this frame's boxes and each live track's last box: the
  highest-IoU pair first, then the next among the people and tracks still free, down to
  `min_iou`. A person left unmatched starts a new track. A track unseen for more than
  `max_missing_s` is dropped, so a person returning later gets a new id and fresh filters.
  """

  def __init__(
    self,
    smoothing: OneEuroParams | None = None,
    *,
    min_iou: float = 0.3,
    max_missing_s: float = 0.5,
  ):
    """Creates a tracker.

    Args:
      smoothing: the One-Euro filters' parameters, or None to leave the poses as they are.
      min_iou: the least IoU, in (0, 1], at which a box continues a track.
      max_missing_s: how long, in seconds, a track survives unseen.
    """
    if not 0 < min_iou <= 1:
      raise ValueError(f'Tracker: min_iou={min_iou} must be in (0, 1], e.g. 0.3')
    if not (math.isfinite(max_missing_s) and max_missing_s >= 0):
      raise ValueError(f'Tracker: max_missing_s={max_missing_s} must be >= 0 seconds, e.g. 0.5')
    self.smoothing = smoothing
    self.min_iou = float(min_iou)
    self.max_missing_s = float(max_missing_s)
    self._tracks: list[_Track] = []
    self._next_id = 0
    self._time_s: float | None = None

  def update(
    self, time_s: float, boxes: Sequence[Box], poses: Sequence[dict]
  ) -> tuple[list[int], list[dict]]:
    """Assigns this frame's people to tracks and smooths their poses.

    Args:
      time_s: the frame's time in seconds; larger than the previous frame's.
      boxes: each person's box (x, y, w, h) in pixels (COCO style), w and h positive.
      poses: each person's arrays, in the order of `boxes`: 'joints_2d' (16, 2) pixels and,
        absent for 2D-only models, 'joints_3d' (16, 3) mm. Other keys pass through.

    Returns:
      Each person's track id (ints from 0 in order of first appearance, never reused) and their
      poses: with smoothing, new dicts whose 'joints_2d' and 'joints_3d' are filtered by the
      track's filters (2D at the scale of the box's larger side, 3D at 1000 mm); without, the
      poses given. The inputs are not modified.

    Raises:
      ValueError: time not increasing, boxes and poses of different lengths, a bad box, or a
        pose array whose shape differs from its track's earlier ones. The tracker is unchanged.
    """
    time_s = float(time_s)
    if self._time_s is not None and not time_s > self._time_s:
      raise ValueError(
        f'Tracker: timestamps must increase, got t={time_s} s after t={self._time_s} s'
      )
    if len(boxes) != len(poses):
      raise ValueError(f'Tracker: {len(boxes)} boxes but {len(poses)} poses')
    box_array = np.asarray(boxes, np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
    if len(box_array) != len(boxes) or not np.isfinite(box_array).all():
      raise ValueError(f'Tracker: boxes must be finite (x, y, w, h) each, got {boxes!r}')
    if (box_array[:, 2:] <= 0).any():
      raise ValueError(f'Tracker: box widths and heights must be positive, got {boxes!r}')

    live = [t for t in self._tracks if time_s - t.time_s <= self.max_missing_s]
    matched = self._match(box_array, live)
    if self.smoothing is not None:
      # Checked before anything changes, so that an error leaves the tracker as it was.
      for person, pose in enumerate(poses):
        track = matched.get(person)
        for key in _SMOOTHED.keys() & pose.keys():
          if not np.isfinite(pose[key]).all():
            raise ValueError(f'Tracker: person {person} {key} has non-finite values')
          f = track.filters.get(key) if track else None
          if f is not None and np.shape(pose[key]) != f.shape:
            raise ValueError(
              f'Tracker: track {track.id} {key} shape changed from {f.shape} to '
              f'{np.shape(pose[key])}'
            )

    self._time_s = time_s
    self._tracks = live
    ids, out = [], []
    for person, (box, pose) in enumerate(zip(box_array, poses)):
      track = matched.get(person)
      if track is None:
        track = _Track(self._next_id, box, time_s, {})
        self._next_id += 1
        self._tracks.append(track)
      track.box, track.time_s = box, time_s
      ids.append(track.id)
      out.append(pose if self.smoothing is None else self._smooth(track, time_s, box, pose))
    return ids, out

  def _match(self, boxes: np.ndarray, tracks: list[_Track]) -> dict[int, _Track]:
    """Greedy IoU matching: person index -> track, at most one each way."""
    if not len(boxes) or not tracks:
      return {}
    overlap = iou(boxes, np.stack([t.box for t in tracks]))
    # Highest IoU first; ties in person then track order (a stable sort of the row-major pairs).
    order = np.argsort(-overlap, axis=None, kind='stable')
    matched, used = {}, set()
    for flat in order:
      person, k = divmod(int(flat), len(tracks))
      if overlap[person, k] < self.min_iou:
        break
      if person not in matched and k not in used:
        matched[person] = tracks[k]
        used.add(k)
    return matched

  def _smooth(self, track: _Track, time_s: float, box: np.ndarray, pose: dict) -> dict:
    """The pose with its joints filtered by the track's filters (a new dict)."""
    out = dict(pose)
    for key, scale in _SMOOTHED.items():
      if key not in pose:
        continue
      f = track.filters.get(key)
      if f is None:
        f = track.filters[key] = OneEuroFilter(self.smoothing)
      out[key] = f(time_s, pose[key], float(box[2:].max()) if scale is None else scale)
    return out

"""Counting repetitions of a movement (squats, curls, ...) in one angle over time.

The angle is smoothed (a centred moving average over SMOOTH_S, gaps left out), then counted with
hysteresis between two thresholds set from the clip's own range: the 5th and 95th percentiles
p5, p95 of the smoothed angle put the low threshold at p5 + LOW_FRACTION * (p95 - p5) and the high
one at p5 + HIGH_FRACTION * (p95 - p5). The side the angle spends most time on is the rest (for
knee flexion in squats: low, standing); a repetition leaves the rest band, crosses the far
threshold and comes back; its start and end are then moved out of the threshold crossings to the
rest's extremes on either side (as long as the smoothed angle keeps falling towards rest), so that
its duration, minimum and maximum span the whole cycle. A movement whose range p95 - p5 is below
MIN_RANGE_DEG counts none (a still person, jitter), and so does a crossing that never comes back
before the clip ends.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SMOOTH_S = 0.2
LOW_FRACTION = 0.3
HIGH_FRACTION = 0.7
MIN_RANGE_DEG = 20.0


@dataclasses.dataclass(frozen=True)
class Repetition:
  """One repetition; angles in degrees, of the measured (unsmoothed) angle."""

  start_frame: int  # indices into the series given to `count`
  end_frame: int
  start_s: float
  end_s: float
  min_deg: float
  max_deg: float

  @property
  def duration_s(self) -> float:
    return self.end_s - self.start_s

  def as_dict(self) -> dict:
    return {
      'start_s': round(self.start_s, 3),
      'end_s': round(self.end_s, 3),
      'duration_s': round(self.duration_s, 3),
      'min_deg': round(self.min_deg, 1),
      'max_deg': round(self.max_deg, 1),
    }


def smooth(time_s: np.ndarray, angle: np.ndarray, window_s: float = SMOOTH_S) -> np.ndarray:
  """Centred moving average of `angle` (T,) over window_s seconds, NaNs left out (a frame whose
  window holds no measurement stays NaN)."""
  if len(angle) < 2:
    return angle.astype(np.float64)
  frame_s = float(np.median(np.diff(time_s)))
  half = max(int(round(window_s / frame_s / 2)), 0) if frame_s > 0 else 0
  measured = np.isfinite(angle)
  sums = np.concatenate([[0.0], np.cumsum(np.where(measured, angle, 0.0))])
  counts = np.concatenate([[0], np.cumsum(measured)])
  index = np.arange(len(angle))
  lo, hi = np.maximum(index - half, 0), np.minimum(index + half + 1, len(angle))
  n = counts[hi] - counts[lo]
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(n > 0, (sums[hi] - sums[lo]) / n, np.nan)


def count(
  time_s: np.ndarray, angle: np.ndarray, min_range_deg: float = MIN_RANGE_DEG
) -> tuple[list[Repetition], dict]:
  """The repetitions in one track's angle.

  Args:
    time_s: (T,) seconds of each frame; angle: (T,) degrees, NaN where not measured.
    min_range_deg: the smallest movement range counted.

  Returns:
    The repetitions in order, and the thresholds used: {'low_deg', 'high_deg', 'rest': 'low' or
    'high', 'range_deg'} (None values when the movement is below min_range_deg or unmeasured).
  """
  time_s = np.asarray(time_s, np.float64)
  angle = np.asarray(angle, np.float64)
  smoothed = smooth(time_s, angle)
  finite = smoothed[np.isfinite(smoothed)]
  facts = {'low_deg': None, 'high_deg': None, 'rest': None, 'range_deg': None}
  if not len(finite):
    return [], facts
  p5, p95 = np.percentile(finite, [5, 95])
  facts['range_deg'] = round(float(p95 - p5), 1)
  if p95 - p5 < min_range_deg:
    return [], facts
  low, high = p5 + LOW_FRACTION * (p95 - p5), p5 + HIGH_FRACTION * (p95 - p5)
  rest_low = np.mean(finite <= (p5 + p95) / 2) >= 0.5
  facts.update(low_deg=round(float(low), 1), high_deg=round(float(high), 1))
  facts['rest'] = 'low' if rest_low else 'high'
  # Mirrored so that the rest band is always below `low`.
  signal, low, high = (smoothed, low, high) if rest_low else (-smoothed, -high, -low)
  crossings = []
  resting, out = False, False
  last_rest = None
  for i, value in enumerate(signal):
    if not np.isfinite(value):
      continue
    if value <= low:
      if out:
        crossings.append((last_rest, i))
        out = False
      resting, last_rest = True, i
    elif value >= high and resting:
      resting, out = False, True
  reps = []
  for n, (start, end) in enumerate(crossings):
    earliest = reps[-1].end_frame if reps else 0
    latest = crossings[n + 1][0] if n + 1 < len(crossings) else len(signal) - 1
    start = _towards_rest(signal, start, -1, earliest)
    end = _towards_rest(signal, end, 1, latest)
    segment = angle[start : end + 1]
    reps.append(
      Repetition(
        start_frame=start,
        end_frame=end,
        start_s=float(time_s[start]),
        end_s=float(time_s[end]),
        min_deg=float(np.nanmin(segment)),
        max_deg=float(np.nanmax(segment)),
      )
    )
  return reps, facts


def _towards_rest(signal: np.ndarray, index: int, step: int, bound: int) -> int:
  """From `index`, steps (-1 back, +1 forward) while the signal keeps falling (towards rest),
  without passing `bound` or a gap; it stops at a plateau's edge, where the movement starts."""
  while index != bound:
    following = signal[index + step]
    if not np.isfinite(following) or following >= signal[index]:
      break
    index += step
  return index

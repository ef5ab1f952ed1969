"""How long things take, as commands print it."""

from __future__ import annotations

import math


def duration(seconds: float) -> str:
  """Seconds as '4m05s', or '2h03m' from an hour on."""
  seconds = int(round(seconds))
  return (
    f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
    if seconds >= 3600
    else f'{seconds // 60}m{seconds % 60:02d}s'
  )


def mean(values) -> float | None:
  """The mean of the values that are present (not None, not NaN); None if there are none."""
  present = [v for v in values if v is not None and not math.isnan(v)]
  return sum(present) / len(present) if present else None

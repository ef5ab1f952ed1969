r"""Movement analysis speed: hpe-analyze on a long clip's frames file, every file and the report
included.

  python tools/benchmark_analysis.py [--minutes=10 --fps=30 --people=2 --video_mb=40] \
      [--max_seconds=10]

The frames file is the true joints of a synthetic squat clip (hpe-make-clip's, 10 s) repeated to
--minutes, with --people tracks, with every field hpe-predict writes; --video_mb of random bytes
stand in for the overlay video the report embeds (its cost is its size). Prints one JSON line:
frames, tracks, seconds (the median of --repeats analyses), and each output's size; with
--max_seconds, FAIL and exit 1 when slower.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from absl import flags
import numpy as np

from hpe_jax import cli

_MINUTES = flags.DEFINE_float('minutes', 10.0, 'Length of the analysed clip.', lower_bound=0.1)
_FPS = flags.DEFINE_float('fps', 30.0, 'Its frame rate.', lower_bound=1.0)
_PEOPLE = flags.DEFINE_integer('people', 2, 'Tracks (people squatting).', lower_bound=1)
_VIDEO_MB = flags.DEFINE_float(
  'video_mb', 40.0, 'Size of the stand-in overlay video embedded in the report.', lower_bound=0.0
)
_REPEATS = flags.DEFINE_integer(
  'repeats', 3, 'Timed analyses; the median is reported.', lower_bound=1
)
_MAX_SECONDS = flags.DEFINE_float('max_seconds', None, 'Fail above this many seconds.')


def _frames_file(folder: str) -> tuple[str, int]:
  """A --minutes frames file: a 10 s squat clip's true joints, repeated."""
  from hpe_jax.data.synthetic import clip  # pylint: disable=g-import-not-at-top

  piece = int(round(10 * _FPS.value))
  labels = clip.write_clip(
    os.path.join(folder, 'piece.mp4'),
    frames=piece,
    width=160,
    height=120,
    fps=_FPS.value,
    people=_PEOPLE.value,
    motion='squat',
    reps=5,
  )
  clip.write_truth(labels, os.path.join(folder, 'piece.jsonl'))
  with open(os.path.join(folder, 'piece.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  # Every field hpe-predict writes (records.person_record), with 4-decimal scores: its
  # lines' length, which the parsing time follows.
  rng = np.random.default_rng(0)
  for line in lines:
    for person in line['people']:
      x, y, w, h = person['box']
      side = round(1.25 * max(w, h), 3)
      person.update(box_score=0.9, square={'center': [x + w / 2, y + h / 2], 'side': side})
      person['scores'] = np.round(rng.uniform(0.5, 1.0, 16), 4).tolist()
  total = int(round(_MINUTES.value * 60 * _FPS.value))
  path = os.path.join(folder, 'long.jsonl')
  with open(path, 'w') as f:
    for frame in range(total):
      line = dict(lines[frame % piece], frame=frame, time_s=round(frame / _FPS.value, 4))
      f.write(json.dumps(line) + '\n')
  with open(os.path.join(folder, 'piece.json')) as f:
    header = json.load(f)
  overlay = 'long_2d.mp4'
  with open(os.path.join(folder, overlay), 'wb') as f:
    f.write(os.urandom(int(_VIDEO_MB.value * 2**20)))
  with open(os.path.join(folder, 'long.json'), 'w') as f:
    json.dump(dict(header, frames=total, frames_file='long.jsonl', overlay_file=overlay), f)
  return path, total


def main(args: list[str]) -> None:
  del args
  from hpe_jax.analysis import analyze_run  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as folder:
    path, frames = _frames_file(folder)
    seconds = []
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      summary = analyze_run.analyze(path, reps='knee_flexion_left', log=lambda line: None)
      seconds.append(time.perf_counter() - start)
    sizes = {
      os.path.basename(p): os.path.getsize(p)
      for value in summary['files'].values()
      for p in (value if isinstance(value, list) else [value])
    }
  result = {
    'frames': frames,
    'tracks': len(summary['tracks']),
    'seconds': round(sorted(seconds)[len(seconds) // 2], 2),
    'video_mb': _VIDEO_MB.value,
    'bytes': sizes,
  }
  print(json.dumps(result), flush=True)
  if _MAX_SECONDS.value is not None and result['seconds'] > _MAX_SECONDS.value:
    print(f'FAIL: {result["seconds"]} s > --max_seconds={_MAX_SECONDS.value}', flush=True)
    sys.exit(1)


def run() -> None:
  cli.run(main)


if __name__ == '__main__':
  run()

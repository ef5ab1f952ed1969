"""Video prediction throughput: frames/s end to end (decode, crop, predict, track, draw, encode,
write) and hpe_jax's predict step against the eager PyTorch peer's forward pass on the same crops.

The CPU targets (the quick model in real time, flip test on; the predict step 1.2x the peer's):
  python tools/benchmark_video.py --config=configs/finetune.py --min_frames_per_s=30 \
      --min_ratio_eager=1.2
ResNet-50 at 256 px (the paper's model):
  python tools/benchmark_video.py --config=configs/finetune.py:paper --frames=60
On a GPU (the peer runs on torch.cuda when it is there):
  python tools/benchmark_video.py --config=configs/finetune.py:paper --batch_size=64 --frames=600

Without --video it writes a synthetic clip of two walking people (hpe-make-clip's) and its boxes.
tools/lib/benchmark_video.py says what each JSON line measures; the model has fresh weights.
With --min_frames_per_s (the whole-frame video line) or --min_ratio_eager it prints FAIL and exits
1 when a figure is below it. --peer needs torch (pip install -e .[torch]).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from hpe_jax import cli

# `python tools/X.py` puts tools/ on the path, not the repository root that holds tools.lib.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (path[:arg]).')
_VIDEO = flags.DEFINE_string('video', None, 'A video file (default: a synthetic clip).')
_BOXES = flags.DEFINE_string(
  'boxes', None, 'With --video: its person boxes ("frame" entries) for the video_boxes line.'
)
_FRAMES = flags.DEFINE_integer('frames', 300, 'Frames of the synthetic clip.', lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 16, 'People per device call.', lower_bound=1)
_PEER = flags.DEFINE_bool('peer', True, "Also time the eager PyTorch peer's forward pass.")
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed calls per repeat.', lower_bound=1)
_REPEATS = flags.DEFINE_integer(
  'repeats', 3, 'Timed repeats; the median is reported.', lower_bound=1
)
_MIN_FPS = flags.DEFINE_float(
  'min_frames_per_s', 0.0, 'FAIL (exit 1) if the whole-frame video frames/s is below this.'
)
_MIN_RATIO = flags.DEFINE_float(
  'min_ratio_eager', 0.0, 'FAIL (exit 1) if predict step / eager peer forward is below this.'
)


def main(args: list[str]) -> None:
  del args
  if _BOXES.value and not _VIDEO.value:
    raise app.UsageError('--boxes goes with --video (the synthetic clip has its own)')
  if _MIN_RATIO.value and not _PEER.value:
    raise app.UsageError('--min_ratio_eager needs --peer')
  if _PEER.value and importlib.util.find_spec('torch') is None:
    raise app.UsageError('--peer needs torch: pip install -e ".[torch]", or give --nopeer')
  # Before jax starts a GPU backend: leave GPU memory to the torch peer, in this process.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  from tools.lib import benchmark_video  # pylint: disable=g-import-not-at-top  (fast --help)

  lines = benchmark_video.benchmark_video(
    _CONFIG.value,
    video_path=_VIDEO.value,
    boxes_path=_BOXES.value,
    frames=_FRAMES.value,
    batch_size=_BATCH_SIZE.value,
    peer=_PEER.value,
    steps=_STEPS.value,
    repeats=_REPEATS.value,
    log=lambda line: print(line, flush=True),
  )
  failures = []
  fps = lines['video_whole_frame']['frames_per_s']
  if fps < _MIN_FPS.value:
    failures.append(f'video frames/s {fps} < {_MIN_FPS.value}')
  ratio = lines['summary'].get('predict_step_over_torch_eager_forward')
  if _MIN_RATIO.value and ratio < _MIN_RATIO.value:
    failures.append(f'predict step / torch eager forward = {ratio} < {_MIN_RATIO.value}')
  if failures:
    print('FAIL: ' + '; '.join(failures), flush=True)
    sys.exit(1)
  if _MIN_FPS.value or _MIN_RATIO.value:
    print('PASS', flush=True)


def run() -> None:
  cli.run(main, required=('config',))


if __name__ == '__main__':
  run()

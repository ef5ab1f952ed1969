"""Keeping the device fed: input pipeline images/s, and the train loop with the real pipeline
against the same step fed from memory.

  python tools/benchmark_pipeline.py --config=configs/finetune.py --workers=0,1,2
  python tools/benchmark_pipeline.py --config=configs/finetune.py:paper --workers=0,4,8,16 \\
      --config.data.train_2d=mpii --config.data.train_3d=human36m

Prints one JSON line per measurement:
- `pipeline`: batches drawn from the grain pipeline alone (decode, augment, batch) with
  data.workers worker processes (0: threads in this process), images/s and per CPU core used;
- `loop`: the jitted train step fed by the pipeline (as hpe-train runs it) and fed one batch
  kept in device memory; `gap` = 1 - pipeline-fed / memory-fed images/s (under 5% means the
  pipeline keeps up with the device);
- `parts` (with --parts=N): milliseconds per image of each part on one core.
Rates are medians over repeats after one warm-up batch (which also compiles the step).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from hpe_jax import cli

# `python tools/X.py` puts tools/ on the path, not the repository root that holds tools.lib.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (path[:arg]).')
_WORKERS = flags.DEFINE_list('workers', ['0'], 'data.workers values to measure the pipeline with.')
flags.register_validator(
  'workers',
  lambda values: all(v.isdigit() for v in values),
  message='--workers takes worker counts >= 0, comma-separated: 0,2,4',
)
_BATCHES = flags.DEFINE_integer(
  'batches',
  50,
  'Timed batches per repeat (many more than the '
  'prefetch buffers hold, or their contents inflate the rate).',
  lower_bound=1,
)
_REPEATS = flags.DEFINE_integer(
  'repeats', 3, 'Timed repeats; the median is reported.', lower_bound=1
)
_LOOP = flags.DEFINE_bool('loop', True, 'Also measure the train loop (pipeline vs memory).')
_PARTS = flags.DEFINE_integer(
  'parts',
  0,
  'Also time each part of the pipeline on one core over this many examples (a `parts` line: '
  'read, parse, decode, warp and labels, batch, the rest and the whole, ms per image); 0: no.',
  lower_bound=0,
)


def main(args: list[str]) -> None:
  del args
  # pylint: disable=g-import-not-at-top  (fast --help)
  from hpe_jax import default_config
  from tools.lib import benchmark_pipeline

  run = default_config.describe(_CONFIG.value)
  workers = [int(w) for w in _WORKERS.value]
  for line in benchmark_pipeline.pipeline_rates(
    run, workers, batches=_BATCHES.value, repeats=_REPEATS.value
  ):
    print(json.dumps(line), flush=True)
  if _PARTS.value:
    print(json.dumps(benchmark_pipeline.part_times(run, images=_PARTS.value)), flush=True)
  if _LOOP.value:  # with the last worker count measured
    loop = benchmark_pipeline.loop_gap(
      benchmark_pipeline.reading(run, workers=workers[-1]),
      batches=_BATCHES.value,
      repeats=_REPEATS.value,
    )
    print(json.dumps(loop), flush=True)


def run() -> None:
  cli.run(main, required=('config',))


if __name__ == '__main__':
  run()

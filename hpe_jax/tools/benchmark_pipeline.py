"""Keeping the device fed: input pipeline images/s, and the train loop with the real pipeline
against the same step fed from memory.

  hpe-benchmark-pipeline --config=configs/finetune.py --workers=0,1,2
  hpe-benchmark-pipeline --config=configs/finetune.py:paper --workers=0,4,8,16 \\
      --config.data.train_2d=mpii --config.data.train_3d=human36m

(`python tools/benchmark_pipeline.py` and `python -m hpe_jax.tools.benchmark_pipeline` are the
same.) Prints one JSON line per measurement:
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

from absl import flags
from ml_collections import config_flags

from hpe_jax import cli

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
  from hpe_jax.perf import pipeline_benchmark

  run = default_config.describe(_CONFIG.value)
  workers = [int(w) for w in _WORKERS.value]
  for line in pipeline_benchmark.pipeline_rates(
    run, workers, batches=_BATCHES.value, repeats=_REPEATS.value
  ):
    print(json.dumps(line), flush=True)
  if _PARTS.value:
    print(json.dumps(pipeline_benchmark.part_times(run, images=_PARTS.value)), flush=True)
  if _LOOP.value:  # with the last worker count measured
    loop = pipeline_benchmark.loop_gap(
      pipeline_benchmark.reading(run, workers=workers[-1]),
      batches=_BATCHES.value,
      repeats=_REPEATS.value,
    )
    print(json.dumps(loop), flush=True)


def run() -> None:
  cli.run(main, required=('config',))


if __name__ == '__main__':
  run()

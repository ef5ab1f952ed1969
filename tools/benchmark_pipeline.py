"""Keeping the device fed: input pipeline images/s, and the train loop with the real pipeline
against the same step fed from memory.

  python tools/benchmark_pipeline.py --config=configs/finetune.py --workers=0,1,2
  python tools/benchmark_pipeline.py --config=configs/finetune.py:paper --workers=0,4,8,16 \
      --config.data.train_2d=mpii --config.data.train_3d=human36m

Prints one JSON line per measurement:
- `pipeline`: batches drawn from the grain pipeline alone (decode, augment, batch) with
  data.workers worker processes (0: threads in this process), images/s and per CPU core used;
- `loop`: the jitted train step fed by the pipeline (as hpe_jax.main runs it) and fed one batch
  kept in device memory; `gap` = 1 - pipeline-fed / memory-fed images/s (under 5% means the
  pipeline keeps up with the device).
Rates are medians over repeats after one warm-up batch (which also compiles the step).
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from hpe_jax import cli
from hpe_jax import default_config
from hpe_jax.data import pipeline
from hpe_jax.training import step as step_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (path[:arg]).')
_WORKERS = flags.DEFINE_list('workers', ['0'], 'data.workers values to measure the pipeline with.')
flags.register_validator('workers', lambda values: all(v.isdigit() for v in values),
                         message='--workers takes worker counts >= 0, comma-separated: 0,2,4')
_BATCHES = flags.DEFINE_integer('batches', 50, 'Timed batches per repeat (many more than the '
                                 'prefetch buffers hold, or their contents inflate the rate).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repeats; the median is reported.')
_LOOP = flags.DEFINE_bool('loop', True, 'Also measure the train loop (pipeline vs memory).')


def _median_rate(run_batches, batch_size: int) -> float:
  """images/s of run_batches(n) (which runs n batches synchronously): the median over repeats,
  after one warm-up batch."""
  run_batches(1)
  rates = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    run_batches(_BATCHES.value)
    rates.append(_BATCHES.value * batch_size / (time.perf_counter() - start))
  return float(np.median(rates))


def main(argv):
  del argv
  config = _CONFIG.value
  batch_size = config.train.batch_size
  cores = os.cpu_count()
  common = {'config_model': config.model.name, 'image_size': config.data.image_size,
            'batch_size': batch_size, 'train_2d': config.data.train_2d,
            'train_3d': config.data.train_3d, 'cpu_cores': cores}
  for workers in map(int, _WORKERS.value):
    config.data.workers = workers
    iterator = iter(pipeline.train_dataset(config))
    rate = _median_rate(lambda n, it=iterator: [next(it) for _ in range(n)], batch_size)
    used = max(workers, 1) if workers else min(config.data.threads, cores)
    print(json.dumps({'measure': 'pipeline', **common, 'workers': workers,
                      'threads': config.data.threads, 'images_per_s': round(rate, 1),
                      'images_per_s_per_core': round(rate / min(used, cores), 1)}), flush=True)
  if not _LOOP.value:
    return
  mesh = jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  defs, state = step_lib.init_state(config)
  state = {'state': jax.device_put(state, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))}
  train_step, _ = step_lib.jit_steps(defs, state['state'], mesh, config)
  iterator = iter(pipeline.train_dataset(config))
  in_memory = pipeline.to_global(next(iterator), batch_sharding)

  def run(n, feed):
    for _ in range(n):
      state['state'], metrics = train_step(state['state'], feed())
    jax.block_until_ready(metrics)

  from_pipeline = _median_rate(
      lambda n: run(n, lambda: pipeline.to_global(next(iterator), batch_sharding)), batch_size)
  from_memory = _median_rate(lambda n: run(n, lambda: in_memory), batch_size)
  print(json.dumps({'measure': 'loop', **common, 'workers': config.data.workers,
                    'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
                    'pipeline_fed_images_per_s': round(from_pipeline, 1),
                    'memory_fed_images_per_s': round(from_memory, 1),
                    'gap': round(1 - from_pipeline / from_memory, 3)}), flush=True)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main, flags_parser=cli.parse_flags)

"""Keeping the device fed: input pipeline images/s, and the train loop with the real pipeline
against the same step fed from memory.

- `pipeline_rates`: batches drawn from the grain pipeline alone (decode, augment, batch) with
  data.workers worker processes (0: threads in this process), images/s and per CPU core used;
- `loop_gap`: the jitted train step fed by the pipeline (as training runs it) and fed one batch
  kept in device memory; `gap` = 1 - pipeline-fed / memory-fed images/s (under 5% means the
  pipeline keeps up with the device).
Rates are medians over repeats after one warm-up batch (which also compiles the step).
"""

from __future__ import annotations

import os
import time
from typing import Any
from typing import Callable
from typing import Iterator

import jax
import ml_collections
import numpy as np

from hpe_jax.data import pipeline
from hpe_jax.perf import benchmark
from hpe_jax.training import step as step_lib


def median_rate(
  run_batches: Callable[[int], Any], batch_size: int, *, batches: int, repeats: int
) -> float:
  """images/s of run_batches(n) (which runs n batches synchronously): the median over `repeats`
  runs of `batches` batches, after one warm-up batch."""
  run_batches(1)
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    run_batches(batches)
    rates.append(batches * batch_size / (time.perf_counter() - start))
  return float(np.median(rates))


def _common_fields(config: ml_collections.ConfigDict) -> dict:
  return {
    'config_model': config.model.name,
    'image_size': config.data.image_size,
    'batch_size': config.train.batch_size,
    'train_2d': config.data.train_2d,
    'train_3d': config.data.train_3d,
    'cpu_cores': os.cpu_count(),
  }


def pipeline_rates(
  config: ml_collections.ConfigDict, workers: list[int], *, batches: int, repeats: int
) -> Iterator[dict]:
  """One JSON-able line per worker count: the pipeline's images/s alone. Sets
  config.data.workers (to the last count when done)."""
  batch_size = config.train.batch_size
  cores = os.cpu_count()
  for count in workers:
    config.data.workers = count
    iterator = iter(pipeline.train_dataset(config))
    rate = median_rate(
      lambda n, it=iterator: [next(it) for _ in range(n)],
      batch_size,
      batches=batches,
      repeats=repeats,
    )
    used = max(count, 1) if count else min(config.data.threads, cores)
    yield {
      'measure': 'pipeline',
      **_common_fields(config),
      'workers': count,
      'threads': config.data.threads,
      'images_per_s': round(rate, 1),
      'images_per_s_per_core': round(rate / min(used, cores), 1),
    }


def loop_gap(config: ml_collections.ConfigDict, *, batches: int, repeats: int) -> dict:
  """The train step fed by the pipeline (config.data.workers workers) against the same step fed
  one batch from device memory -> one JSON-able line with both rates and their gap."""
  batch_size = config.train.batch_size
  mesh = benchmark.data_mesh()
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  defs, state = step_lib.init_state(config)
  state = {
    'state': jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  }
  train_step, _ = step_lib.jit_steps(defs, state['state'], mesh, config)
  iterator = iter(pipeline.train_dataset(config))
  in_memory = pipeline.to_global(next(iterator), batch_sharding)

  def run(n, feed):
    for _ in range(n):
      state['state'], metrics = train_step(state['state'], feed())
    jax.block_until_ready(metrics)

  from_pipeline = median_rate(
    lambda n: run(n, lambda: pipeline.to_global(next(iterator), batch_sharding)),
    batch_size,
    batches=batches,
    repeats=repeats,
  )
  from_memory = median_rate(
    lambda n: run(n, lambda: in_memory), batch_size, batches=batches, repeats=repeats
  )
  return {
    'measure': 'loop',
    **_common_fields(config),
    'workers': config.data.workers,
    'devices': benchmark.jax_devices(),
    'pipeline_fed_images_per_s': round(from_pipeline, 1),
    'memory_fed_images_per_s': round(from_memory, 1),
    'gap': round(1 - from_pipeline / from_memory, 3),
  }

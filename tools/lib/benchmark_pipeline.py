"""Keeping the device fed: input pipeline images/s, and the train loop with the real pipeline
against the same step fed from memory.

- `pipeline_rates`: batches drawn from the grain pipeline alone (decode, augment, batch) with
  data.workers worker processes (0: threads in this process), images/s and per CPU core used;
- `loop_gap`: the jitted train step fed by the pipeline (as training runs it) and fed one batch
  kept in device memory; `gap` = 1 - pipeline-fed / memory-fed images/s (under 5% means the
  pipeline keeps up with the device);
- `part_times`: where one core's time per image goes.
Rates are medians over repeats after one warm-up batch (which also compiles the step).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any
from typing import Callable
from typing import Iterator

import cv2
import jax
import ml_collections
import numpy as np

from hpe_jax import default_config
from hpe_jax.data import datasets
from hpe_jax.data import features
from hpe_jax.data import pipeline
from hpe_jax.training import step as step_lib
from tools.lib import benchmark


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


def reading(
  run: default_config.RunSpec, *, workers: int, threads: int | None = None
) -> default_config.RunSpec:
  """`run` with its pipeline read by `workers` worker processes (data.workers) and `threads`
  threads (data.threads; None: its own)."""
  config = ml_collections.ConfigDict(run.config.to_dict())
  config.data.workers = workers
  config.data.threads = config.data.threads if threads is None else threads
  return dataclasses.replace(run, config=config)


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
  run: default_config.RunSpec, workers: list[int], *, batches: int, repeats: int
) -> Iterator[dict]:
  """One JSON-able line per worker count: the pipeline's images/s alone."""
  batch_size = run.config.train.batch_size
  cores = os.cpu_count()
  for count in workers:
    counted = reading(run, workers=count)
    config = counted.config
    iterator = iter(pipeline.train_dataset(counted))
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


def loop_gap(run: default_config.RunSpec, *, batches: int, repeats: int) -> dict:
  """The train step fed by the pipeline (data.workers workers) as training feeds it, through
  `pipeline.DeviceBatches`, against the same step fed one batch from device memory -> one
  JSON-able line with both rates and their gap."""
  config = run.config
  batch_size = config.train.batch_size
  mesh = benchmark.data_mesh()
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  defs, state = step_lib.init_state(config)
  state = {
    'state': jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  }
  train_step, _ = step_lib.jit_steps(defs, state['state'], mesh, config)
  device_batches = pipeline.DeviceBatches(iter(pipeline.train_dataset(run)), batch_sharding)
  in_memory = next(device_batches)

  def steps(n, feed):
    for _ in range(n):
      state['state'], metrics = train_step(state['state'], feed())
    jax.block_until_ready(metrics)

  from_pipeline = median_rate(
    lambda n: steps(n, lambda: next(device_batches)),
    batch_size,
    batches=batches,
    repeats=repeats,
  )
  from_memory = median_rate(
    lambda n: steps(n, lambda: in_memory), batch_size, batches=batches, repeats=repeats
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


def part_times(run: default_config.RunSpec, *, images: int) -> dict:
  """Milliseconds per image of each part of the pipeline on one core (OpenCV at one thread), over
  `images` examples of the first training source (2D if any), each part timed alone: reading the
  record, parsing it, decoding the JPEG, warping it with the labels (the augmented transform
  less the decode), batching (np.stack of each field, batches of train.batch_size); and the whole
  pipeline with grain at 0 threads (`whole`), whose excess over the parts is grain's and the
  rest's (`rest`). One JSON-able line."""
  config = run.config
  role = '2d' if run.train_2d.specs else '3d'
  spec = run.sources(role).specs[0]
  source = datasets.data_source(datasets.resolve(spec, role, config.data.data_dir))
  indices = np.random.default_rng(0).integers(0, len(source), images)
  transform = pipeline.train_transform(config.data, role)
  threads = cv2.getNumThreads()
  cv2.setNumThreads(1)
  try:
    records = [source.record(int(i)) for i in indices]
    examples = [source.parse(r) for r in records]
    rng = np.random.default_rng(0)
    samples = [transform(e, rng) for e in examples]
    size = config.train.batch_size
    groups = [samples[k : k + size] for k in range(0, len(samples), size)]
    times = {
      'read': _ms_per_item(lambda i: source.record(int(i)), indices),
      'parse': _ms_per_item(source.parse, records),
      'decode': _ms_per_item(lambda e: features.decode_image(e['image']), examples),
      'transform': _ms_per_item(lambda e: transform(e, rng), examples),
      'batch': _ms_per_item(lambda g: {k: np.stack([s[k] for s in g]) for k in g[0]}, groups)
      / size,
    }
    iterator = iter(pipeline.train_dataset(reading(run, workers=0, threads=0)))
    batches = max(images // size, 1)
    rate = median_rate(
      lambda n: [next(iterator) for _ in range(n)], size, batches=batches, repeats=1
    )
  finally:
    cv2.setNumThreads(threads)
  parts = {
    'read': times['read'],
    'parse': times['parse'],
    'decode': times['decode'],
    'warp_and_labels': times['transform'] - times['decode'],
    'batch': times['batch'],
  }
  whole = 1e3 / rate
  return {
    'measure': 'parts',
    **_common_fields(config),
    'source': spec,
    'ms_per_image': {k: round(v, 3) for k, v in parts.items()}
    | {'rest': round(whole - sum(parts.values()), 3), 'whole': round(whole, 3)},
  }


def _ms_per_item(function, items) -> float:
  """Milliseconds per call of function(item) over `items`, results dropped as they come (kept,
  they would grow the heap and time its page faults)."""
  start = time.perf_counter()
  for item in items:
    function(item)
  return (time.perf_counter() - start) / len(items) * 1e3

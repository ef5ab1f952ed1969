"""Train-step throughput of a config on the devices present: compile time and images/s.

The batch is random and already in device memory, so this measures the step alone
(benchmark_pipeline.py measures the input pipeline). Timings are medians over repeats,
each synchronised. compare_peer.py times the PyTorch peer with the same helpers.
"""

from __future__ import annotations

import statistics
import time
from typing import Any
from typing import Callable

import jax
import ml_collections
import numpy as np

from hpe_jax import joints
from hpe_jax import models
from hpe_jax.data import pipeline
from hpe_jax.training import step as step_lib


def random_batch(
  batch_size: int, image_size: int, num_3d: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
  """A training batch of the pipeline's layout with random content; the first `num_3d` samples
  are 3D. image (B, S, S, 3) uint8, joints (B, J, 2) input pixels, joints_mask and depth (B, J),
  has_3d (B,) bool."""
  return {
    'image': rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8),
    'joints': rng.uniform(0, image_size, (batch_size, joints.NUM_JOINTS, 2)).astype(np.float32),
    'joints_mask': np.ones((batch_size, joints.NUM_JOINTS), np.float32),
    'depth': rng.normal(0, 0.1, (batch_size, joints.NUM_JOINTS)).astype(np.float32),
    'has_3d': np.arange(batch_size) < num_3d,
  }


def config_batch(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """The random batch (seed 0) a config trains on: its batch and image sizes, and for models with
  depth its share of 3D samples."""
  batch_size = config.train.batch_size
  num_3d = int(batch_size * config.data.fraction_3d) if config.model.depth else 0
  return random_batch(batch_size, config.data.image_size, num_3d, np.random.default_rng(0))


def time_steps(
  step: Callable[[], Any], sync: Callable[[Any], None], *, steps: int, repeats: int, warmup: int = 1
) -> dict[str, float]:
  """Times `step()` (one train step; returns what `sync` waits for).

  -> {'first_step_s': the first call, synchronised (it includes any lazy compilation),
      'step_s': the median over `repeats` of the mean time of `steps` consecutive steps, after
      `warmup` steps in all (the first included)}.
  """
  start = time.perf_counter()
  sync(step())
  first_step_s = time.perf_counter() - start
  for _ in range(warmup - 1):
    sync(step())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      out = step()
    sync(out)
    times.append((time.perf_counter() - start) / steps)
  return {'first_step_s': first_step_s, 'step_s': statistics.median(times)}


def data_mesh() -> jax.sharding.Mesh:
  """All devices on one 'data' axis, as training shards the batch."""
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


class JaxTrainStep:
  """hpe_jax's jitted train step for a config, compiled on the batch it will run on.

  `step()` runs one step on that batch, carrying the (donated) state along; `compile_s` is the
  `lower().compile()` time and `flops` the step's cost by XLA's cost analysis (None where the
  backend gives none).
  """

  def __init__(self, config: ml_collections.ConfigDict, batch: dict[str, np.ndarray]):
    mesh = data_mesh()
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    defs, state = step_lib.init_state(config)
    self.state = jax.device_put(state, replicated)
    train_step, _ = step_lib.jit_steps(defs, self.state, mesh, config)
    self.batch = pipeline.to_global(batch, batch_sharding)
    start = time.perf_counter()
    self.compiled = train_step.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - start
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # a list in older jax versions
    self.flops = float(cost['flops']) if cost and cost.get('flops', 0) > 0 else None

  def step(self) -> tuple[dict, dict]:
    """-> (new state, metrics); sync on both, the state being donated to the next step."""
    self.state, metrics = self.compiled(self.state, self.batch)
    return self.state, metrics

  @staticmethod
  def sync(outputs) -> None:
    jax.block_until_ready(outputs)


def model_fields(config: ml_collections.ConfigDict, batch_size: int | None = None) -> dict:
  """The config's model (its name and its backbone's fields), image size and batch size (default
  train.batch_size), as every benchmark's JSON line names them."""
  return {
    'model': config.model.name,
    **models.arguments(config.model),
    'image_size': config.data.image_size,
    'batch_size': batch_size or config.train.batch_size,
    'depth': config.model.depth,
  }


def jax_devices() -> str:
  return f'{jax.device_count()} x {jax.devices()[0].device_kind}'


def benchmark(config: ml_collections.ConfigDict, *, steps: int, repeats: int) -> dict:
  """Compiles and times `config`'s train step on its random batch -> one JSON-able line: the
  model, batch and devices, compile_s, step_ms (median) and images_per_s."""
  train_step = JaxTrainStep(config, config_batch(config))
  timing = time_steps(train_step.step, train_step.sync, steps=steps, repeats=repeats)
  return {
    **model_fields(config),
    'dtype': config.model.dtype,
    'devices': jax_devices(),
    'jax': jax.__version__,
    'compile_s': round(train_step.compile_s, 2),
    'step_ms': round(timing['step_s'] * 1e3, 2),
    'images_per_s': round(config.train.batch_size / timing['step_s'], 1),
  }

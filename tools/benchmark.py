"""Train-step throughput of a config on the devices present: compile time and images/s.

The batch is random and already in device memory, so this measures the step alone (the input
pipeline is measured separately). Timings are medians over repeats, each synchronised.

  python tools/benchmark.py --config=configs/pretrain.py
  python tools/benchmark.py --config=configs/pretrain.py:paper --config.model.dtype=bfloat16
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from hpe_jax import joints
from hpe_jax.data import pipeline
from hpe_jax.training import step as step_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (path[:arg]).')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per repeat.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repeats; the median is reported.')


def random_batch(batch_size: int, image_size: int, num_3d: int, rng: np.random.Generator):
  """A training batch of the pipeline's layout with random content."""
  return {
      'image': rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8),
      'joints': rng.uniform(0, image_size, (batch_size, joints.NUM_JOINTS, 2)).astype(np.float32),
      'joints_mask': np.ones((batch_size, joints.NUM_JOINTS), np.float32),
      'depth': rng.normal(0, 0.1, (batch_size, joints.NUM_JOINTS)).astype(np.float32),
      'has_3d': np.arange(batch_size) < num_3d,
  }


def main(argv):
  del argv
  config = _CONFIG.value
  mesh = jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  defs, state = step_lib.init_state(config)
  state = jax.device_put(state, replicated)
  train_step, _ = step_lib.jit_steps(defs, state, mesh, config)
  batch_size = config.train.batch_size
  num_3d = int(batch_size * config.data.fraction_3d) if config.model.depth else 0
  batch = pipeline.to_global(random_batch(batch_size, config.data.image_size, num_3d,
                                          np.random.default_rng(0)), batch_sharding)

  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - start) / _STEPS.value)
  step_s = float(np.median(times))
  result = {
      'model': config.model.name, 'width': config.model.width,
      'head_channels': config.model.head_channels, 'image_size': config.data.image_size,
      'batch_size': batch_size, 'dtype': config.model.dtype, 'depth': config.model.depth,
      'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      'jax': jax.__version__, 'compile_s': round(compile_s, 2),
      'step_ms': round(step_s * 1e3, 2), 'images_per_s': round(batch_size / step_s, 1),
  }
  print(json.dumps(result))


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)

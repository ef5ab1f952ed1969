"""Scale-out on JAX's own runtime: two processes on this machine (jax.distributed over loopback,
each with 2 simulated CPU devices) train on one 4-device global mesh and log the losses that one
process with 4 devices logs; one step sharded over 4 devices gives the loss and gradients of one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

from conftest import TESTS
import numpy as np
import pytest

# argv: data_dir, workdir, process id or -1 (one process), coordinator port.
_TRAIN = textwrap.dedent(
  """
    import sys
    sys.path.insert(0, %r)
    import jax
    data_dir, workdir, process_id, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if process_id >= 0:
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
      jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2,
                                 process_id=process_id)
    from conftest import tiny_config
    from hpe_jax.training import train
    config = tiny_config(data_dir, depth=True, **{'train.num_steps': 3, 'data.eval': ''})
    train.train_and_evaluate(config, workdir)
"""
  % TESTS
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _losses(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if k.endswith('loss')} for line in f]


# Three training commands at once: about a minute on 2 cores.
@pytest.mark.slow
def test_two_processes_log_the_losses_of_one(data_dir, tmp_path):
  port = str(_free_port())

  def start(workdir, process_id, devices):
    flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={devices}'
    env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS='cpu')
    return subprocess.Popen(
      [sys.executable, '-c', _TRAIN, data_dir, str(workdir), str(process_id), port],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )

  two = [start(tmp_path / 'two', p, 2) for p in (0, 1)]
  one = start(tmp_path / 'one', -1, 4)
  for process in (*two, one):
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
  single, distributed = _losses(tmp_path / 'one'), _losses(tmp_path / 'two')
  assert len(single) == len(distributed) == 3
  for a, b in zip(single, distributed):
    assert a.keys() == b.keys() == {'loss', 'heatmap_loss', 'depth_loss', 'geometric_loss'}
    for key in a:
      np.testing.assert_allclose(b[key], a[key], rtol=2e-5, err_msg=key)
  # Both processes saved the checkpoint together (Orbax's multi-process save).
  assert os.listdir(tmp_path / 'two' / 'checkpoints') == ['3']


_DEVICES_SCRIPT = textwrap.dedent("""
    import jax
    jax.config.update('jax_num_cpu_devices', 4)
    import json, sys
    import numpy as np
    from flax import nnx
    sys.path.insert(0, sys.argv[2])
    from conftest import tiny_config
    from hpe_jax import default_config
    from hpe_jax import losses
    from hpe_jax import models
    from hpe_jax.data import pipeline
    from hpe_jax.models import interface

    config = tiny_config(sys.argv[1], depth=True)
    batch = next(iter(pipeline.train_dataset(default_config.describe(config))))
    loss_config = losses.LossConfig(depth_weight=0.1, geometric_weight=0.01)
    results = {}
    for count in (1, 4):
      mesh = jax.make_mesh((count,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                           devices=jax.devices()[:count])
      model = models.create_model(config.model, with_depth=True, rngs=nnx.Rngs(0))
      graphdef, state = nnx.split(model)

      def loss_and_grads(state, batch):
        images = interface.normalize_images(batch['image'], 'float32')
        loss_fn = lambda model: losses.compute_losses(model(images), batch, loss_config)
        (_, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(
            nnx.merge(graphdef, state))
        return metrics, grads

      sharded = pipeline.to_global(batch, jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec('data')))
      assert len(sharded['image'].sharding.device_set) == count
      metrics, grads = jax.jit(loss_and_grads)(state, sharded)
      results[count] = {'metrics': {k: float(v) for k, v in metrics.items()},
                        'grads': [np.asarray(g).ravel().tolist()
                                  for g in jax.tree.leaves(grads)]}
    print(json.dumps(results))
""")


@pytest.mark.slow
def test_four_devices_give_the_loss_and_gradients_of_one(data_dir):
  out = subprocess.run(
    [sys.executable, '-c', _DEVICES_SCRIPT, data_dir, TESTS],
    check=True,
    capture_output=True,
    text=True,
  )
  results = json.loads(out.stdout.strip().splitlines()[-1])
  one, four = results['1'], results['4']
  for key, value in one['metrics'].items():
    np.testing.assert_allclose(four['metrics'][key], value, rtol=1e-5, err_msg=key)
  for g1, g4 in zip(one['grads'], four['grads']):
    g1, g4 = np.asarray(g1), np.asarray(g4)
    np.testing.assert_allclose(g4, g1, rtol=1e-5, atol=1e-5 * np.abs(g1).max())

"""The train loop: build, resume or graft, train with progress, checkpoint, evaluate.

Re-running the same command on the same workdir resumes from its latest checkpoint (model,
optimiser, step and data position) and continues exactly as an uninterrupted run would. Ctrl-C
or SIGTERM (a cluster's pre-emption) saves a checkpoint before exiting.
"""

from __future__ import annotations

import json
import os
import signal
import time

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hpe_jax import default_config
from hpe_jax.data import datasets
from hpe_jax.data import pipeline
from hpe_jax.evaluation import evaluate
from hpe_jax.models import torch_import
from hpe_jax.training import checkpoint
from hpe_jax.training import optimizer as optimizer_lib
from hpe_jax.training import step as step_lib


class MetricsLog:
  """Metrics as JSON lines in `workdir/metrics.jsonl` (written by process 0 only)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.enabled = jax.process_index() == 0

  def write(self, record: dict) -> None:
    if self.enabled:
      with open(self.path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return (f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600
          else f'{seconds // 60}m{seconds % 60:02d}s')


def _log(*args) -> None:
  if jax.process_index() == 0:
    print(*args, flush=True)


class _StopRequest:
  """SIGINT / SIGTERM ask the loop to stop after the current step (a second Ctrl-C aborts).

  A flag rather than an exception: an exception could land between a step that consumed the
  donated state and the assignment of its result, leaving nothing valid to save.
  """

  def __init__(self):
    self.requested = False
    self._previous = {sig: signal.signal(sig, self._handle)
                      for sig in (signal.SIGINT, signal.SIGTERM)}

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = True
    _log('Stopping after this step (Ctrl-C again to abort without saving)...')

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _pure(state: dict) -> dict:
  return {name: nnx.to_pure_dict(part) for name, part in state.items()}


def _check_config(config: ml_collections.ConfigDict) -> None:
  default_config.validate(config)
  devices = jax.device_count()
  if config.train.batch_size % devices:
    raise default_config.ConfigError(f'train.batch_size={config.train.batch_size} must be a '
                                     f'multiple of the {devices} devices')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains as `config` says in `workdir`; returns the final evaluation metrics."""
  _check_config(config)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  # Auto axes: the compiler propagates the batch sharding (newer jax defaults to Explicit).
  mesh = jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  # Data first: a missing dataset should fail before minutes of compilation.
  train_data = pipeline.train_dataset(config)
  train_iter = iter(train_data)
  eval_ref = datasets.resolve(config.data.eval, 'eval', config.data.data_dir) \
      if config.data.eval else None
  baseline = evaluate.training_mean_pose(config) if eval_ref is not None else None

  defs, state = step_lib.init_state(config)

  mngr = checkpoint.manager(os.path.join(workdir, 'checkpoints'),
                            keep=config.train.keep_checkpoints)
  start = mngr.latest_step() or 0
  if start:
    restored = checkpoint.restore(mngr, start, _pure(state), train_iter)
    for name, part in state.items():
      nnx.replace_by_pure_dict(part, restored[name])
    _log(f'Resumed {workdir} at step {start}.')
  elif config.init_from:
    grafted, fresh = checkpoint.graft(config.init_from, nnx.to_pure_dict(state['model']))
    nnx.replace_by_pure_dict(state['model'], grafted)
    _log(f'Initialised from {config.init_from}; newly initialised: {fresh or "nothing"}.')
  elif config.model.init not in ('', default_config.SCRATCH):
    imported, unused = torch_import.init_backbone(nnx.to_pure_dict(state['model']),
                                                  config.model.init)
    nnx.replace_by_pure_dict(state['model'], imported)
    _log(f'Initialised the backbone from {config.model.init}; unused there: {unused or "nothing"}.')
  else:
    _log(f'Random initial weights (model.init={config.model.init!r}).')
  state = jax.device_put(state, replicated)

  train_step, predict = step_lib.jit_steps(defs, state, mesh, config)
  log = MetricsLog(workdir)

  def run_eval(step):
    results = evaluate.evaluate(predict, state['model'], eval_ref, config, batch_sharding,
                                baseline)
    log.write({'step': step, 'split': str(eval_ref), **results})
    _log(f'eval {eval_ref} @ {step}: ' + ', '.join(
        f'{k} {v:.4g}' for k, v in results.items() if not isinstance(v, dict)))
    return results

  num_steps = config.train.num_steps
  if start >= num_steps:
    _log(f'{workdir} already trained for {start} steps (train.num_steps={num_steps}).')
    return run_eval(start) if eval_ref else {}
  _log(f'Training {config.model.name} on {jax.device_count()} {jax.devices()[0].platform} '
       f'device(s), steps {start + 1}..{num_steps}, batch {config.train.batch_size}.')
  stop = _StopRequest()
  step, saved_step, window, timer = start, start, [], None
  try:
    for step in range(start + 1, num_steps + 1):
      batch = pipeline.to_global(next(train_iter), batch_sharding)
      state, metrics = train_step(state, batch)
      window.append(metrics)
      if step % config.train.checkpoint_every == 0:
        checkpoint.save(mngr, step, _pure(state), train_iter)
        saved_step = step
      if step % config.train.log_every == 0 or step == num_steps:
        means = {k: float(np.mean(v)) for k, v in jax.device_get(
            jax.tree.map(lambda *xs: jnp.stack(xs), *window)).items()}
        now = time.perf_counter()
        record = {'step': step, **means, 'lr': float(
            optimizer_lib.learning_rate_schedule(config.train)(step - 1))}
        rate = ''
        if timer is not None:  # the first window includes compilation: no rate for it
          images_per_s = len(window) * config.train.batch_size / (now - timer)
          record['images_per_s'] = images_per_s
          rate = (f' | {images_per_s:.1f} img/s | ETA '
                  f'{_duration((num_steps - step) / len(window) * (now - timer))}')
        log.write(record)
        losses = ' '.join(f'{k.removesuffix("_loss")} {means[k]:.3e}' for k in sorted(means)
                          if k.endswith('_loss'))
        _log(f'step {step}/{num_steps} | loss {means["loss"]:.4e} ({losses}){rate}')
        window, timer = [], time.perf_counter()
      if stop.requested:
        break
      if config.train.eval_every and step % config.train.eval_every == 0 and step < num_steps \
          and eval_ref:
        run_eval(step)
  finally:
    stop.restore()
  if saved_step != step:
    checkpoint.save(mngr, step, _pure(state), train_iter)
  mngr.wait_until_finished()
  if stop.requested:
    _log(f'Stopped after step {step}; checkpoint saved. Run the same command to resume.')
    raise SystemExit(130)
  return run_eval(num_steps) if eval_ref else {}

"""The train loop: build, resume or graft, train with progress, checkpoint, evaluate.

Re-running the same command on the same workdir resumes from its latest readable checkpoint
(model, optimiser, step and data position) and continues exactly as an uninterrupted run would;
the workdir's rules (one run at a time, which config changes a resume accepts, metrics.jsonl
exact after a crash) are in storage/workdir.py. Every logged step and evaluation also goes to
<workdir>/tensorboard/ (training/summaries.py; train.tensorboard=False turns it off). Ctrl-C or
SIGTERM (a cluster's pre-emption) saves a checkpoint before exiting. A non-finite loss, gradient
or weight stops the run with TrainingDiverged before anything of that step is saved.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hpe_jax import default_config
from hpe_jax import errors
from hpe_jax import progress
from hpe_jax.data import datasets
from hpe_jax.data import pipeline
from hpe_jax.evaluation import scoring
from hpe_jax.models import torch_import
from hpe_jax.storage import checkpoint
from hpe_jax.storage import workdir as workdir_lib
from hpe_jax.training import optimizer as optimizer_lib
from hpe_jax.training import step as step_lib
from hpe_jax.training import summaries


class TrainingDiverged(errors.HpeError, RuntimeError):
  """The loss, the gradients or the weights became non-finite; the message names the step."""

  exit_code = 3  # apart from usage and environment errors (2)


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
    self._previous = {
      sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
    }

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = True
    _log('Stopping after this step (Ctrl-C again to abort without saving)...')

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _logging_compilation(step_fn, name: str):
  """`step_fn`, logging 'Compiling the <name> step...' and the seconds of its first call: jax.jit
  compiles then (or loads the compilation cache's copy), minutes for a large model, before it
  dispatches the step."""
  compiled = False

  def call(*args):
    nonlocal compiled
    if compiled:
      return step_fn(*args)
    _log(f'Compiling the {name} step...')
    start = time.perf_counter()
    result = step_fn(*args)
    compiled = True
    _log(f'Compiled the {name} step in {time.perf_counter() - start:.1f} s.')
    return result

  return call


def _dataset_name(spec: str) -> str:
  """'name[/config][:split]' -> 'name'."""
  return spec.partition(':')[0].partition('/')[0]


def eval_source_warning(config: ml_collections.ConfigDict) -> str:
  """A one-line warning when the run evaluates on data.eval's default dataset and trains on none
  of it (e.g. trains on mpii and evaluates on synthetic_humans), else ''. A data.eval set on
  purpose to its default cannot be told apart, so that warns too."""
  default = default_config.base_config().data.eval
  sources = default_config.parse_list(config.data.train_3d) + default_config.parse_list(
    config.data.train_2d
  )
  if config.data.eval != default or _dataset_name(default) in map(_dataset_name, sources):
    return ''
  return (
    f'Warning: training on {", ".join(sources)} but evaluating on {default} (the default '
    f'data.eval): set --config.data.eval={_dataset_name(sources[0])} to evaluate on held-out '
    'data of the training set, or --config.data.eval= for no evaluation.'
  )


def _pure(state: dict) -> dict:
  return {name: nnx.to_pure_dict(part) for name, part in state.items()}


def _check_finite(unchecked: list[dict], last_step: int, saved_step: int, config, log) -> None:
  """Raises TrainingDiverged if a step of `unchecked` (the metrics of the steps up to `last_step`
  not checked yet) had a non-finite loss, gradient or state, after logging that step's metrics
  with 'diverged': true. `saved_step`: the newest checkpoint (0: none). One host sync."""
  finite = jax.device_get([m['finite'] for m in unchecked])
  if all(finite):
    return
  first = int(np.argmin(finite))
  bad_step = last_step - len(unchecked) + 1 + first
  metrics = {k: float(v) for k, v in jax.device_get(unchecked[first]).items() if k != 'finite'}
  log.write({'step': bad_step, **metrics, 'diverged': True})
  last_good = (
    f'the last good checkpoint is step {saved_step}'
    if saved_step
    else 'no checkpoint was saved before it'
  )
  raise TrainingDiverged(
    f'training diverged at step {bad_step}: loss {metrics["loss"]:.4g}, gradient norm '
    f'{metrics["grad_norm"]:.4g}; {last_good}, nothing later is saved. Lower '
    f'--config.train.lr (now {config.train.lr:g}) and run the same command (it '
    f'{"resumes from there" if saved_step else "starts again"}), or start afresh in a new '
    '--workdir, where clipping gradients (--config.train.grad_clip=1.0) can help too'
  )


class _RankedMetrics:
  """An evaluation's results -> the metrics saved with its checkpoint ({name: float}, what
  train.keep_best ranks), or None without a rule or results. Warns once if the evaluation
  reports no finite value of the rule's metric."""

  def __init__(self, best: tuple[str, str] | None):
    self.best, self.warned = best, False

  def __call__(self, results: dict | None) -> dict | None:
    if self.best is None or not results:
      return None
    metrics = {
      key: float(value)
      for key, value in results.items()
      if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }
    metric, mode = self.best
    if metric in metrics:
      return metrics
    if not self.warned:
      self.warned = True
      _log(
        f'warning: train.keep_best={metric}:{mode}: the evaluation reports no finite {metric!r} '
        f'(it reports {", ".join(sorted(metrics))}); no best checkpoint is kept: set '
        '--config.train.keep_best to one of those'
      )
    return None


def _init_step(config: ml_collections.ConfigDict) -> tuple:
  """config.init_step as `checkpoint.graft` takes it: (step, the init_from run's keep_best rule
  for 'best')."""
  step = default_config.parse_step(config.init_step)
  if step != default_config.BEST:
    return step, None
  source = workdir_lib.read_config(config.init_from)
  return step, default_config.keep_best_rule(source) if source is not None else None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains as `config` says in `workdir`; returns the final evaluation metrics.

  Raises:
    ConfigError, DatasetError: the config or its data cannot work.
    WorkdirError: another run holds the workdir, it cannot be written, or the config changes what
      its checkpoints hold.
    CheckpointError: no checkpoint can be read, or (CheckpointIOError) saving one failed.
    TrainingDiverged: a step produced non-finite values.
  """
  default_config.validate(config, devices=jax.device_count(), processes=jax.process_count())
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise workdir_lib.WorkdirError(
      f'--workdir={workdir} cannot be created ({e.strerror}); choose another one'
    ) from e
  lead = jax.process_index() == 0
  # Closed on every way out (an error, Ctrl-C, SIGTERM): what was logged is on disk.
  board = summaries.TensorBoardLog(workdir, enabled=lead and config.train.get('tensorboard', True))
  with (
    workdir_lib.exclusive(workdir) if lead else contextlib.nullcontext(),
    contextlib.closing(board),
  ):
    return _train_and_evaluate(config, workdir, lead, board)


def _train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, lead: bool, board: summaries.TensorBoardLog
) -> dict:
  warning = eval_source_warning(config)
  if warning:
    _log(warning)
  checkpoint_dir = os.path.join(workdir, 'checkpoints')
  if checkpoint.saved_steps(checkpoint_dir):
    changes = workdir_lib.check_resume(workdir, config)
    if changes:
      _log(f'Resuming with changed settings: {"; ".join(changes)}.')
  if lead:
    try:
      workdir_lib.save_config(workdir, config)
    except OSError as e:
      raise workdir_lib.WorkdirError(
        f'cannot write the config into --workdir={workdir} '
        f'({e.strerror}); make it writable or choose another '
        'one'
      ) from e
  # Auto axes: the compiler propagates the batch sharding (newer jax defaults to Explicit).
  mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  # Data first: a missing dataset should fail before minutes of compilation.
  train_data = pipeline.train_dataset(config)
  train_iter = iter(train_data)
  eval_ref = (
    datasets.resolve(config.data.eval, 'eval', config.data.data_dir) if config.data.eval else None
  )
  baseline = scoring.training_mean_pose(config, log=_log) if eval_ref is not None else None

  defs, state = step_lib.init_state(config)

  start, restored = checkpoint.restore_newest(checkpoint_dir, _pure(state), train_iter, _log)
  if start:
    for name, part in state.items():
      nnx.replace_by_pure_dict(part, restored[name])
    _log(f'Resumed {workdir} at step {start}.')
  elif config.init_from:
    grafted, fresh = checkpoint.graft(
      config.init_from, nnx.to_pure_dict(state['model']), *_init_step(config)
    )
    nnx.replace_by_pure_dict(state['model'], grafted)
    at = f' (step {config.init_step})' if config.init_step else ''
    _log(f'Initialised from {config.init_from}{at}; newly initialised: {fresh or "nothing"}.')
  elif config.model.init not in ('', default_config.SCRATCH):
    imported, unused = torch_import.init_backbone(
      nnx.to_pure_dict(state['model']), config.model.init
    )
    nnx.replace_by_pure_dict(state['model'], imported)
    _log(
      f'Initialised the backbone from {config.model.init} '
      f'({torch_import.weights_origin(config.model.init)}); unused there: {unused or "nothing"}.'
    )
  else:
    _log(f'Random initial weights (model.init={config.model.init!r}).')
  state = jax.device_put(state, replicated)
  best = default_config.keep_best_rule(config)
  mngr = checkpoint.manager(checkpoint_dir, keep=config.train.keep_checkpoints, best=best)

  train_step, predict = step_lib.jit_steps(defs, state, mesh, config)
  train_step = _logging_compilation(train_step, 'train')
  predict = _logging_compilation(predict, 'eval')
  log = workdir_lib.MetricsLog(workdir, enabled=lead)
  num_steps = config.train.num_steps
  dropped = log.resume_at(start, replace_eval=start >= num_steps)
  if dropped:
    _log(dropped)
  board.resume_at(start)

  def run_eval(step):
    overlays = []
    results = scoring.evaluate(
      predict,
      state['model'],
      eval_ref,
      config,
      batch_sharding,
      baseline,
      batch_size=config.train.batch_size,
      log=_log,
      first_batch=(
        (lambda images, prediction: overlays.append(summaries.draw_predictions(images, prediction)))
        if board.enabled
        else None
      ),
    )
    record = log.write({'step': step, 'split': str(eval_ref), **results})
    board.write_eval(record, overlays[0] if overlays else None)
    board.flush()
    _log(
      f'eval {eval_ref} @ {step}: '
      + ', '.join(f'{k} {v:.4g}' for k, v in results.items() if not isinstance(v, dict))
    )
    return results

  if start >= num_steps:
    _log(f'{workdir} already trained for {start} steps (train.num_steps={num_steps}).')
    return run_eval(start) if eval_ref else {}
  _log(
    f'Training {config.model.name} on {jax.device_count()} {jax.devices()[0].platform} '
    f'device(s), steps {start + 1}..{num_steps}, batch {config.train.batch_size}.'
  )
  stop = _StopRequest()
  step, saved_step, window, unchecked, timer = start, start, [], [], None
  ranked = _RankedMetrics(best)

  def save(step, results=None):
    nonlocal saved_step, unchecked
    _check_finite(unchecked, step, saved_step, config, log)
    unchecked = []
    checkpoint.save(mngr, step, _pure(state), train_iter, metrics=ranked(results))
    saved_step = step

  try:
    for step in range(start + 1, num_steps + 1):
      batch = pipeline.to_global(next(train_iter), batch_sharding)
      state, metrics = train_step(state, batch)
      window.append(metrics)
      unchecked.append(metrics)
      # Logged before the checkpoint of the same step: a resume drops records past its step.
      if step % config.train.log_every == 0 or step == num_steps:
        _check_finite(unchecked, step, saved_step, config, log)
        unchecked = []
        means = {
          k: float(np.mean(v))
          for k, v in jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *window)).items()
          if k != 'finite'
        }
        now = time.perf_counter()
        record = {
          'step': step,
          **means,
          'lr': float(optimizer_lib.learning_rate_schedule(config.train)(step - 1)),
        }
        rate = ''
        if timer is not None:  # the first window includes compilation: no rate for it
          images_per_s = len(window) * config.train.batch_size / (now - timer)
          record['images_per_s'] = images_per_s
          rate = (
            f' | {images_per_s:.1f} img/s | ETA '
            f'{progress.duration((num_steps - step) / len(window) * (now - timer))}'
          )
        board.write_train(log.write(record))
        board.flush()
        losses = ' '.join(
          f'{k.removesuffix("_loss")} {means[k]:.3e}' for k in sorted(means) if k.endswith('_loss')
        )
        _log(f'step {step}/{num_steps} | loss {means["loss"]:.4e} ({losses}){rate}')
        window, timer = [], time.perf_counter()
      # An evaluation comes before the checkpoint of its step, which keeps its metrics (what
      # train.keep_best ranks); the last step's comes after the loop.
      results = None
      evaluating = config.train.eval_every and step % config.train.eval_every == 0
      if evaluating and step < num_steps and eval_ref and not stop.requested:
        _check_finite(unchecked, step, saved_step, config, log)
        unchecked = []
        results = run_eval(step)
      last_evaluated = step == num_steps and eval_ref
      if step % config.train.checkpoint_every == 0 and not last_evaluated or ranked(results):
        save(step, results)
      if stop.requested:
        break
    if stop.requested or not eval_ref:
      if saved_step != step:
        save(step)
      results = {}
    else:
      results = None
      try:
        results = run_eval(step)
      finally:  # saved also when the evaluation fails: the training is not lost
        if saved_step != step:
          save(step, results)
  finally:
    stop.restore()
    checkpoint.wait(mngr)  # also when stopping on an error: the saves under way complete
  if stop.requested:
    _log(f'Stopped after step {step}; checkpoint saved. Run the same command to resume.')
    raise SystemExit(130)
  return results

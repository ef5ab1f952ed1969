"""The train loop: build, resume or graft, train with progress, checkpoint, evaluate.

Re-running the same command on the same workdir resumes from its latest readable checkpoint
(model, optimiser, step and data position) and continues exactly as an uninterrupted run would;
the workdir's rules (one run at a time, which config changes a resume accepts, metrics.jsonl
exact after a crash) are in storage/workdir.py. Every logged step and evaluation also goes to
<workdir>/tensorboard/ (training/summaries.py; train.tensorboard=False turns it off). Ctrl-C,
SIGTERM or SIGUSR2 (a cluster's pre-emption or time limit) saves a checkpoint before exiting. A
non-finite loss, gradient or weight stops the run with TrainingDiverged before anything of that
step is saved.

The loop (`_train`), in its parts: `_start_or_resume`, then per step the batch from
`pipeline.DeviceBatches` (put on the devices two steps ahead; checkpoints hold the position of the
batches consumed), `_Schedule` saying what is due, `_LoggingWindow`, `_Evaluation` and `_Saver`
(which checks for divergence before it saves); `_finish` evaluates and saves the last step.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
  """SIGINT, SIGTERM or SIGUSR2 ask the loop to stop after the current step, saved (a second
  Ctrl-C aborts). SIGUSR2 is what Slurm sends before a job's time limit or pre-emption when asked
  to (submitit's --signal=USR2@90): the run saves, exits 130 and is requeued or resumed.

  A flag rather than an exception: an exception could land between a step that consumed the
  donated state and the assignment of its result, leaving nothing valid to save.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

  def __init__(self):
    self.requested = False
    self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    if not self.requested:  # a signal may come twice: from Slurm and passed on by the study
      _log(
        f'{signal.Signals(signum).name}: stopping after this step (Ctrl-C again to abort '
        'without saving)...'
      )
    self.requested = True

  def __enter__(self) -> '_StopRequest':
    return self

  def __exit__(self, *exc_info) -> None:
    self.restore()

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


def eval_source_warning(run: default_config.RunSpec) -> str:
  """A one-line warning when the run evaluates on data.eval's default dataset and trains on none
  of it (e.g. trains on mpii and evaluates on synthetic_humans), else ''. A data.eval set on
  purpose to its default cannot be told apart, so that warns too."""
  default = default_config.base_config().data.eval
  sources = run.train_3d.specs + run.train_2d.specs
  if run.eval_dataset != default or _dataset_name(default) in map(_dataset_name, sources):
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


def _init_step(run: default_config.RunSpec) -> tuple:
  """init_step as `checkpoint.graft` takes it: (step, the init_from run's keep_best rule for
  'best')."""
  if run.init_step != default_config.BEST:
    return run.init_step, None
  source = workdir_lib.read_config(run.init_from)
  return run.init_step, default_config.describe(source).keep_best if source is not None else None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains as `config` says in `workdir`; returns the final evaluation metrics.

  Raises:
    ConfigError, DatasetError: the config or its data cannot work.
    WorkdirError: another run holds the workdir, it or its checkpoints/ cannot be written, or the
      config changes what its checkpoints hold.
    CheckpointError: no checkpoint can be read, or (CheckpointIOError) saving one failed.
    TrainingDiverged: a step produced non-finite values.
  """
  run = default_config.validate(config, devices=jax.device_count(), processes=jax.process_count())
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
    # A checkpoints/ that cannot be written would fail only at the first save, steps later.
    workdir_lib.check_writable(os.path.join(workdir, 'checkpoints'))
    # From the start: a pre-emption while the data loads or the steps compile (minutes) stops
    # the run after its first step, saved, rather than killing it.
    with _StopRequest() as stop:
      return _train_and_evaluate(run, workdir, lead, board, stop)


def _train_and_evaluate(
  run: default_config.RunSpec,
  workdir: str,
  lead: bool,
  board: summaries.TensorBoardLog,
  stop: _StopRequest,
) -> dict:
  """Prepares the run (the workdir's config, data, state, steps, logs), then trains it until done
  or `stop`ped."""
  config = run.config
  warning = eval_source_warning(run)
  if warning:
    _log(warning)
  checkpoint_dir = os.path.join(workdir, 'checkpoints')
  _record_config(config, workdir, checkpoint_dir, lead)
  # Auto axes: the compiler propagates the batch sharding (newer jax defaults to Explicit).
  mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  # Data first: a missing dataset should fail before minutes of compilation.
  batches = pipeline.DeviceBatches(iter(pipeline.train_dataset(run)), batch_sharding)
  eval_ref = (
    datasets.resolve(run.eval_dataset, 'eval', config.data.data_dir) if run.eval_dataset else None
  )
  baseline = scoring.training_mean_pose(run, log=_log) if eval_ref is not None else None

  defs, state = step_lib.init_state(config)
  start = _start_or_resume(run, workdir, checkpoint_dir, state, batches)
  state = jax.device_put(state, replicated)
  mngr = checkpoint.manager(checkpoint_dir, keep=config.train.keep_checkpoints, best=run.keep_best)

  train_step, predict = step_lib.jit_steps(defs, state, mesh, config)
  log = workdir_lib.MetricsLog(workdir, enabled=lead)
  dropped = log.resume_at(start, replace_eval=start >= config.train.num_steps)
  if dropped:
    _log(dropped)
  board.resume_at(start)
  evaluate = None
  if eval_ref is not None:
    predict = _logging_compilation(predict, 'eval')
    evaluate = _Evaluation(predict, eval_ref, baseline, config, batch_sharding, log, board)
  if start >= config.train.num_steps:
    _log(f'{workdir} already trained for {start} steps (train.num_steps={config.train.num_steps}).')
    return evaluate(start, state['model']) if evaluate else {}
  saver = _Saver(mngr, batches, _RankedMetrics(run.keep_best), start, config, log)
  train_step = _logging_compilation(train_step, 'train')
  return _train(run, state, train_step, batches, start, saver, evaluate, log, board, stop)


def _record_config(
  config: ml_collections.ConfigDict, workdir: str, checkpoint_dir: str, lead: bool
) -> None:
  """Checks that a run with checkpoints may resume with `config` (logging the changes it accepts)
  and writes it into the workdir (`workdir_lib.save_config`, on the lead process)."""
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


def _start_or_resume(
  run: default_config.RunSpec, workdir: str, checkpoint_dir: str, state: dict, batches
) -> int:
  """Restores the newest readable checkpoint into `state` (in place) and `batches` (its data
  position) -> its step. Without one -> 0, with `state`'s model started as the run says: from
  init_from's weights, from model.init's ImageNet backbone, or random as initialised."""
  config = run.config
  start, restored = checkpoint.restore_newest(checkpoint_dir, _pure(state), batches, _log)
  if start:
    for name, part in state.items():
      nnx.replace_by_pure_dict(part, restored[name])
    _log(f'Resumed {workdir} at step {start}.')
  elif run.init_from:
    grafted, fresh = checkpoint.graft(
      run.init_from, nnx.to_pure_dict(state['model']), *_init_step(run)
    )
    nnx.replace_by_pure_dict(state['model'], grafted)
    at = f' (step {config.init_step})' if config.init_step else ''
    _log(f'Initialised from {run.init_from}{at}; newly initialised: {fresh or "nothing"}.')
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
  return start


@dataclasses.dataclass(frozen=True)
class _Schedule:
  """At which steps the loop logs, evaluates and checkpoints (train.*_every)."""

  num_steps: int
  log_every: int
  eval_every: int  # 0: only after the last step
  checkpoint_every: int
  evaluates: bool  # the run has an evaluation split (data.eval)

  @classmethod
  def of(cls, run: default_config.RunSpec) -> _Schedule:
    train = run.config.train
    return cls(
      num_steps=train.num_steps,
      log_every=train.log_every,
      eval_every=train.eval_every,
      checkpoint_every=train.checkpoint_every,
      evaluates=bool(run.eval_dataset),
    )

  def log_due(self, step: int) -> bool:
    return step % self.log_every == 0 or step == self.num_steps

  def eval_due(self, step: int) -> bool:
    """A periodic evaluation; the last step's comes after the loop (`_finish`)."""
    return bool(
      self.evaluates and self.eval_every and step % self.eval_every == 0 and step < self.num_steps
    )

  def checkpoint_due(self, step: int) -> bool:
    """A periodic checkpoint. An evaluated run's last one waits for its evaluation (`_finish`),
    whose metrics it keeps."""
    return step % self.checkpoint_every == 0 and not (step == self.num_steps and self.evaluates)


class _LoggingWindow:
  """The steps since the last log line -> their record: each metric's mean over them, the
  learning rate of the last, and from the second window on (the first includes compilation)
  images/s and the ETA; with the progress line that says so."""

  def __init__(self, num_steps: int, batch_size: int, learning_rate, clock=time.perf_counter):
    self.num_steps, self.batch_size = num_steps, batch_size
    self.learning_rate, self.clock = learning_rate, clock
    self.metrics, self.start = [], None

  def add(self, metrics: dict) -> None:
    self.metrics.append(metrics)

  def close(self, step: int) -> tuple[dict, str]:
    """-> (the record of the window ending at `step`, its progress line); opens the next."""
    stacked = jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *self.metrics))
    means = {k: float(np.mean(v)) for k, v in stacked.items() if k != 'finite'}
    now = self.clock()
    record = {'step': step, **means, 'lr': float(self.learning_rate(step - 1))}
    rate = ''
    if self.start is not None:
      images_per_s = len(self.metrics) * self.batch_size / (now - self.start)
      record['images_per_s'] = images_per_s
      eta = (self.num_steps - step) / len(self.metrics) * (now - self.start)
      rate = f' | {images_per_s:.1f} img/s | ETA {progress.duration(eta)}'
    losses = ' '.join(
      f'{k.removesuffix("_loss")} {means[k]:.3e}' for k in sorted(means) if k.endswith('_loss')
    )
    line = f'step {step}/{self.num_steps} | loss {means["loss"]:.4e} ({losses}){rate}'
    self.metrics, self.start = [], now
    return record, line


class _Evaluation:
  """Evaluates the model on the run's held-out split and logs the results: metrics.jsonl,
  TensorBoard (with the first crops drawn) and a line."""

  def __init__(self, predict, ref, baseline, config, sharding, log, board):
    self.predict, self.ref, self.baseline = predict, ref, baseline
    self.config, self.sharding, self.log, self.board = config, sharding, log, board

  def __call__(self, step: int, model_state) -> dict:
    overlays = []
    results = scoring.evaluate(
      self.predict,
      model_state,
      self.ref,
      self.config,
      self.sharding,
      self.baseline,
      batch_size=self.config.train.batch_size,
      log=_log,
      first_batch=(
        (lambda images, prediction: overlays.append(summaries.draw_predictions(images, prediction)))
        if self.board.enabled
        else None
      ),
    )
    record = self.log.write({'step': step, 'split': str(self.ref), **results})
    self.board.write_eval(record, overlays[0] if overlays else None)
    self.board.flush()
    _log(
      f'eval {self.ref} @ {step}: '
      + ', '.join(f'{k} {v:.4g}' for k, v in results.items() if not isinstance(v, dict))
    )
    return results


class _Saver:
  """Checkpoints the state with the data position of `batches` and an evaluation's ranked
  metrics, once the steps since the last check are known finite (`check_finite`): nothing of a
  diverged step is saved."""

  def __init__(self, mngr, batches, ranked: _RankedMetrics, saved_step: int, config, log):
    self.mngr, self.batches, self.ranked = mngr, batches, ranked
    self.saved_step, self.config, self.log = saved_step, config, log
    self.unchecked = []  # the metrics of the steps not checked yet

  def add(self, metrics: dict) -> None:
    self.unchecked.append(metrics)

  def check_finite(self, step: int) -> None:
    """Raises TrainingDiverged if a step up to `step` was not finite (`_check_finite`)."""
    _check_finite(self.unchecked, step, self.saved_step, self.config, self.log)
    self.unchecked = []

  def save(self, step: int, state: dict, results: dict | None = None) -> None:
    self.check_finite(step)
    checkpoint.save(self.mngr, step, _pure(state), self.batches, metrics=self.ranked(results))
    self.saved_step = step

  def save_if_due(self, step: int, state: dict, due: bool, results: dict | None) -> None:
    """Saves at a `due` step, and at any whose evaluation `results` train.keep_best ranks."""
    if due or self.ranked(results):
      self.save(step, state, results)


def _train(run, state, train_step, batches, start, saver, evaluate, log, board, stop) -> dict:
  """Steps start + 1 .. train.num_steps (or until stopped), logging, evaluating and saving as
  `_Schedule` says -> the final evaluation's results ({} without one). Ctrl-C, SIGTERM or SIGUSR2
  (`stop`, also when it came before the first step) end it after the current step, saved, with
  SystemExit(130)."""
  config = run.config
  num_steps = config.train.num_steps
  _log(
    f'Training {config.model.name} on {jax.device_count()} {jax.devices()[0].platform} '
    f'device(s), steps {start + 1}..{num_steps}, batch {config.train.batch_size}.'
  )
  schedule = _Schedule.of(run)
  window = _LoggingWindow(
    num_steps, config.train.batch_size, optimizer_lib.learning_rate_schedule(config.train)
  )
  step = start
  try:
    for step in range(start + 1, num_steps + 1):
      state, metrics = train_step(state, next(batches))
      window.add(metrics)
      saver.add(metrics)
      # Logged before the checkpoint of the same step: a resume drops records past its step.
      if schedule.log_due(step):
        saver.check_finite(step)
        record, line = window.close(step)
        board.write_train(log.write(record))
        board.flush()
        _log(line)
      # An evaluation comes before the checkpoint of its step, which keeps its metrics (what
      # train.keep_best ranks).
      results = None
      if schedule.eval_due(step) and not stop.requested:
        saver.check_finite(step)
        results = evaluate(step, state['model'])
      saver.save_if_due(step, state, schedule.checkpoint_due(step), results)
      if stop.requested:
        break
    results = _finish(step, state, saver, None if stop.requested else evaluate)
  finally:
    checkpoint.wait(saver.mngr)  # also when stopping on an error: the saves under way complete
  if stop.requested:
    _log(f'Stopped after step {step}; checkpoint saved. Run the same command to resume.')
    raise SystemExit(130)
  return results


def _finish(step: int, state: dict, saver: _Saver, evaluate) -> dict:
  """The last step's evaluation (none: {}) and checkpoint, unless that step is saved already."""
  if evaluate is None:
    if saver.saved_step != step:
      saver.save(step, state)
    return {}
  results = None
  try:
    results = evaluate(step, state['model'])
  finally:  # saved also when the evaluation fails: the training is not lost
    if saver.saved_step != step:
      saver.save(step, state, results)
  return results

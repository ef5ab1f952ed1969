"""Checkpoints with Orbax: resume a run exactly, or graft a 2D run's weights onto a 3D model.

A checkpoint holds two items: `state` (a pure dict {'model': parameters and batch statistics,
'optimizer': Adam moments and step}) and `data` (the grain iterator's position). Saving pure
dicts keeps checkpoints free of NNX class names and RNG keys, so they outlive refactors.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import re
import shutil
import sys
import tempfile
import time

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from hpe_jax import errors
from hpe_jax import trees

FREE_SPACE_MARGIN = 2**20  # bytes beyond the arrays: metadata and the data iterator's state

# Parameters that only a model with a depth output has; grafting a 2D checkpoint may miss them.
DEPTH_PARTS = 'depth'


class _OrbaxNotesFilter(logging.Filter):
  """Drops Orbax's warning that a read-only manager's directory is read only: we asked for that,
  and it came three times with every `inference.load`."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    # ... and that a checkpoint between evaluations has no metrics: most have none.
    return not message.startswith(
      ('Given directory is read only', 'Requested `tracked_metric`; did not provide metrics')
    )


logging.getLogger('absl').addFilter(_OrbaxNotesFilter())


class CheckpointError(errors.HpeError, RuntimeError):
  """A checkpoint cannot be used as asked; the message lists what disagrees."""


class CheckpointIOError(CheckpointError):
  """Writing checkpoints failed for a reason of the file system (full, read-only, ...)."""

  last_words = True  # Orbax's failed writer threads report again at interpreter shutdown


def manager(
  directory: str,
  *,
  keep: int = 3,
  best: tuple[str, str] | None = None,
  read_only: bool = False,
  state_handler=None,
) -> ocp.CheckpointManager:
  """A manager of `directory`; read-only ones only look (at another run's checkpoints).

  A writing manager keeps the newest `keep` checkpoints and, with `best` = (metric, 'min' or
  'max'), also the one whose saved metrics (`save`'s) hold the lowest or highest metric; it
  removes the temporary folders of saves that a crash interrupted (only one run writes a
  workdir: storage/workdir.py's lock).
  `state_handler` replaces the standard handler of the state item (grafting restores a subset of
  it, which only the PyTree handler does).
  Raises:
    CheckpointIOError: a writing manager cannot create `directory`.
  """
  options = (
    ocp.CheckpointManagerOptions(
      read_only=True, create=False, save_interval_steps=0, max_to_keep=None
    )
    if read_only
    else ocp.CheckpointManagerOptions(
      enable_async_checkpointing=True,
      cleanup_tmp_directories=True,
      preservation_policy=_preservation(keep, best),
      # Orbax writes a save's metrics only with a best_fn (the policy decides what is kept).
      best_fn=None if best is None else _metric_of(best[0]),
      best_mode='min' if best is None else best[1],
    )
  )
  # Handlers registered up front, so that metadata can be read before any restore.
  with reporting_io_errors(directory, 'opening the checkpoint directory'):
    return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=options,
      item_handlers={
        'state': state_handler or ocp.StandardCheckpointHandler(),
        'data': grain.checkpoint.CheckpointHandler(),
      },
    )


def _preservation(keep: int, best: tuple[str, str] | None):
  """Orbax's policy: the newest `keep`, and the best by `best` among the checkpoints saved with
  metrics."""
  policies = ocp.checkpoint_managers.preservation_policy
  newest = policies.LatestN(keep)
  if best is None:
    return newest
  metric, mode = best
  # BestN keeps the last of the checkpoints sorted by the metric (ascending unless reverse).
  best_one = policies.BestN(
    get_metric_fn=_metric_of(metric),
    reverse=mode == 'min',
    n=1,
    keep_checkpoints_without_metrics=False,
  )
  return policies.AnyPreservationPolicy([newest, best_one])


def _metric_of(metric: str):
  return lambda metrics: float(metrics[metric])


def best_step(directory: str, best: tuple[str, str]) -> int | None:
  """The saved step of `directory` whose metrics hold the best `best` = (metric, 'min' or 'max')
  value; None if no checkpoint there was saved with that metric."""
  mngr = manager(directory, read_only=True)
  metric, mode = best
  scored = []
  for step in mngr.all_steps():
    metrics = mngr.metrics(step)
    if metrics and metric in metrics:
      scored.append((float(metrics[metric]), step))
  if not scored:
    return None
  return (min if mode == 'min' else max)(scored)[1]


# TensorStore (which writes the arrays) reports an OS error inside a ValueError's message.
_TENSORSTORE_ERRNO = re.compile(r"\[os_error_code='?(\d+)'?\]")
_TENSORSTORE_PATH = re.compile(r'(?:Failed writing|Error opening file|local file):? "([^"]+)"')


def os_error_of(error: BaseException) -> tuple[str, str] | None:
  """(the OS's reason, the path) of the file-system error behind `error`, or None if none is: an
  OSError in its chain of causes, or TensorStore's message carrying an os_error_code."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.errno:
      return seen.strerror or os.strerror(seen.errno), seen.filename or ''
    seen = seen.__cause__ or seen.__context__
  code = _TENSORSTORE_ERRNO.search(str(error))
  if code is None:
    return None
  paths = _TENSORSTORE_PATH.findall(str(error))  # the innermost, the file, is last
  return os.strerror(int(code.group(1))), paths[-1] if paths else ''


@contextlib.contextmanager
def reporting_io_errors(directory: str, action: str):
  """Turns a file-system error inside the block into one CheckpointIOError line naming
  `directory`, the OS's reason and the file; other errors pass unchanged."""
  try:
    yield
  except CheckpointError:
    raise
  except Exception as e:  # Orbax wraps OS errors in its own, and async ones in ValueError
    found = os_error_of(e)
    if found is None:
      raise
    reason, path = found
    raise CheckpointIOError(
      f'{action} in {directory} failed: {reason}'
      + (f' ({path})' if path else '')
      + '. The checkpoints saved before are untouched: free space or fix the permissions, then '
      'run the same command to resume from the newest'
    ) from None


def save(
  mngr: ocp.CheckpointManager, step: int, state: dict, data_iterator, metrics: dict | None = None
) -> None:
  """Saves asynchronously: returns once the arrays are copied off the device. An earlier save's
  asynchronous failure surfaces here or in `wait`. A save that would not fit in the free space
  is refused before anything is written (a disk filling up mid-save fails noisily in Orbax's
  threads, though it too ends in CheckpointIOError). `metrics` ({name: float}, the evaluation at
  this step) are saved with it: what `manager`'s `best` ranks.

  Raises:
    CheckpointIOError: too little free space, or the file system refused this or an earlier save.
  """
  directory = str(mngr.directory)
  # Room for this checkpoint, and for the one still being written.
  needed = (
    sum(x.nbytes for x in jax.tree.leaves(state)) * (2 if mngr.is_saving_in_progress() else 1)
    + FREE_SPACE_MARGIN
  )
  free = shutil.disk_usage(directory).free
  if free < needed:
    raise CheckpointIOError(
      f'saving step {step} in {directory} needs about {needed / 2**20:.1f} MiB; '
      f'{free / 2**20:.1f} MiB are free. The checkpoints saved before are untouched: free '
      'space, then run the same command to resume from the newest'
    )
  with reporting_io_errors(directory, f'saving step {step}'):
    mngr.save(
      step,
      force=True,
      metrics=metrics,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)
      ),
    )


def wait(mngr: ocp.CheckpointManager) -> None:
  """Waits for the asynchronous saves. Raises CheckpointIOError as `save` does."""
  with reporting_io_errors(str(mngr.directory), 'saving a checkpoint'):
    mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, step: int, state_like: dict, data_iterator) -> dict:
  """Restores `state` (shaped and sharded like `state_like`) and the iterator in place."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
  restored = mngr.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract),
      data=grain.checkpoint.CheckpointRestore(data_iterator),
    ),
  )
  return restored.state


def saved_steps(directory: str) -> list[int]:
  """The steps checkpointed in `directory` (none if it does not exist), oldest first."""
  if not os.path.isdir(directory):
    return []
  return sorted(manager(directory, read_only=True).all_steps())


UNREADABLE_DIR = 'unreadable_checkpoints'


def restore_newest(
  directory: str, state_like: dict, data_iterator, warn
) -> tuple[int, dict | None]:
  """Restores the newest checkpoint of `directory` that can be read -> (its step, state), or
  (0, None) if there is none. Newer ones that cannot be read (a file truncated or corrupted) are
  reported through `warn` and moved to ../unreadable_checkpoints/, out of the way of the steps the
  run will save again; they are moved only once an older one has been read.

  Raises:
    CheckpointError: checkpoints exist and none of them can be read (nothing is moved).
  """
  steps = saved_steps(directory)
  mngr = manager(directory, read_only=True) if steps else None
  failures = []
  for step in reversed(steps):
    try:
      restored = _without_noise_if_failing(
        lambda: restore(mngr, step, state_like, data_iterator), os.path.join(directory, str(step))
      )
    except Exception as e:  # anything from a missing file to garbage in one: try an older one
      failures.append((step, _root_cause(e)))
      continue
    for bad_step, reason in failures:
      moved = _set_aside(directory, bad_step) if jax.process_index() == 0 else 'aside'
      warn(
        f'warning: checkpoint step {bad_step} in {directory} cannot be read ({reason}); '
        f'moved it to {moved}, resuming from step {step}'
      )
    return step, restored
  if failures:
    raise CheckpointError(
      f'none of the checkpoints in {directory} can be read; the newest (step '
      f'{failures[0][0]}): {failures[0][1]}'
    )
  return 0, None


def _root_cause(error: BaseException) -> str:
  """The innermost cause of `error` in one line of at most 200 characters."""
  while error.__cause__ is not None:
    error = error.__cause__
  return ' '.join(str(error).split())[:200] or type(error).__name__


def _without_noise_if_failing(fn, path: str):
  """fn() (which reads the checkpoint at `path`) with the process's stderr held back: passed on
  if fn succeeds, dropped if it raises.

  A failed Orbax read leaves TensorStore callbacks, coroutines and futures that each print a
  traceback (thousands of lines for one corrupted checkpoint), on other threads and whenever
  they are garbage collected; the caller reports the failure in one line instead. After a
  failure, the leftovers' reports about `path` are dropped for the rest of the process.
  """
  sys.stderr.flush()
  original_fd = os.dup(2)
  asyncio_log = logging.getLogger('asyncio')
  saved = sys.unraisablehook, asyncio_log.level
  succeeded = False
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    sys.unraisablehook = lambda _: None
    asyncio_log.setLevel(logging.CRITICAL)
    try:
      result = fn()
      succeeded = True
      return result
    finally:
      if not succeeded:
        _UNREADABLE_PATHS.add(os.path.join(os.path.abspath(path), ''))
        time.sleep(_STRAGGLER_WAIT_S)  # TensorStore's threads finish failing, held back
        gc.collect()
      sys.stderr.flush()
      os.dup2(original_fd, 2)
      os.close(original_fd)
      sys.unraisablehook, level = saved
      asyncio_log.setLevel(level)
      if _UNREADABLE_PATHS and _UNREADABLE_FILTER not in asyncio_log.filters:  # once
        asyncio_log.addFilter(_UNREADABLE_FILTER)
        sys.unraisablehook = functools.partial(_drop_unreadable_reports, sys.unraisablehook)
      if succeeded:
        held.seek(0)
        sys.stderr.write(held.read().decode(errors='replace'))


_STRAGGLER_WAIT_S = 0.5
_UNREADABLE_PATHS: set[str] = set()  # checkpoints whose failed reads were reported


def _about_unreadable(error: BaseException | None) -> bool:
  return error is not None and any(path in str(error) for path in _UNREADABLE_PATHS)


def _drop_unreadable_reports(hook, unraisable) -> None:
  """sys.unraisablehook passing on all but the errors of reads of reported checkpoints."""
  if not _about_unreadable(unraisable.exc_value):
    hook(unraisable)


class _UnreadableReportsFilter(logging.Filter):
  """Drops asyncio's 'exception was never retrieved' about reads of reported checkpoints."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and _about_unreadable(record.exc_info[1]))


_UNREADABLE_FILTER = _UnreadableReportsFilter()


def _set_aside(directory: str, step: int) -> str:
  target_dir = os.path.join(os.path.dirname(os.path.abspath(directory)), UNREADABLE_DIR)
  os.makedirs(target_dir, exist_ok=True)
  target, n = os.path.join(target_dir, str(step)), 1
  while os.path.exists(target):
    target, n = os.path.join(target_dir, f'{step}.{n}'), n + 1
  os.rename(os.path.join(directory, str(step)), target)
  return target


INIT_FROM_HINT = (
  'Train the 2D stage first (hpe-train --config=configs/pretrain.py),'
  " point --config.init_from at its workdir, or set --config.init_from='' to "
  'start from scratch.'
)


def find_checkpoint(
  path: str,
  step: int | str | None = None,
  hint: str = INIT_FROM_HINT,
  best: tuple[str, str] | None = None,
) -> tuple[str, int]:
  """A run's workdir or its checkpoint directory -> (checkpoint directory, the step): `step`, the
  latest for None, or for 'best' the best by `best` = (metric, 'min' or 'max'), the run's
  train.keep_best.

  Raises:
    CheckpointError: no checkpoint there (the message ends with `hint`), no such step, or no
      checkpoint saved with the metric for 'best'.
  """
  directory = os.path.join(path, 'checkpoints')
  if not os.path.isdir(directory):
    directory = path
  steps = manager(directory, read_only=True).all_steps() if os.path.isdir(directory) else []
  if not steps:
    raise CheckpointError(f'{path!r} holds no checkpoint. {hint}')
  if step is None:
    return directory, max(steps)
  if step == 'best':
    found = best_step(directory, best) if best is not None else None
    if found is None:
      rule = 'none' if best is None else ':'.join(best)
      raise CheckpointError(
        f'{directory} has no best checkpoint (train.keep_best={rule}): none of its steps '
        f'{sorted(steps)} was saved with that evaluation metric; give a step number, or train '
        'with --config.train.eval_every set and train.keep_best on'
      )
    return directory, found
  if step not in steps:
    raise CheckpointError(f'{directory} has no step {step}; it has {sorted(steps)}')
  return directory, step


def graft(
  path: str, model_state: dict, step: int | str | None = None, best: tuple[str, str] | None = None
) -> tuple[dict, list[str]]:
  """Loads a run's model weights (at `step`, None: the latest, 'best': the best by `best`, as
  `find_checkpoint`) into `model_state` (a pure dict of a freshly built model).

  Every weight present in both must agree in shape; the fresh model may have extra depth parts
  (they keep their fresh initialisation) and nothing else. Anything else is an error listing the
  missing, unexpected and mismatched keys.
  Returns (grafted pure dict, the keys left at their initialisation).
  """
  directory, step = find_checkpoint(path, step, best=best)
  mngr = manager(directory, read_only=True, state_handler=ocp.PyTreeCheckpointHandler())
  saved = trees.flatten(mngr.item_metadata(step).state['model'])
  fresh = trees.flatten(model_state)
  missing = sorted(set(fresh) - set(saved))
  unexpected = sorted(set(saved) - set(fresh))
  mismatched = sorted(
    f'{k}: checkpoint {tuple(saved[k].shape)} vs model {np.shape(fresh[k])}'
    for k in set(fresh) & set(saved)
    if tuple(saved[k].shape) != tuple(np.shape(fresh[k]))
  )
  not_depth = [k for k in missing if DEPTH_PARTS not in k]
  if unexpected or not_depth or mismatched:
    raise CheckpointError(
      f'cannot graft {directory} (step {step}) onto this model: it needs the same architecture '
      'apart from the depth output.\n'
      f'  missing from the checkpoint: {not_depth or "none"}\n'
      f'  unexpected in the checkpoint: {unexpected or "none"}\n'
      f'  shape mismatches: {mismatched or "none"}'
    )
  shared = {k: fresh[k] for k in fresh if k in saved}
  target = _prune(jax.tree.map(ocp.utils.to_shape_dtype_struct, model_state), set(shared))
  target = {'model': target}
  restored = mngr.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(
        target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
      )
    ),
  )
  loaded = trees.flatten(restored.state['model'])
  if set(loaded) != set(shared):  # partial restore can silently skip weights: check
    raise CheckpointError(
      f'grafting {directory} restored {len(loaded)} of {len(shared)} '
      f'weights; not restored: {sorted(set(shared) - set(loaded))[:10]}'
    )
  merged = {k: loaded.get(k, v) for k, v in fresh.items()}
  return trees.unflatten(model_state, merged), missing


def _prune(tree: dict, keep: set[str], prefix: str = '') -> dict:
  """The sub-dict of a nested dict whose flattened keys are in `keep`."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      sub = _prune(value, keep, name + '/')
      if sub:
        out[key] = sub
    elif name in keep:
      out[key] = value
  return out

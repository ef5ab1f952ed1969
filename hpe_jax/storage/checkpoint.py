"""Checkpoints with Orbax: resume a run exactly, or graft a 2D run's weights onto a 3D model.

A checkpoint holds two items: `state` (a pure dict {'model': parameters and batch statistics,
'optimizer': Adam moments and step}) and `data` (the grain iterator's position). Saving pure
dicts keeps checkpoints free of NNX class names and RNG keys, so they outlive refactors.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import math
import os
import re
import shutil
import socket
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


class StepGoneError(CheckpointError):
  """The checkpoint being read was deleted meanwhile: its run, still training, keeps only its
  newest (train.keep_checkpoints) and the best (train.keep_best)."""

  def __init__(self, directory: str, step: int):
    self.directory, self.step = directory, step
    left = _steps_now(directory)
    super().__init__(
      f'step {step} of {directory} was deleted while it was being read (its run, still '
      'training, keeps only its newest checkpoints); '
      + (f'it has {left} now: give one of them' if left else 'no checkpoint is left there')
    )


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
  create = lambda: ocp.CheckpointManager(
    os.path.abspath(directory),
    options=options,
    item_handlers={
      'state': state_handler or ocp.StandardCheckpointHandler(),
      'data': grain.checkpoint.CheckpointHandler(),
    },
  )
  if not read_only:
    with reporting_io_errors(directory, 'opening the checkpoint directory'):
      return create()
  for attempt in range(_LISTING_ATTEMPTS):
    try:
      with reporting_io_errors(directory, 'reading the checkpoint directory', reading=True):
        return create()
    except CheckpointIOError:
      # Listing the steps reads each one's metadata: a run still training deletes its older
      # checkpoints meanwhile. Another error, or the same one again, is the error.
      if attempt == _LISTING_ATTEMPTS - 1 or not os.path.isdir(directory):
        raise
  raise AssertionError('unreachable')


_LISTING_ATTEMPTS = 5


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
  found = _best_saved(directory, best)
  return None if found is None else found[1]


def _best_saved(directory: str, best: tuple[str, str]) -> tuple[float, int] | None:
  """(value, step) of the best checkpoint of `directory` by `best`, None without one. A step
  deleted while its metrics are read (its run still training) is left out."""
  mngr = manager(directory, read_only=True)
  metric, mode = best
  scored = []
  for step in mngr.all_steps():
    try:
      metrics = mngr.metrics(step)
    except Exception:  # deleted meanwhile (Orbax fails in many ways), or a real error
      if os.path.isdir(os.path.join(directory, str(step))):
        raise
      continue
    if metrics and metric in metrics:
      scored.append((float(metrics[metric]), step))
  if not scored:
    return None
  return (min if mode == 'min' else max)(scored)


def _best_evaluated(workdir: str, best: tuple[str, str], up_to: int) -> tuple[float, int] | None:
  """(value, step) of the best evaluation by `best` that a run's workdir/metrics.jsonl records
  up to step `up_to` (a later one's checkpoint may be being saved), None if none does."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    return None
  metric, mode = best
  scored = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
        value, step = float(record[metric]), int(record['step'])
      except (ValueError, KeyError, TypeError):  # a training record, or a line torn by a kill
        continue
      if 'split' in record and step <= up_to and math.isfinite(value):
        scored.append((value, step))
  if not scored:
    return None
  return (min if mode == 'min' else max)(scored)


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
def reporting_io_errors(directory: str, action: str, reading: bool = False):
  """Turns a file-system error inside the block into one CheckpointIOError line naming
  `directory`, the OS's reason and the file; other errors pass unchanged. `reading`: the block
  only reads (its message says nothing of freeing space)."""
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
      + (
        ': check that it exists and that you may read it'
        if reading
        else '. The checkpoints saved before are untouched: free space or fix the permissions, '
        'then run the same command to resume from the newest'
      )
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


def _steps_now(directory: str) -> list[int]:
  """The steps of `directory` now, [] if it cannot be listed (for messages)."""
  try:
    return saved_steps(directory)
  except Exception:  # pylint: disable=broad-except  (a message's detail)
    return []


# Holds: a reader's hard links to the checkpoint it reads, so that a run still training can
# delete it meanwhile (train.keep_checkpoints) without failing the read. In a folder beside the
# checkpoints, named by host and process, removed when the read ends (or by the next reader, if
# the process that made it is dead).
_HOLD_PREFIX = '.reading-'
_HOLDS: list[dict] = []  # one per active `holding` block: {'warn': fn, (dir, step): held dir}
_PICK_ATTEMPTS = 20


@contextlib.contextmanager
def holding(warn=print):
  """Within the block, the checkpoint that `find_checkpoint` picks is held until the block ends,
  and `graft` reads the held copy: a run still training may delete it meanwhile. When the step
  picked (the newest or the best) is deleted before it is held, the next newest or best is held
  instead, and `warn` gets a line saying so. Where no hard link can be made beside the checkpoints
  (no permission to write there, or a file system without them), they are read in place."""
  holds = {'warn': warn}
  _HOLDS.append(holds)
  try:
    yield
  finally:
    _HOLDS.remove(holds)
    for key, held in holds.items():
      if key != 'warn':
        shutil.rmtree(os.path.dirname(held), ignore_errors=True)


def read_held(read, step: int | str | None, warn=print, attempts: int = 3):
  """read() (which finds and reads a checkpoint: `find_checkpoint`, then `graft`) `holding` the
  checkpoint it picks. If it is deleted while it is read in place anyway (see `holding`) and
  `step` is None (the newest) or 'best', read() again, on the newest or best then, with a line
  through `warn`.

  Raises:
    StepGoneError: the checkpoint of a numbered `step`, or `attempts` in a row, deleted meanwhile.
  """
  for attempt in range(attempts):
    with holding(warn):
      try:
        return read()
      except StepGoneError as e:
        if isinstance(step, int) or attempt == attempts - 1 or not _steps_now(e.directory):
          raise
        warn(
          f'warning: step {e.step} of {e.directory} was deleted while it was being read (its run '
          f'is still training); reading the {step or "newest"} of {_steps_now(e.directory)}'
        )
  raise AssertionError('unreachable')


def _held(directory: str, step: int) -> str | None:
  """The held copy of `directory`'s `step`, None if it is not held."""
  key = (os.path.abspath(directory), step)
  for holds in reversed(_HOLDS):
    if key in holds:
      return holds[key]
  return None


def _hold(directory: str, step: int) -> None:
  """Holds `directory`'s `step` for the innermost `holding` block (nothing outside one).

  Raises:
    StepGoneError: the step was deleted before it was held.
  """
  if not _HOLDS or _held(directory, step):
    return
  parent = os.path.dirname(os.path.abspath(directory))
  _remove_dead_holds(parent)
  prefix = f'{_HOLD_PREFIX}{socket.gethostname()}-{os.getpid()}-'
  try:
    folder = tempfile.mkdtemp(prefix=prefix, dir=parent)
  except OSError:  # no permission to write there: read in place
    return
  source, target = os.path.join(directory, str(step)), os.path.join(folder, str(step))
  try:
    _link_tree(source, target)
  except FileNotFoundError:
    shutil.rmtree(folder, ignore_errors=True)
    raise StepGoneError(directory, step) from None
  except OSError:  # no hard links there (another file system, ...): read in place
    shutil.rmtree(folder, ignore_errors=True)
    return
  if not os.path.isdir(source):  # deleted as it was linked: some files may be missing
    shutil.rmtree(folder, ignore_errors=True)
    raise StepGoneError(directory, step)
  _HOLDS[-1][(os.path.abspath(directory), step)] = target


def _link_tree(source: str, target: str) -> None:
  os.mkdir(target)
  with os.scandir(source) as entries:
    for entry in entries:
      if entry.is_dir(follow_symlinks=False):
        _link_tree(entry.path, os.path.join(target, entry.name))
      else:
        os.link(entry.path, os.path.join(target, entry.name))


def _remove_dead_holds(parent: str) -> None:
  """Removes the holds in `parent` of this host's processes that are no longer running."""
  host_prefix = f'{_HOLD_PREFIX}{socket.gethostname()}-'
  try:
    names = [name for name in os.listdir(parent) if name.startswith(host_prefix)]
  except OSError:
    return
  for name in names:
    pid = name[len(host_prefix) :].partition('-')[0]
    if pid.isdigit() and not _running(int(pid)):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's
    return True
  return True


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
  train.keep_best. Inside a `holding` block, the step is held (a newer or better one if the
  step picked is deleted first: a run still training).

  Raises:
    CheckpointError: no checkpoint there (the message ends with `hint`), no such step, or no
      checkpoint saved with the metric for 'best', or the best by the run's metrics.jsonl is
      gone (a worse one is not taken for it).
    StepGoneError: a numbered step deleted before it could be held.
  """
  directory = os.path.join(path, 'checkpoints')
  if not os.path.isdir(directory):
    directory = path
  if isinstance(step, int) and _held(directory, step):
    return directory, step
  gone = []
  for _ in range(_PICK_ATTEMPTS):
    picked = _pick(path, directory, step, hint, best)
    try:
      _hold(directory, picked)
    except StepGoneError:
      if isinstance(step, int):
        raise
      gone.append(picked)
      continue
    if gone:
      _HOLDS[-1]['warn'](
        f'warning: step {", ".join(map(str, gone))} of {directory} was deleted as it was about '
        f'to be read (its run is still training); reading step {picked}, the '
        f'{step or "newest"} now'
      )
    return directory, picked
  raise CheckpointError(
    f'the checkpoints of {directory} were each deleted before they could be read '
    f'(steps {gone}): its run, still training, saves and deletes them faster than they are read. '
    'Read it once it has finished, or train with a larger --config.train.checkpoint_every'
  )


def _pick(path: str, directory: str, step, hint: str, best) -> int:
  """find_checkpoint's step of `directory`, unheld."""
  steps = manager(directory, read_only=True).all_steps() if os.path.isdir(directory) else []
  if not steps:
    raise CheckpointError(f'{path!r} holds no checkpoint. {hint}')
  if step is None:
    return max(steps)
  if step == 'best':
    found = _best_saved(directory, best) if best is not None else None
    rule = 'none' if best is None else ':'.join(best)
    if found is None:
      raise CheckpointError(
        f'{directory} has no best checkpoint (train.keep_best={rule}): none of its steps '
        f'{sorted(steps)} was saved with that evaluation metric; give a step number, or train '
        'with --config.train.eval_every set and train.keep_best on'
      )
    recorded = _best_evaluated(path, best, max(steps))
    if recorded is not None and recorded[1] not in steps and _better(recorded[0], found[0], best):
      raise CheckpointError(
        f'the best checkpoint of {directory} by train.keep_best={rule}, step {recorded[1]} '
        f'({best[0]} {recorded[0]:.6g} in metrics.jsonl), is gone; the best of those left is step '
        f'{found[1]} ({best[0]} {found[0]:.6g}): give --step={found[1]} to use it'
      )
    return found[1]
  if step not in steps:
    raise CheckpointError(f'{directory} has no step {step}; it has {sorted(steps)}')
  return step


def _better(value: float, than: float, best: tuple[str, str]) -> bool:
  return value < than if best[1] == 'min' else value > than


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
  held = _held(directory, step)
  try:
    return _graft(directory, os.path.dirname(held) if held else directory, step, model_state)
  except CheckpointError:
    raise
  except Exception:  # read in place, and deleted meanwhile: Orbax fails in many ways
    if held or os.path.isdir(os.path.join(directory, str(step))):
      raise
    raise StepGoneError(directory, step) from None


def _graft(directory: str, read_from: str, step: int, model_state: dict):
  """graft()'s work on `directory`'s `step`, read from the directory `read_from` (its hold)."""
  mngr = manager(read_from, read_only=True, state_handler=ocp.PyTreeCheckpointHandler())
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

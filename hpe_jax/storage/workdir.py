"""A run's directory, kept consistent through crashes, resumes and second runs.

  workdir/
    lock               the PID of the run using it (an advisory lock the OS drops when it dies)
    config.json        the config of the latest start; the earlier ones as config.<n>.json
    metrics.jsonl      one strict-JSON record per logged step and per evaluation, each step once
    tensorboard/       the same numbers as TensorBoard event files (training/summaries.py)
    checkpoints/<step> Orbax checkpoints (storage/checkpoint.py)

A resumed run may change how long it trains, how often it logs, checkpoints and evaluates, its
learning rate and loss weights; a change to what the checkpoint holds (the model, the optimiser's
state) or to the data it was reading is refused (`check_resume`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time

import ml_collections

from hpe_jax import default_config
from hpe_jax import errors
from hpe_jax import files
from hpe_jax import locks

LOCK_FILE = 'lock'
CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'

# Config fields a resumed run must keep: they shape the model or the optimiser's state, or decide
# which examples the restored data iterator yields and how they are turned into targets. A prefix
# ending in '.' covers its whole group. model.init only chooses the first weights of a new run.
FIXED_ON_RESUME = (
  'seed',
  'model.',
  'data.train_2d',
  'data.train_3d',
  'data.weights_2d',
  'data.weights_3d',
  'data.fraction_3d',
  'data.image_size',
  'data.sigma',
  'data.augment.',
  'train.batch_size',
)
CHANGEABLE_ON_RESUME = ('model.init',)


class WorkdirError(errors.HpeError, RuntimeError):
  """The workdir cannot be used as asked; the message says why and what to do."""


@contextlib.contextmanager
def exclusive(workdir: str):
  """Holds `workdir`'s lock for the block (hpe_jax.locks: the OS drops it when the process ends,
  so a killed run never leaves a stale one).

  Raises:
    WorkdirError: another process holds the lock (the message names its PID), or the workdir
      cannot be written.
  """
  held = contextlib.ExitStack()
  try:
    held.enter_context(locks.exclusive(os.path.join(workdir, LOCK_FILE)))
  except locks.LockHeld as e:
    raise WorkdirError(
      f'{workdir} is in use by another run (PID {e.pid}); wait for it to end or stop it '
      f'(kill {e.pid}: it saves a checkpoint), or choose another --workdir'
    ) from None
  except OSError as e:
    raise WorkdirError(
      f'cannot write in --workdir={workdir} ({e.strerror or e}): make it '
      'writable or choose another --workdir'
    ) from e
  with held:
    yield


def check_writable(directory: str) -> None:
  """Raises WorkdirError unless a file can be made in `directory` (a run's checkpoints/), where it
  exists: a run that could not save would otherwise fail only at its first checkpoint. Tried by
  making a file, which also catches a read-only mount and, for root, an immutable directory."""
  if not os.path.isdir(directory):
    return  # made in the workdir, whose lock showed it writable
  try:
    handle, probe = tempfile.mkstemp(prefix='.writable.', dir=directory)
    os.close(handle)
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(
      f'cannot write in {directory} ({e.strerror or e}), where the run saves its checkpoints: make '
      'it writable or choose another --workdir'
    ) from e


def read_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config a run last started with (workdir/config.json), with today's defaults for fields
  added since and without fields since removed; None if there is no config.json.

  Raises:
    WorkdirError: config.json is not a JSON object.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
    if not isinstance(saved, dict):
      raise ValueError('not a JSON object')
  except (OSError, ValueError) as e:
    raise WorkdirError(
      f'cannot read {path}: {e}; restore it from config.<n>.json beside it, or '
      'choose another --workdir'
    ) from e
  config = default_config.base_config()
  known = default_config.flatten(config)
  config.update_from_flattened_dict(
    {k: v for k, v in default_config.flatten(saved).items() if k in known}
  )
  return config


def _fixed(field: str) -> bool:
  return field not in CHANGEABLE_ON_RESUME and any(
    field == rule or (rule.endswith('.') and field.startswith(rule)) for rule in FIXED_ON_RESUME
  )


def config_changes(
  old: ml_collections.ConfigDict, new: ml_collections.ConfigDict
) -> tuple[list[str], list[str]]:
  """The differences between a run's config and a new one -> (refused, accepted), each a list of
  'field old -> new'. Switching gradient clipping on or off changes the optimiser's state, so it
  is refused; changing its threshold is not."""
  before = default_config.flatten(json.loads(old.to_json_best_effort()))
  after = default_config.flatten(json.loads(new.to_json_best_effort()))
  refused, accepted = [], []
  for field in sorted(set(before) | set(after)):
    a, b = before.get(field), after.get(field)
    if a == b:
      continue
    change = f'{field} {a!r} -> {b!r}'
    clip_switched = field == 'train.grad_clip' and (a > 0) != (b > 0)
    (refused if _fixed(field) or clip_switched else accepted).append(change)
  return refused, accepted


def check_resume(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
  """Compares `config` with the one of the run to be resumed in `workdir` -> the accepted changes.

  Raises:
    WorkdirError: a change the checkpoint cannot follow, listing each such field as old -> new.
  """
  saved = read_config(workdir)
  if saved is None:
    return []
  refused, accepted = config_changes(saved, config)
  if refused:
    raise WorkdirError(
      f'cannot resume {workdir} with this config: {"; ".join(refused)} (its checkpoints hold '
      'another model, optimiser state or data position). Run with the old values to resume, or '
      'choose a new --workdir to start afresh'
    )
  return accepted


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes workdir/config.json; a different config.json already there is kept as
  config.<n>.json (n = 1, 2, ... in order of replacement)."""
  path = os.path.join(workdir, CONFIG_FILE)
  text = config.to_json_best_effort(indent=2)
  if os.path.isfile(path):
    with open(path) as f:
      if f.read() == text:
        return
    taken = [
      int(name[len('config.') : -len('.json')])
      for name in os.listdir(workdir)
      if name.startswith('config.')
      and name.endswith('.json')
      and name[len('config.') : -len('.json')].isdigit()
    ]
    os.replace(path, os.path.join(workdir, f'config.{max(taken, default=0) + 1}.json'))
  files.write_text(path, text)


def strict_json(value):
  """`value` with every non-finite float replaced by None, so json.dumps writes strict JSON
  (bare NaN and Infinity, which Python writes by default, are rejected by most readers)."""
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class MetricsLog:
  """workdir/metrics.jsonl: one strict-JSON record per line, each with its 'step' and 'time'
  (when it was written, Unix seconds); evaluation records also carry 'split'. Written by process
  0 only."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.enabled = enabled

  def write(self, record: dict) -> dict:
    """Appends `record` with its 'time' (now) -> the record as written (before strict_json)."""
    record = {**record, 'time': time.time()}
    if self.enabled:
      with open(self.path, 'a') as f:
        f.write(json.dumps(strict_json(record), allow_nan=False) + '\n')
    return record

  def resume_at(self, step: int, *, replace_eval: bool = False) -> str:
    """Makes the file hold what a run that stopped right after `step` wrote: records of later
    steps (logged after the checkpoint a resume goes back to) and lines that are not whole JSON
    records (a line torn by a kill) are dropped; with `replace_eval`, so are the evaluation
    records of `step` (a finished run evaluated again). -> a note of what was dropped, or ''.
    """
    if not self.enabled or not os.path.isfile(self.path):
      return ''
    with open(self.path, 'rb') as f:
      lines = f.read().split(b'\n')
    kept, later, torn = [], 0, 0
    for line in filter(None, lines):
      try:
        record = json.loads(line)
        record_step = int(record['step'])
      except (ValueError, KeyError, TypeError):
        torn += 1
        continue
      if record_step > step or (replace_eval and record_step == step and 'split' in record):
        later += 1
      else:
        kept.append(line)
    if not later and not torn:
      return ''
    files.write_text(self.path, b''.join(line + b'\n' for line in kept).decode())
    parts = [f'{later} record(s) after step {step}'] if later else []
    parts += [f'{torn} torn line(s)'] if torn else []
    return f'{self.path}: dropped {" and ".join(parts)}'

"""Checkpoints with Orbax: resume a run exactly, or graft a 2D run's weights onto a 3D model.

A checkpoint holds two items: `state` (a pure dict {'model': parameters and batch statistics,
'optimizer': Adam moments and step}) and `data` (the grain iterator's position). Saving pure
dicts keeps checkpoints free of NNX class names and RNG keys, so they outlive refactors.
"""

from __future__ import annotations

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from hpe_jax import trees

# Parameters that only a model with a depth output has; grafting a 2D checkpoint may miss them.
DEPTH_PARTS = 'depth'


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used as asked; the message lists what disagrees."""


def manager(directory: str, *, keep: int = 3, read_only: bool = False, state_handler=None) -> ocp.CheckpointManager:
  """A manager of `directory`; read-only ones only look (at another run's checkpoints).

  `state_handler` replaces the standard handler of the state item (grafting restores a subset of
  it, which only the PyTree handler does).
  """
  options = (ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0,
                                          max_to_keep=None) if read_only else
             ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True))
  # Handlers registered up front, so that metadata can be read before any restore.
  return ocp.CheckpointManager(
      os.path.abspath(directory), options=options,
      item_handlers={'state': state_handler or ocp.StandardCheckpointHandler(),
                     'data': grain.checkpoint.CheckpointHandler()})


def save(mngr: ocp.CheckpointManager, step: int, state: dict, data_iterator) -> None:
  """Saves asynchronously: returns once the arrays are copied off the device."""
  mngr.save(step, force=True, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(data_iterator)))


def restore(mngr: ocp.CheckpointManager, step: int, state_like: dict, data_iterator) -> dict:
  """Restores `state` (shaped and sharded like `state_like`) and the iterator in place."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract),
      data=grain.checkpoint.CheckpointRestore(data_iterator)))
  return restored.state


INIT_FROM_HINT = ('Train the 2D stage first (python -m hpe_jax.main --config=configs/pretrain.py),'
                  ' point --config.init_from at its workdir, or set --config.init_from=\'\' to '
                  'start from scratch.')


def find_checkpoint(path: str, step: int | None = None, hint: str = INIT_FROM_HINT
                    ) -> tuple[str, int]:
  """A run's workdir or its checkpoint directory -> (checkpoint directory, `step` or the latest).

  Raises:
    CheckpointError: no checkpoint there (the message ends with `hint`), or no such step.
  """
  directory = os.path.join(path, 'checkpoints')
  if not os.path.isdir(directory):
    directory = path
  steps = manager(directory, read_only=True).all_steps() if os.path.isdir(directory) else []
  if not steps:
    raise CheckpointError(f'{path!r} holds no checkpoint. {hint}')
  if step is None:
    return directory, max(steps)
  if step not in steps:
    raise CheckpointError(f'{directory} has no step {step}; it has {sorted(steps)}')
  return directory, step


def graft(path: str, model_state: dict, step: int | None = None) -> tuple[dict, list[str]]:
  """Loads a run's model weights (at `step`, None: the latest) into `model_state` (a pure dict of
  a freshly built model).

  Every weight present in both must agree in shape; the fresh model may have extra depth parts
  (they keep their fresh initialisation) and nothing else. Anything else is an error listing the
  missing, unexpected and mismatched keys.
  Returns (grafted pure dict, the keys left at their initialisation).
  """
  directory, step = find_checkpoint(path, step)
  mngr = manager(directory, read_only=True, state_handler=ocp.PyTreeCheckpointHandler())
  saved = trees.flatten(mngr.item_metadata(step).state['model'])
  fresh = trees.flatten(model_state)
  missing = sorted(set(fresh) - set(saved))
  unexpected = sorted(set(saved) - set(fresh))
  mismatched = sorted(f'{k}: checkpoint {tuple(saved[k].shape)} vs model {np.shape(fresh[k])}'
                      for k in set(fresh) & set(saved)
                      if tuple(saved[k].shape) != tuple(np.shape(fresh[k])))
  not_depth = [k for k in missing if DEPTH_PARTS not in k]
  if unexpected or not_depth or mismatched:
    raise CheckpointError(
        f'cannot graft {directory} (step {step}) onto this model: it needs the same architecture '
        'apart from the depth output.\n'
        f'  missing from the checkpoint: {not_depth or "none"}\n'
        f'  unexpected in the checkpoint: {unexpected or "none"}\n'
        f'  shape mismatches: {mismatched or "none"}')
  shared = {k: fresh[k] for k in fresh if k in saved}
  target = _prune(jax.tree.map(ocp.utils.to_shape_dtype_struct, model_state), set(shared))
  target = {'model': target}
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)))
  loaded = trees.flatten(restored.state['model'])
  if set(loaded) != set(shared):  # partial restore can silently skip weights: check
    raise CheckpointError(f'grafting {directory} restored {len(loaded)} of {len(shared)} '
                          f'weights; not restored: {sorted(set(shared) - set(loaded))[:10]}')
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

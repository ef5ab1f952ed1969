"""The model of a prediction, loaded from a run's workdir or from an exported file, with the
record of which model it is that every output names (`load_model`)."""

from __future__ import annotations

import sys

from hpe_jax.inference import pose_model


def _warn(line: str) -> None:
  print(line, file=sys.stderr, flush=True)  # stdout may carry the predictions


def load_model(
  workdir: str | None, model: str | None, batch_size: int | None = None, step=None
) -> tuple[pose_model.PoseModel, dict]:
  """-> (the model of a run's `workdir` or of an exported `model` file, the record of which
  model it is: {'workdir' or 'model', 'step', 'depth'}). `batch_size`: people per device call of
  a run's model (an exported one takes any); `step`: the run's step as `predictor.load` takes it.

  Raises:
    CheckpointError: `workdir` holds no usable run.
    ExportError: `model` is not an exported model this version reads.
  """
  # pylint: disable=g-import-not-at-top  (jax loads once the inputs are checked, so that their
  # errors come at once; Flax and the model code only for a run: an export runs without them)
  if model:
    from hpe_jax.inference import exported

    loaded = exported.load_exported(model)
    return loaded, {'model': model, 'step': loaded.step, 'depth': loaded.has_depth}
  from hpe_jax.inference import predictor
  from hpe_jax.storage import checkpoint

  # The checkpoint is held while it is read: a run still training may delete it meanwhile.
  loaded = checkpoint.read_held(
    lambda: predictor.load(workdir, step=step, batch_size=batch_size), step, warn=_warn
  )
  return loaded, {'workdir': workdir, 'step': loaded.step, 'depth': loaded.has_depth}

"""A trained run's predict step serialised with `jax.export` into one file, weights included,
that `exported.load_exported` runs without Flax or our model code (`hpe-export`).

The module is StableHLO lowered for every platform asked for (CPU and CUDA by default), with a
symbolic batch dimension; the weights are its first argument, stored beside it in the file (see
`exported` for the layout), so the module stays small and the weights stay readable.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
from typing import Callable
import zipfile

import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

from hpe_jax import joints
from hpe_jax.inference import exported
from hpe_jax.inference import predictor as predictor_lib
from hpe_jax.inference import readout
from hpe_jax.models import xla_cpu
from hpe_jax.storage import checkpoint

PLATFORMS = ('cpu', 'cuda')
KNOWN_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')  # jax.export's names


def export_predictor(
  predictor: predictor_lib.Predictor, platforms=PLATFORMS
) -> tuple[jax_export.Exported, list[np.ndarray]]:
  """The predictor's predict step exported for `platforms`, and its weights.

  Returns:
    (exported, weights): exported.call(weights, images) with images (B, S, S, 3) uint8, B any
    size, gives predict_step's dict; weights the flat list of the model's arrays.
  """
  config = predictor.config
  leaves, treedef = jax.tree.flatten(predictor.model_state)
  weights = [np.asarray(leaf) for leaf in leaves]
  predict = functools.partial(
    readout.predict_step,
    predictor.eval_model_def,
    dtype=jnp.dtype(config.model.dtype),
    flip_test=bool(config.eval.flip_test),
    subpixel=bool(config.eval.subpixel),
  )

  def predict_step(weights, images):
    return predict(jax.tree.unflatten(treedef, weights), images)

  (batch,) = jax_export.symbolic_shape('batch')
  size = config.data.image_size
  # The layers' platform switch (models/xla_cpu.py) is staged as it is: each platform's
  # lowering keeps its own forms, as the live model runs them.
  exported_fn = jax_export.export(jax.jit(predict_step), platforms=tuple(platforms))(
    [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights],
    jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8),
  )
  return exported_fn, weights


def export(
  workdir: str,
  out: str,
  *,
  step: int | None = None,
  flip_test: bool | None = None,
  subpixel: bool | None = None,
  platforms=PLATFORMS,
) -> dict:
  """Exports the model of the run in `workdir` into the file `out` (see `exported`'s doc).

  Args:
    workdir: a trained run's directory.
    out: the file to write (replaced if present).
    step: a saved step; None: the latest.
    flip_test, subpixel: override the run's config.eval readout.
    platforms: jax.export's platforms ('cpu', 'cuda', 'rocm', 'tpu').
  Returns:
    The file's header.
  Raises:
    CheckpointError: `workdir` holds no usable run.
    ExportError: `out` cannot be written, or an unknown platform.
  """
  unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
  if unknown or not platforms:
    raise exported.ExportError(
      f'--platforms={",".join(platforms)}: jax.export lowers for {", ".join(KNOWN_PLATFORMS)}, '
      f'not {", ".join(unknown) or "none"}'
    )
  # Checked first: a path that cannot be written should not cost the export.
  _write(out, lambda file: None)
  # The checkpoint is held while it is read: a run still training may delete it meanwhile.
  predictor = checkpoint.read_held(
    lambda: predictor_lib.load(
      workdir, step=step, flip_test=flip_test, subpixel=subpixel, batch_size=1
    ),
    step,
    warn=lambda line: print(line, file=sys.stderr, flush=True),
  )
  exported_fn, weights = export_predictor(predictor, platforms)
  config = predictor.config
  header = {
    'format': exported.FORMAT,
    'format_version': exported.FORMAT_VERSION,
    'image_size': int(config.data.image_size),
    'joints': list(joints.MPII16),
    'num_joints': len(joints.MPII16),
    'flip_test': bool(config.eval.flip_test),
    'subpixel': bool(config.eval.subpixel),
    'has_depth': predictor.has_depth,
    'dtype': str(jnp.dtype(config.model.dtype)),
    'model': config.model.name,
    'workdir': os.path.abspath(workdir),
    'step': int(predictor.step),
    'platforms': list(exported_fn.platforms),
    # What the live model compiles with, per platform (jax.jit's compiler_options).
    'compiler_options': {'cpu': dict(xla_cpu.CPU_COMPILER_OPTIONS)},
    'weights': [{'shape': list(w.shape), 'dtype': str(w.dtype)} for w in weights],
    'jax_version': jax.__version__,
  }
  # The header describes the module as load_exported checks it: a field that drifts from what
  # export_predictor lowers fails here, not in a user's hpe-predict.
  exported.check_header(out, header, exported_fn)

  def write_archive(file) -> None:
    with zipfile.ZipFile(file, 'w', zipfile.ZIP_DEFLATED) as archive:
      archive.writestr(exported.HEADER, json.dumps(header, indent=2))
      archive.writestr(exported.MODULE, bytes(exported_fn.serialize()))
      for index, weight in enumerate(weights):
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, weight, allow_pickle=False)
        archive.writestr(exported.WEIGHTS.format(index), buffer.getvalue())

  _write(out, write_archive)
  return header


def _write(out: str, write: Callable) -> None:
  """Writes `out` through `write(file)` into out.partial, renamed into place only when complete
  (a reader never sees half a file); a `write` that writes nothing checks that `out` can be
  written and leaves nothing behind.

  Raises:
    ExportError: `out` cannot be written.
  """
  partial = f'{out}.partial'
  try:
    try:
      with open(partial, 'wb') as file:
        write(file)
        written = file.tell()
      if written:
        os.replace(partial, out)
    finally:
      if os.path.exists(partial):
        os.remove(partial)
  except OSError as e:
    raise exported.ExportError(
      f'--out={out} cannot be written ({e.strerror or e}): choose another path'
    ) from None

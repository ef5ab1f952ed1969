"""A trained model exported by `hpe-export`, loaded and run with jax and numpy
alone: no Flax and none of our model code.

  from hpe_jax import inference
  model = inference.load_exported('model.hpe')
  result = model.predict(image, box=(x, y, w, h))  # as inference.load(workdir)'s Predictor

The file is a zip archive:
  header.json      {'format': FORMAT, 'format_version': FORMAT_VERSION, the readout and input
                   (image_size, joints, flip_test, subpixel, has_depth, dtype), the run it came
                   from (workdir, step), platforms, the weights' shapes and dtypes, versions}
  module.jaxexport the predict step, jax.export's serialisation (StableHLO) of
                   (weights, images (B, S, S, 3) uint8) -> {'pred_xy' (B, J, 2), 'pred_peak'
                   (B, J), 'pred_depth' (B, J) for models with depth}, B symbolic
  weights/NNNNN.npy the weights in the order of the module's first argument
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile

import jax
from jax import export as jax_export
import numpy as np

from hpe_jax import errors
from hpe_jax.inference import pose_model

FORMAT = 'hpe_jax.exported_model'
FORMAT_VERSION = 1
HEADER = 'header.json'
MODULE = 'module.jaxexport'
WEIGHTS = 'weights/{:05d}.npy'


class ExportError(errors.HpeError, ValueError):
  """An exported model cannot be written or read; the message names the file and the fix."""


class ExportedModel(pose_model.PoseModel):
  """An exported model ready for inference, as a run's `Predictor` is; make one with
  `load_exported`."""

  def __init__(self, path: str, header: dict, exported: jax_export.Exported, weights: list):
    self.path = path
    self.header = header
    self.exported = exported
    platform = jax.default_backend()
    # An export runs on the platforms it was lowered for; 'gpu' is how jax names CUDA here.
    lowered_for = {'cuda': 'gpu', 'rocm': 'gpu'}
    if not any(lowered_for.get(p, p) == platform for p in exported.platforms):
      raise ExportError(
        f'{path} was exported for {", ".join(exported.platforms)}, this machine runs '
        f'{platform}: export it again with --platforms={platform}'
      )
    self.weights = jax.device_put(weights)
    options = header.get('compiler_options', {}).get(platform, {})
    self._call = jax.jit(exported.call, compiler_options=options)
    if options:
      self._plain_call = jax.jit(exported.call)

  @property
  def image_size(self) -> int:
    return int(self.header['image_size'])

  @property
  def has_depth(self) -> bool:
    return bool(self.header['has_depth'])

  @property
  def step(self) -> int:
    """The training step of the exported weights."""
    return int(self.header['step'])

  def run_network(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """`predict_inputs` (`pose_model.PoseModel`'s) in one call of the exported module."""
    # The batch dimension is symbolic: any N runs (compiled once per N).
    try:
      outputs = self._call(self.weights, inputs.astype(np.uint8))
    except jax.errors.JaxRuntimeError as e:
      if 'compile option' not in str(e) or not hasattr(self, '_plain_call'):
        raise
      # A jaxlib that no longer knows an option the file names: XLA's defaults (slower).
      warnings.warn(f"{self.path}: {e}; compiling with XLA's default options", stacklevel=3)
      self._call = self._plain_call
      outputs = self._call(self.weights, inputs.astype(np.uint8))
    return {key: np.asarray(value) for key, value in outputs.items()}


def load_exported(path: str) -> ExportedModel:
  """Loads a model written by `hpe-export`.

  Raises:
    ExportError: `path` is missing, not an exported model, of another format version, damaged,
      or exported for another platform.
  """
  with _open(path) as archive:
    header = _header(path, archive)
    try:
      exported = jax_export.deserialize(bytearray(archive.read(MODULE)))
      weights = []
      for index in range(len(header['weights'])):
        with archive.open(WEIGHTS.format(index)) as f:
          weights.append(np.lib.format.read_array(f, allow_pickle=False))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
      raise ExportError(
        f'{path} is damaged ({type(e).__name__}: {e}): export the run again'
      ) from None
  avals = exported.in_avals[: len(weights)]
  # .npy has no bfloat16: such weights come back as raw 2-byte records, read as the module's.
  weights = [
    w.view(a.dtype) if w.dtype.kind == 'V' and w.dtype.itemsize == a.dtype.itemsize else w
    for w, a in zip(weights, avals)
  ]
  expected = [(tuple(a.shape), str(a.dtype)) for a in avals]
  if [(tuple(w.shape), str(w.dtype)) for w in weights] != expected:
    raise ExportError(f'{path} is damaged: its weights do not fit its module; export it again')
  return ExportedModel(path, header, exported, weights)


def _open(path: str) -> zipfile.ZipFile:
  if not os.path.isfile(path):
    raise ExportError(
      f'{path}: no such file (an exported model is written by hpe-export --workdir=RUN --out=FILE)'
    )
  try:
    return zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise ExportError(
      f'{path} is not an exported model ({e}): write one with hpe-export --workdir=RUN --out=FILE'
    ) from None


def _header(path: str, archive: zipfile.ZipFile) -> dict:
  try:
    header = json.loads(archive.read(HEADER))
  except (KeyError, ValueError, zipfile.BadZipFile):
    header = None
  if not isinstance(header, dict) or header.get('format') != FORMAT:
    raise ExportError(
      f'{path} is not an exported model (a zip without our {HEADER}): write one with '
      'hpe-export --workdir=RUN --out=FILE'
    )
  version = header.get('format_version')
  if version != FORMAT_VERSION:
    raise ExportError(
      f'{path} has format version {version}; this hpe_jax reads version {FORMAT_VERSION}: '
      'export the run again with this version (or use the hpe_jax that wrote it)'
    )
  return header

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

import io
import json
import os
import warnings
import zipfile
import zlib

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
  """Loads a model written by `hpe-export`, its header checked against its module.

  Raises:
    ExportError: `path` is missing, not an exported model, of another format version, damaged
      (a part that does not read back, a header field missing or of the wrong type, a header
      that disagrees with the module: image size, depth, joints, weights), or exported for
      another platform.
  """
  with _open(path) as archive:
    header = _header(path, archive)
    module = _read(path, archive, MODULE)
    try:
      exported = jax_export.deserialize(bytearray(module))
    except Exception as e:  # pylint: disable=broad-except  (flatbuffers' errors are untyped)
      raise ExportError(
        f'{path} is damaged ({MODULE} does not deserialise: {type(e).__name__}): export the run '
        'again'
      ) from None
    count = check_header(path, header, exported)
    weights = []
    for index in range(count):
      name = WEIGHTS.format(index)
      data = _read(path, archive, name)
      try:
        weights.append(np.lib.format.read_array(io.BytesIO(data), allow_pickle=False))
      except (ValueError, OSError, EOFError) as e:
        raise ExportError(f'{path} is damaged ({name}: {e}): export the run again') from None
  avals = exported.in_avals[:count]
  # .npy has no bfloat16: such weights come back as raw 2-byte records, read as the module's.
  weights = [
    w.view(a.dtype) if w.dtype.kind == 'V' and w.dtype.itemsize == a.dtype.itemsize else w
    for w, a in zip(weights, avals)
  ]
  expected = [(tuple(a.shape), str(a.dtype)) for a in avals]
  if [(tuple(w.shape), str(w.dtype)) for w in weights] != expected:
    raise ExportError(f'{path} is damaged: its weights do not fit its module; export the run again')
  return ExportedModel(path, header, exported, weights)


# The header's fields that loading and predicting read, and their JSON types.
_FIELDS = {
  'image_size': int,
  'num_joints': int,
  'has_depth': bool,
  'step': int,
  'weights': list,
  'platforms': list,
}


def check_header(path: str, header: dict, exported: jax_export.Exported) -> int:
  """Checks that `header` has the fields loading reads and that they describe `exported` (its
  image size, depth, joints and weights); -> the number of weights.

  Raises:
    ExportError: naming the field.
  """
  again = 'export the run again (hpe-export --workdir=RUN --out=FILE)'
  for field, kind in _FIELDS.items():
    if field not in header:
      raise ExportError(f'{path} is damaged: its {HEADER} lacks "{field}"; {again}')
    value = header[field]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
      raise ExportError(
        f'{path} is damaged: its {HEADER} "{field}" is {json.dumps(value)[:40]}, not '
        f'{"a number" if kind is int else "true or false" if kind is bool else "a list"}; {again}'
      )
  options = header.get('compiler_options', {})
  if not isinstance(options, dict) or not all(isinstance(o, dict) for o in options.values()):
    raise ExportError(
      f'{path} is damaged: its {HEADER} "compiler_options" is not per platform a dict of '
      f'options; {again}'
    )
  outputs = jax.tree.unflatten(exported.out_tree, exported.out_avals)
  images = exported.in_avals[-1] if exported.in_avals else None
  if (
    images is None
    or len(images.shape) != 4
    or not isinstance(outputs, dict)
    or 'pred_xy' not in outputs
    or len(outputs['pred_xy'].shape) != 3
  ):
    raise ExportError(f'{path} is damaged: its {MODULE} is not a predict step; {again}')
  disagree = f'{path} is damaged: its {HEADER} disagrees with its {MODULE}:'
  size, joints_out = images.shape[1], outputs['pred_xy'].shape[1]
  if header['image_size'] != size:
    raise ExportError(
      f'{disagree} "image_size" is {header["image_size"]}, the module takes {size} x {size} '
      f'images; {again}'
    )
  if header['has_depth'] != ('pred_depth' in outputs):
    raise ExportError(
      f'{disagree} "has_depth" is {json.dumps(header["has_depth"])}, the module predicts '
      f'{"depth" if "pred_depth" in outputs else "2D only"}; {again}'
    )
  if header['num_joints'] != joints_out:
    raise ExportError(
      f'{disagree} "num_joints" is {header["num_joints"]}, the module predicts {joints_out}; '
      f'{again}'
    )
  count = len(exported.in_avals) - 1
  listed = header['weights']
  if len(listed) != count:
    raise ExportError(
      f'{disagree} "weights" lists {len(listed)} arrays, the module takes {count}; {again}'
    )
  for index, (entry, aval) in enumerate(zip(listed, exported.in_avals)):
    want = {'shape': list(aval.shape), 'dtype': str(aval.dtype)}
    if not isinstance(entry, dict) or {k: entry.get(k) for k in want} != want:
      raise ExportError(
        f'{disagree} "weights"[{index}] is {json.dumps(entry)[:60]}, the module takes '
        f'{json.dumps(want)}; {again}'
      )
  return count


def _read(path: str, archive: zipfile.ZipFile, name: str) -> bytes:
  """The bytes of `name` in the archive.

  Raises:
    ExportError: it is missing or does not read back (a CRC or deflate error: flipped bytes).
  """
  try:
    return archive.read(name)
  except KeyError:
    raise ExportError(f'{path} is damaged (it holds no {name}): export the run again') from None
  except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as e:
    raise ExportError(
      f'{path} is damaged ({name} does not read back: {e}): export the run again'
    ) from None


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
  if HEADER not in archive.namelist():
    header = None
  else:
    data = _read(path, archive, HEADER)
    try:
      header = json.loads(data)
    except ValueError as e:  # not JSON, or not UTF-8
      raise ExportError(
        f'{path} is damaged (its {HEADER} is not JSON: {e}): export the run again'
      ) from None
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

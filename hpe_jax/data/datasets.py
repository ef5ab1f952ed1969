"""Finding built datasets: names, default splits per role, and clear errors when one is missing.

A dataset is named as in TFDS, optionally with a builder config and a split (TFDS slicing
included): `synthetic_humans`, `lsp_extended/small`, `mpii:validation`, `lsp_extended:train[:1800]`.
A comma-separated list names several sources for one role (`mpii,lsp_extended`).
"""

from __future__ import annotations

import bisect
import dataclasses
import glob
import logging
import os
import shutil
import sys

from google.protobuf import message
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from hpe_jax import errors
from hpe_jax import locks
from hpe_jax.data import builders  # noqa: F401  (registers our builders with TFDS)

# Which split serves each role when the name does not say. Builders override it with a
# DEFAULT_SPLITS class attribute (the synthetic set keeps its 2D and 3D sources disjoint).
_DEFAULT_SPLITS = {'2d': 'train', '3d': 'train', 'eval': 'validation'}
_ENV_DATA_DIR = 'HPE_DATA_DIR'


class DatasetError(errors.HpeError, RuntimeError):
  """A dataset cannot be used as asked; the message says what to do."""


class _BuildNotesFilter(logging.Filter):
  """Drops TFDS's warning that a dataset's version folder has no dataset_info.json yet: it came
  twice with every first build (the folder being built), and `resolve` builds or reports a
  dataset that is not built."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith('Variant folder ')


logging.getLogger('absl').addFilter(_BuildNotesFilter())


@dataclasses.dataclass(frozen=True)
class DatasetRef:
  """One named split of one built dataset."""

  name: str  # TFDS name, with /config if any
  split: str
  data_dir: str

  def __str__(self):
    return f'{self.name}:{self.split}'


def default_data_dir(data_dir: str = '') -> str:
  """The data directory: the argument, else $HPE_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(data_dir or os.environ.get(_ENV_DATA_DIR, '~/tensorflow_datasets'))


def _builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  dataset, _, config = name.partition('/')
  if dataset not in builders.NAMES:
    raise DatasetError(
      f'unknown dataset {dataset!r}: hpe_jax provides {", ".join(sorted(builders.NAMES))}'
    )
  configs = tfds.builder_cls(dataset).builder_configs
  if config and config not in configs:
    raise DatasetError(
      f'dataset {dataset!r} has no config {config!r}; it has {", ".join(sorted(configs))}'
    )
  return tfds.builder(name, data_dir=data_dir, file_format='array_record')


def resolve(
  spec: str,
  role: str,
  data_dir: str = '',
  build_if_missing: bool = True,
  *,
  plan_only: bool = False,
) -> DatasetRef:
  """Turns 'name[/config][:split]' into a reference to a built split.

  Datasets that need no download (the embedded synthetic set) are built on first use; any other
  dataset that is not built is an error that says how to build it. With `plan_only`, nothing is
  built or written: a dataset that is not built yet resolves to the split named or its role's
  default, unchecked (for planning commands that build or find it when they run).
  """
  name, _, split = spec.partition(':')
  data_dir = default_data_dir(data_dir)
  builder = _builder(name, data_dir)
  split = split or getattr(builder, 'DEFAULT_SPLITS', _DEFAULT_SPLITS)[role]
  if not builder.is_prepared():
    if plan_only:
      return DatasetRef(name, split, data_dir)
    if getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) or not build_if_missing:
      raise DatasetError(
        f'dataset {name!r} is not built in {data_dir}. Build it with\n'
        f'  hpe-build-dataset {name} --manual_dir=DIR --data_dir={data_dir}\n'
        f'or point --config.data.data_dir (or ${_ENV_DATA_DIR}) at the directory that holds it.'
      )
    print(f'Building {name} in {data_dir} (first use; it needs no download)...', flush=True)
    prepare(builder)
    builder = _builder(name, data_dir)  # another process may have built it meanwhile
    print(f'Built {name} in {builder.data_dir}.', flush=True)
  if split.partition('[')[0] not in builder.info.splits:
    raise DatasetError(
      f'dataset {name!r} has no split {split!r}; it has {", ".join(sorted(builder.info.splits))}'
    )
  return DatasetRef(name, split, data_dir)


BUILD_LOCK = 'build.lock'


def prepare(builder: tfds.core.DatasetBuilder, **download_and_prepare_kwargs) -> None:
  """builder.download_and_prepare(), one build at a time per dataset directory: a build that
  finds another under way waits for it (and does nothing if that one built the dataset). The
  `incomplete.*` folders of an interrupted build (killed, SIGTERM'd) are removed first; TFDS's
  progress bars are off when stdout or stderr is not a terminal."""
  directory = os.path.dirname(builder.data_dir)  # data_dir/name/config: TFDS's scratch goes here
  os.makedirs(directory, exist_ok=True)
  waiting = lambda pid: print(
    f'Waiting for another build of {builder.name} in {directory} (PID {pid})...', flush=True
  )
  with locks.exclusive(os.path.join(directory, BUILD_LOCK), on_wait=waiting):
    if builder.is_prepared():
      return
    for leftover in sorted(glob.glob(os.path.join(directory, 'incomplete.*'))):
      print(f'Removing {leftover}: the unfinished output of an interrupted build.', flush=True)
      shutil.rmtree(leftover)
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
      # TFDS's bars redraw with carriage returns: a log file gets a line per update.
      tfds.disable_progress_bar()
    # TFDS prints 'Downloading and preparing dataset Unknown size (download: Unknown size, ...)'
    # before a build and '... downloaded and prepared ...' after it: our builders download
    # nothing (they read the files a user downloaded, or generate their examples); the callers
    # say what is built where.
    builder._log_download_bytes = lambda: None  # pylint: disable=protected-access
    builder._log_download_done = lambda: None  # pylint: disable=protected-access
    builder.download_and_prepare(**download_and_prepare_kwargs)


def data_source(ref: DatasetRef) -> ExampleSource:
  """Random-access source over one split; images stay encoded JPEG bytes. A damaged file of the
  split (bytes changed, cut short) is a DatasetError naming it and how to rebuild the dataset,
  when it is read."""
  return ExampleSource(
    tfds.data_source(
      ref.name,
      split=ref.split,
      data_dir=ref.data_dir,
      decoders={'image': tfds.decode.SkipDecoding()},
      builder_kwargs={'file_format': 'array_record'},
    ),
    ref,
  )


def rebuild_hint(ref: DatasetRef, directory: str) -> str:
  """How to rebuild the dataset of `ref`, built in `directory` (its version folder)."""
  name, _, config = ref.name.partition('/')
  command = f'hpe-build-dataset {name}' + (f' --config={config}' if config else '')
  if getattr(tfds.builder_cls(name), 'MANUAL_DOWNLOAD_INSTRUCTIONS', None):
    command += ' --manual_dir=DIR'
  return f'delete {directory} and rebuild it: {command} --data_dir={ref.data_dir}'


# What array_record (Riegeli) and protobuf raise for a file whose bytes are not what was written.
_DAMAGE_ERRORS = (RuntimeError, OSError, ValueError, message.DecodeError)


class ExampleSource:
  """A TFDS data source's examples, parsed about 3x faster than TFDS parses them.

  Gives what the TFDS source gives: arrays of each Tensor feature's dtype and shape, Python
  scalars for scalar features, bytes for Text and for the undecoded image. TFDS turns each
  `tf.train.Example` into numpy through per-feature Python layers, about a fifth of the input
  pipeline's time per image (BENCHMARKS.md, "Feeding the device"); here one loop reads each
  feature's list straight into its array. A dataset with a feature of any other kind is parsed
  by TFDS. Picklable (grain's worker processes get a copy).
  """

  def __init__(self, tfds_source, ref: DatasetRef | None = None):
    self._tfds = tfds_source
    self._ref = ref
    self._spec = _parse_spec(tfds_source.dataset_info.features)

  def __len__(self) -> int:
    return len(self._tfds)

  def __getitem__(self, index) -> dict:
    record = self.record(index)
    try:
      return self.parse(record)
    except _DAMAGE_ERRORS as e:
      raise self._damaged(index, e) from None

  def record(self, index) -> bytes:
    """The stored bytes of example `index`.

    Raises:
      DatasetError: the file holding it is damaged; the message names it and how to rebuild.
    """
    try:
      return self._tfds.data_source[index]
    except DatasetError:
      raise
    except _DAMAGE_ERRORS as e:
      raise self._damaged(index, e) from None

  def _damaged(self, index: int, error: BaseException) -> DatasetError:
    shard = _file_of(self._tfds.data_source, index)
    directory = os.path.dirname(shard) if shard else ''
    where = self._ref or self._tfds.split
    reason = ' '.join(str(error).split())[:160] or type(error).__name__
    hint = rebuild_hint(self._ref, directory or 'its directory') if self._ref else 'rebuild it'
    return DatasetError(
      f'{shard or "a file of " + str(where)} cannot be read (example {index} of {where}: '
      f'{reason}); {hint}'
    )

  def parse(self, record: bytes) -> dict:
    """Stored bytes -> the example, as `source[index]` gives it."""
    if self._spec is None:
      return self._tfds.dataset_info.features.deserialize_example_np(
        record, decoders=self._tfds.decoders
      )
    return _parse_example(record, self._spec)

  def __repr__(self) -> str:
    return f'ExampleSource({self._tfds!r})'

  @property
  def dataset_info(self):
    return self._tfds.dataset_info


def _file_of(array_record_source, index: int) -> str:
  """The file holding record `index` of an array_record data source ('' if it cannot tell)."""
  instructions = getattr(array_record_source, '_read_instructions', None)
  if not instructions:
    return ''
  ends = np.cumsum([instruction.num_records for instruction in instructions])
  position = bisect.bisect_right(ends, index)
  return instructions[min(position, len(instructions) - 1)].filename


def _parse_spec(feature_dict) -> dict | None:
  """{name: (list field, numpy dtype or None for bytes, shape)} for a FeaturesDict of plain
  Tensors, Text and the (skip-decoded) Image; None if it holds anything else."""
  spec = {}
  for name, feature in feature_dict.items():
    if isinstance(feature, (tfds.features.Image, tfds.features.Text)):
      spec[name] = ('bytes_list', None, ())
    elif type(feature) is tfds.features.Tensor and _stored_as_values(feature):
      dtype = np.dtype(feature.np_dtype)
      field = 'float_list' if dtype.kind == 'f' else 'int64_list'
      spec[name] = (field, dtype, tuple(feature.shape))
    else:
      return None
  return spec


def _stored_as_values(feature) -> bool:
  """Whether a Tensor is stored as its list of numbers (not as encoded bytes), at a fixed shape."""
  info = feature.get_serialized_info()
  return (
    None not in feature.shape
    and tuple(info.shape) == tuple(feature.shape)
    and np.dtype(info.np_dtype).kind in 'biuf'
  )


def _parse_example(record: bytes, spec: dict) -> dict:
  feature = tf_example_pb2.Example.FromString(record).features.feature
  example = {}
  for name, (field, dtype, shape) in spec.items():
    values = getattr(feature[name], field).value
    if dtype is None:
      example[name] = values[0]
    elif shape:
      example[name] = np.array(values, dtype).reshape(shape)
    else:  # TFDS gives scalars as Python numbers
      example[name] = dtype.type(values[0]).item()
  return example

"""The grain input pipeline: sources -> augmented samples -> mixed 2D/3D batches -> device arrays.

Every training batch holds exactly `num_3d` samples from the 3D sources followed by the rest from
the 2D sources: each role is batched at its own size and the two batches are zipped, so the ratio
is exact in every batch (not just on average). Each process reads only its consecutive share of
every global batch, so the global batches are the same whatever the number of processes;
`to_global` assembles the sharded global array, and `DeviceBatches` does so ahead of the steps.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
import json

import grain
import jax
import ml_collections
import numpy as np

from hpe_jax import default_config
from hpe_jax.data import augment
from hpe_jax.data import datasets


def _process_slice(dataset: grain.MapDataset) -> grain.MapDataset:
  """Every process_count-th element, from this process's index (evaluation's share)."""
  if jax.process_count() > 1:
    dataset = dataset[jax.process_index() :: jax.process_count()]
  return dataset


def _process_batches(dataset: grain.MapDataset, global_size: int) -> grain.MapDataset:
  """This process's consecutive share of each global batch of `dataset` (lazily: the other
  processes' samples are never read). Every process slices the same global stream, so the
  global batches, and hence the losses, do not depend on the number of processes."""
  processes = jax.process_count()
  return dataset.batch(global_size // processes, drop_remainder=True)[
    jax.process_index() :: processes
  ]


def train_transform(data_config, role: str) -> augment.PoseTransform:
  """The augmented transform of the training samples of one role ('2d' or '3d')."""
  aug = data_config.augment
  return augment.PoseTransform(
    image_size=data_config.image_size,
    use_3d=role == '3d',
    augmentation=augment.Augmentation(
      scale_sigma=aug.scale_sigma,
      scale_limit=aug.scale_limit,
      rotation_prob=aug.rotation_prob,
      rotation_sigma=aug.rotation_sigma,
      rotation_limit=aug.rotation_limit,
      flip=aug.flip,
    ),
    rotate=role == '2d' or aug.rotate_3d,
  )


def _role_dataset(
  sources: default_config.Sources, role: str, data_config, seed: int
) -> grain.MapDataset:
  """An endless, shuffled, augmented stream of samples from the sources of one role."""
  transform = train_transform(data_config, role)
  streams, sizes = [], []
  for index, spec in enumerate(sources.specs):
    ref = datasets.resolve(spec, role, data_config.data_dir)
    source = datasets.data_source(ref)
    if not len(source):
      raise datasets.DatasetError(f'{ref} is empty: nothing to train on')
    if role == '3d' and not source[0]['has_3d']:
      raise datasets.DatasetError(
        f'{ref} has no 3D labels and cannot be a 3D source (data.train_3d); use it in data.train_2d'
      )
    sizes.append(len(source))
    streams.append(grain.MapDataset.source(source).shuffle(seed=seed + index).repeat())
  weights = sources.weights or [size / sum(sizes) for size in sizes]
  dataset = streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, weights)
  return dataset.random_map(transform, seed=seed)


def _concat(batches: tuple[dict, ...]) -> dict:
  return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def train_dataset(run: default_config.RunSpec) -> grain.IterDataset:
  """The training stream of per-process batches (this process's share of each global batch)."""
  config = run.config
  parts = []
  for role, seed in (('3d', config.seed + 1000), ('2d', config.seed)):
    sources = run.sources(role)
    if sources.specs:
      samples = _role_dataset(sources, role, config.data, seed)
      parts.append(_process_batches(samples, sources.batch_size))
  if len(parts) == 1:
    dataset = parts[0]
  else:  # both are endless, but batched at other sizes their nominal lengths differ
    length = min(len(part) for part in parts)
    dataset = grain.experimental.ZipMapDataset([part[:length] for part in parts]).map(_concat)
  iter_dataset = dataset.to_iter_dataset(
    grain.ReadOptions(num_threads=config.data.threads, prefetch_buffer_size=4)
  )
  if config.data.workers > 0:
    iter_dataset = iter_dataset.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=config.data.workers)
    )
  return iter_dataset


def eval_size(ref: datasets.DatasetRef, limit: int = 0) -> int:
  """How many examples `eval_batches` evaluates."""
  size = len(datasets.data_source(ref))
  return min(size, limit) if limit else size


def eval_batches(
  ref: datasets.DatasetRef, config: ml_collections.ConfigDict, *, batch_size: int, limit: int = 0
) -> Iterator[dict]:
  """This process's share of each evaluation batch of `batch_size` (global) examples, in order,
  without augmentation. The batch size is the evaluation's own (a trained run may be evaluated
  with other batches than it trained with), not config.train.batch_size.

  Each sample carries `index`, its position in the split. Every process yields the same number
  of full batches (the step is compiled for one shape and
  all processes must take part in each): missing samples are copies of the last real one with
  `valid` False.
  """
  dataset = grain.MapDataset.source(datasets.data_source(ref))
  if limit:
    dataset = dataset[:limit]
  num_batches = -(-len(dataset) // batch_size)
  per_process = batch_size // jax.process_count()
  transform = augment.PoseTransform(image_size=config.data.image_size, use_3d=True)
  dataset = dataset.map(transform).map_with_index(_with_index)
  samples = iter(
    _process_slice(dataset).to_iter_dataset(grain.ReadOptions(num_threads=config.data.threads))
  )
  last = None
  for _ in range(num_batches):
    batch = [sample for _, sample in zip(range(per_process), samples)]
    last = batch[-1] if batch else last
    valid = np.arange(per_process) < len(batch)
    batch += [last] * (per_process - len(batch))
    yield dict({key: np.stack([s[key] for s in batch]) for key in batch[0]}, valid=valid)


def _with_index(index: int, sample: dict) -> dict:
  return {**sample, 'index': np.int32(index)}


def to_global(batch: dict, sharding: jax.sharding.NamedSharding) -> dict:
  """Per-process numpy batch -> global jax arrays sharded along the batch axis."""
  return {
    key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
    for key, value in batch.items()
  }


class DeviceBatches:
  """The batches of `host` (a grain iterator of this process's shares) as global device arrays
  sharded by `sharding` (`to_global`), `ahead` of them put on the devices before they are asked
  for: their transfer overlaps the steps already dispatched (as big_vision's prefetch_iterator).

  Its state is the position of the batches handed out, not of those put ahead: a checkpoint of
  the steps that consumed N batches resumes at batch N + 1. It is saved and restored as grain's
  Orbax handler saves an iterator (the same JSON file a grain iterator's state makes), so a
  checkpoint holds it in place of `host`.
  """

  def __init__(self, host, sharding: jax.sharding.NamedSharding, ahead: int = 2):
    self._host, self._sharding, self._ahead = host, sharding, ahead
    self._queue = collections.deque()  # (host state before the batch, as JSON; device batch)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    while len(self._queue) <= self._ahead:
      # Serialised now: a later step of `host` cannot change it.
      state = self._host_state()
      try:
        batch = next(self._host)
      except StopIteration:
        break
      self._queue.append((state, to_global(batch, self._sharding)))
    if not self._queue:
      raise StopIteration
    return self._queue.popleft()[1]

  def _host_state(self) -> bytes:
    return json.dumps(self._host.get_state(), indent=4).encode()

  def get_state(self) -> bytes:
    return self._queue[0][0] if self._queue else self._host_state()

  def set_state(self, state: bytes) -> None:
    self._queue.clear()
    self._host.set_state(json.loads(state))

  def start_prefetch(self) -> None:
    """Starts `host` reading (grain's handler calls it after a restore)."""
    self._host.start_prefetch()

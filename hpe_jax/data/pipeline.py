"""The grain input pipeline: sources -> augmented samples -> mixed 2D/3D batches -> device arrays.

Every training batch holds exactly `num_3d` samples from the 3D sources followed by the rest from
the 2D sources: each role is batched at its own size and the two batches are zipped, so the ratio
is exact in every batch (not just on average). Each process reads only its consecutive share of
every global batch, so the global batches are the same whatever the number of processes;
`to_global` assembles the sharded global array.
"""

from __future__ import annotations

from collections.abc import Iterator

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


def _role_dataset(specs: list[str], role: str, data_config, seed: int) -> grain.MapDataset:
  """An endless, shuffled, augmented stream of samples from the sources of one role."""
  transform = train_transform(data_config, role)
  streams, sizes = [], []
  for index, spec in enumerate(specs):
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
  weights = default_config.mixing_weights(data_config, role) or [
    size / sum(sizes) for size in sizes
  ]
  dataset = streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, weights)
  return dataset.random_map(transform, seed=seed)


def _concat(batches: tuple[dict, ...]) -> dict:
  return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def train_dataset(config: ml_collections.ConfigDict) -> grain.IterDataset:
  """The training stream of per-process batches (this process's share of each global batch)."""
  specs_2d = default_config.parse_list(config.data.train_2d)
  specs_3d = default_config.parse_list(config.data.train_3d)
  num_2d, num_3d = default_config.batch_composition(config)
  parts = []
  if specs_3d:
    parts.append(
      _process_batches(_role_dataset(specs_3d, '3d', config.data, config.seed + 1000), num_3d)
    )
  if specs_2d:
    parts.append(_process_batches(_role_dataset(specs_2d, '2d', config.data, config.seed), num_2d))
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

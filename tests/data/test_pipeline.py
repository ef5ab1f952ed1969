"""The input pipeline: exact 2D:3D batches, determinism, resumable state, augmentation geometry."""

from conftest import TINY_DATASET
from conftest import assert_same_example
from conftest import tiny_config
import cv2
import grain
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from hpe_jax import default_config
from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data import augment
from hpe_jax.data import datasets
from hpe_jax.data import features
from hpe_jax.data import pipeline
from hpe_jax.storage import checkpoint


def _batches(config, count):
  iterator = iter(pipeline.train_dataset(default_config.describe(config)))
  return [next(iterator) for _ in range(count)], iterator


def test_every_batch_has_the_exact_2d_3d_split(data_dir):
  config = tiny_config(data_dir, depth=True, **{'data.fraction_3d': 0.25})
  batches, _ = _batches(config, 5)
  for batch in batches:
    assert batch['image'].shape == (8, 64, 64, 3) and batch['image'].dtype == np.uint8
    np.testing.assert_array_equal(batch['has_3d'], [True] * 2 + [False] * 6)
    assert np.all(batch['depth'][2:] == 0)  # 2D samples carry no depth target
    assert np.any(batch['depth'][:2] != 0)


def test_processes_split_each_global_batch_without_overlap_or_gaps(data_dir, monkeypatch):
  """With 2 processes, process p reads the p-th half of both the 3D and the 2D part of every
  global batch of 1 process: no sample read twice or skipped, the same augmentation."""
  config = tiny_config(data_dir, depth=True)
  single, _ = _batches(config, 3)
  shares = []
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  for process in range(2):
    monkeypatch.setattr(jax, 'process_index', lambda process=process: process)
    shares.append(_batches(config, 3)[0])
  for step, batch in enumerate(single):
    first, second = shares[0][step], shares[1][step]
    for key in batch:  # single = [3D 0-3, 2D 4-7]; process p = [3D 2p, 2p+1; 2D 4+2p, 5+2p]
      np.testing.assert_array_equal(
        np.concatenate([first[key][:2], second[key][:2], first[key][2:], second[key][2:]]),
        batch[key],
        err_msg=key,
      )


def test_same_seed_same_batches_and_other_seed_differs(data_dir):
  first, _ = _batches(tiny_config(data_dir), 3)
  again, _ = _batches(tiny_config(data_dir), 3)
  other, _ = _batches(tiny_config(data_dir, seed=1), 3)
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(first[0]['joints'], other[0]['joints'])


def test_epochs_are_reshuffled_and_cover_the_split(data_dir):
  """64 training examples, batch 8: each epoch of 8 batches sees every example once."""
  config = tiny_config(
    data_dir,
    **{
      'data.augment.flip': False,
      'data.augment.scale_sigma': 0.0,
      'data.augment.rotation_prob': 0.0,
    },
  )
  batches, _ = _batches(config, 16)
  keys = [tuple(np.round(j[6], 2)) for b in batches for j in b['joints']]  # pelvis position
  first, second = keys[:64], keys[64:]
  assert len(set(first)) == 64 and set(first) == set(second)
  assert first != second


def test_iterator_state_round_trip(data_dir):
  config = tiny_config(data_dir, depth=True)
  _, iterator = _batches(config, 2)
  state = iterator.get_state()
  expected = next(iterator)
  resumed = iter(pipeline.train_dataset(default_config.describe(config)))
  resumed.set_state(state)
  actual = next(resumed)
  for key in expected:
    np.testing.assert_array_equal(expected[key], actual[key])


def _example(data_dir, index=0):
  ref = datasets.resolve(TINY_DATASET, '3d', data_dir)
  return dict(datasets.data_source(ref)[index])


class _FixedRng:
  """Stands in for np.random.Generator: fixed normals and uniforms."""

  def __init__(self, normal, uniform):
    self.normal, self.uniform = normal, uniform

  def standard_normal(self):
    return self.normal

  def random(self):
    return self.uniform


def test_flip_mirrors_image_and_swaps_left_right(data_dir):
  example = _example(data_dir)
  aug = augment.Augmentation(rotation_prob=0.0)
  transform = augment.PoseTransform(image_size=64, use_3d=True, augmentation=aug)
  plain = transform(example, _FixedRng(0.0, 0.9))  # uniform 0.9 > 0.5: no flip
  flipped = transform(example, _FixedRng(0.0, 0.1))
  perm = joints.MPII_FLIP
  np.testing.assert_allclose(flipped['joints'][:, 0], 63 - plain['joints'][perm, 0], atol=1e-4)
  np.testing.assert_allclose(flipped['joints'][:, 1], plain['joints'][perm, 1], atol=1e-4)
  np.testing.assert_array_equal(flipped['depth'], plain['depth'][perm])
  np.testing.assert_array_equal(flipped['joints_mask'], plain['joints_mask'][perm])
  mirrored = plain['image'][:, ::-1].astype(int)
  assert np.abs(flipped['image'].astype(int) - mirrored).mean() < 1.0


def test_scale_and_rotation_move_joints_as_the_crop_affine_says(data_dir):
  example = _example(data_dir)
  aug = augment.Augmentation(flip=False)
  # normal 1.0: scale 1.25; uniform 0.1 < 0.6: rotate by clip(1.0 * 30) = 30 degrees.
  sample = augment.PoseTransform(64, True, aug)(example, _FixedRng(1.0, 0.1))
  affine = geometry.crop_affine(example['box_center'], example['box_side'] * 1.25, 30.0, 64)
  np.testing.assert_allclose(
    sample['joints'], geometry.transform_points(affine, example['joints_2d']), atol=1e-3
  )
  # Depth is in crop units: the region is 1.25x larger, so the target is 1.25x smaller.
  unscaled = augment.PoseTransform(64, True)(example)
  np.testing.assert_allclose(sample['depth'] * 1.25, unscaled['depth'], rtol=1e-5, atol=1e-6)


def test_depth_target_is_weak_perspective_at_the_pelvis(data_dir):
  example = _example(data_dir)
  sample = augment.PoseTransform(64, use_3d=True)(example)
  z = example['joints_3d'][:, 2]
  pelvis = z[joints.PELVIS]
  expected = (z - pelvis) * example['intrinsics'][0] / pelvis / example['box_side']
  np.testing.assert_allclose(sample['depth'], expected, rtol=1e-5, atol=1e-6)
  assert sample['depth'][joints.PELVIS] == 0
  # Without augmentation the original joints come back through input_to_image.
  np.testing.assert_allclose(
    geometry.transform_points(sample['input_to_image'], sample['joints']),
    example['joints_2d'],
    atol=1e-3,
  )


def test_a_box_larger_than_its_image_is_cropped_at_the_image_size(data_dir):
  """The reference's clamp, s = min(s, max(H, W)), after scale augmentation: the crop and the
  depth target's divisor both use the clamped side, in training and in evaluation."""
  example = dict(_example(data_dir))
  longer = float(example['box_side']) * 0.8  # an image whose longer side the box exceeds
  example['image_size'] = np.array([longer, longer / 2], np.float32)
  aug = augment.Augmentation(flip=False, rotation_prob=0.0)
  # normal 1.0: scale 1.25, so the crop would be 1.25 x box_side without the clamp.
  sample = augment.PoseTransform(64, True, aug)(example, _FixedRng(1.0, 0.9))
  affine = geometry.crop_affine(example['box_center'], longer, 0.0, 64)
  np.testing.assert_allclose(
    sample['joints'], geometry.transform_points(affine, example['joints_2d']), atol=1e-3
  )
  z = example['joints_3d'][:, 2]
  expected = (z - z[joints.PELVIS]) * example['intrinsics'][0] / z[joints.PELVIS] / longer
  np.testing.assert_allclose(sample['depth'], expected, rtol=1e-5, atol=1e-6)
  evaluation = augment.PoseTransform(64, True)(example)
  assert evaluation['box_side'] == np.float32(longer)
  np.testing.assert_allclose(evaluation['depth'], expected, rtol=1e-5, atol=1e-6)
  # A box within its image is not clamped; an unknown image size (zeros) clamps nothing.
  assert geometry.clamp_crop_side(100.0, (640, 480)) == 100.0
  assert geometry.clamp_crop_side(900.0, (640, 480)) == 640.0
  assert geometry.clamp_crop_side(900.0, (0, 0)) == 900.0


def test_2d_sources_ignore_3d_labels(data_dir):
  sample = augment.PoseTransform(64, use_3d=False)(_example(data_dir))
  assert not sample['has_3d'] and np.all(sample['depth'] == 0)


def test_eval_batches_pad_the_last_batch(data_dir):
  config = tiny_config(data_dir)
  ref = datasets.resolve(TINY_DATASET, 'eval', data_dir)  # 32 test examples
  batches = list(pipeline.eval_batches(ref, config, batch_size=12))
  assert [b['valid'].sum() for b in batches] == [12, 12, 8]
  assert all(b['image'].shape[0] == 12 for b in batches)
  limited = list(pipeline.eval_batches(ref, config, batch_size=12, limit=5))
  assert len(limited) == 1 and limited[0]['valid'].sum() == 5


def test_unknown_and_unbuilt_datasets_say_what_to_do(data_dir):
  with pytest.raises(datasets.DatasetError, match="unknown dataset 'nonexistent'"):
    datasets.resolve('nonexistent', '2d', data_dir)
  with pytest.raises(
    datasets.DatasetError, match="no config 'huge'; it has default, large, overhead, tiny"
  ):
    datasets.resolve('synthetic_humans/huge', '2d', data_dir)
  with pytest.raises(datasets.DatasetError, match='no split'):
    datasets.resolve(TINY_DATASET + ':nosuchsplit', '2d', data_dir)


def test_mixing_weights_set_the_share_of_each_source(data_dir):
  no_aug = {
    'data.augment.flip': False,
    'data.augment.scale_sigma': 0.0,
    'data.augment.rotation_prob': 0.0,
  }
  sources = [f'{TINY_DATASET}:train_2d', f'{TINY_DATASET}:test']
  pelvis = {}  # un-augmented pelvis position -> source index
  for index, spec in enumerate(sources):
    for batch in _batches(tiny_config(data_dir, **{'data.train_2d': spec}, **no_aug), 8)[0]:
      pelvis.update({tuple(np.round(j[6], 2)): index for j in batch['joints']})
  config = tiny_config(
    data_dir, **{'data.train_2d': ','.join(sources), 'data.weights_2d': '3,1'}, **no_aug
  )
  drawn = [
    pelvis[tuple(np.round(j[6], 2))] for batch in _batches(config, 40)[0] for j in batch['joints']
  ]
  assert abs(drawn.count(0) / len(drawn) - 0.75) < 0.03
  with pytest.raises(default_config.ConfigError, match="weights_2d='3' must be 2"):
    _batches(
      tiny_config(data_dir, **{'data.train_2d': ','.join(sources), 'data.weights_2d': '3'}), 1
    )


def test_example_source_parses_as_tfds_and_falls_back_to_it_for_other_features(data_dir):
  source = datasets.data_source(datasets.resolve(TINY_DATASET, '3d', data_dir))
  reference = source._tfds  # what TFDS itself parses
  for index in range(len(source)):
    assert_same_example(source[index], reference[index])
  # A feature the fast parser does not read (a class label, a compressed tensor) hands parsing
  # to TFDS.
  for other in (
    tfds.features.ClassLabel(num_classes=2),
    tfds.features.Tensor(shape=(2,), dtype=np.float32, encoding='zlib'),
  ):
    assert datasets._parse_spec(tfds.features.FeaturesDict({'x': other})) is None
  source._spec = None
  assert_same_example(source[3], reference[3])


def _tfds_parsing_and_bgr_views(monkeypatch):
  """The pipeline's earlier reading path: TFDS's own parsing, and images decoded BGR and handed on
  as channel-reversed views."""
  monkeypatch.setattr(datasets, 'ExampleSource', lambda tfds_source, ref=None: tfds_source)

  def decode_bgr_view(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]

  monkeypatch.setattr(features, 'decode_image', decode_bgr_view)


def test_faster_reading_leaves_every_sample_as_it_was(data_dir, monkeypatch):
  """Same seed, same mixed 2D/3D batches (crops, augmentation, flips, labels) with the fast
  parser and contiguous RGB decoding as with the path they replaced."""
  config = tiny_config(data_dir, depth=True)
  fast, _ = _batches(config, 3)
  _tfds_parsing_and_bgr_views(monkeypatch)
  before, _ = _batches(config, 3)
  for new, old in zip(fast, before):
    assert new.keys() == old.keys()
    for key in old:
      np.testing.assert_array_equal(new[key], old[key], err_msg=key)


def _numbered_batches():
  """Batches {'x': [2k, 2k + 1]}, k = 0..9, from a grain iterator."""
  return iter(grain.MapDataset.range(20).batch(2).map(lambda x: {'x': x}).to_iter_dataset())


def test_device_batches_checkpoint_the_batches_handed_out_not_those_put_ahead(tmp_path):
  """Batches go to the devices 2 ahead of the step; a checkpoint after N batches resumes at batch
  N + 1 (through the checkpoint's own save and restore), neither skipping nor repeating one."""
  sharding = jax.sharding.NamedSharding(
    jax.make_mesh((1,), ('data',)), jax.sharding.PartitionSpec('data')
  )
  batches = pipeline.DeviceBatches(_numbered_batches(), sharding, ahead=2)
  handed_out = [next(batches)['x'] for _ in range(3)]
  assert all(isinstance(x, jax.Array) and x.sharding == sharding for x in handed_out)
  assert [x.tolist() for x in handed_out] == [[0, 1], [2, 3], [4, 5]]
  mngr = checkpoint.manager(str(tmp_path / 'checkpoints'))
  checkpoint.save(mngr, 3, {'w': np.zeros(2, np.float32)}, batches)
  checkpoint.wait(mngr)
  resumed = pipeline.DeviceBatches(_numbered_batches(), sharding, ahead=2)
  checkpoint.restore(mngr, 3, {'w': np.zeros(2, np.float32)}, resumed)
  rest = [x['x'].tolist() for x in resumed]
  assert rest == [[2 * k, 2 * k + 1] for k in range(3, 10)]
  assert [x['x'].tolist() for x in batches] == rest  # the batches put ahead come out too

"""The embedded synthetic dataset: consistent labels, determinism, anatomy, rendering, no TF."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data import features
from hpe_jax.data.builders import synthetic_humans
from hpe_jax.data.synthetic import body
from hpe_jax.data.synthetic import render

SPLITS = ('train_2d', 'train_3d', 'test')
LABELS = (
  'joints_2d',
  'joints_mask',
  'joints_visible',
  'joints_3d',
  'eval_joints_3d',
  'intrinsics',
  'box_center',
  'box_side',
  'crop_to_image',
  'image_size',
  'torso_size',
  'head_size',
)
MPII = joints.MPII16.index


@pytest.fixture(scope='module')
def builder(tmp_path_factory):
  b = synthetic_humans.SyntheticHumans(
    config='tiny', data_dir=str(tmp_path_factory.mktemp('tfds')), file_format='array_record'
  )
  b.download_and_prepare()
  return b


@pytest.fixture(scope='module')
def examples(builder):
  """Split -> list of stored examples, images as JPEG bytes."""
  sources = {
    split: builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
    for split in SPLITS
  }
  return {split: [source[i] for i in range(len(source))] for split, source in sources.items()}


def _scene(config, split, index) -> render.Scene:
  """The scene behind a stored example (make_example draws its rng the same way)."""
  rng = np.random.default_rng([config.seed, synthetic_humans.SPLIT_IDS[split], index])
  return render.render_scene(rng, config.image_size, config.elevation_deg)


def test_splits_and_roles(builder, examples):
  config = builder.builder_config
  assert {s: len(examples[s]) for s in SPLITS} == {
    'train_2d': config.num_train_2d,
    'train_3d': config.num_train_3d,
    'test': config.num_test,
  }
  assert synthetic_humans.SyntheticHumans.DEFAULT_SPLITS == {
    '2d': 'train_2d',
    '3d': 'train_3d',
    'eval': 'test',
  }
  assert [e['image_name'] for e in examples['test'][:2]] == [b'test/000000.jpg', b'test/000001.jpg']


def test_labels_are_consistent(builder, examples):
  size, crop_size = builder.builder_config.image_size, builder.builder_config.crop_size
  for ex in examples['test']:
    uv = ex['joints_2d']
    np.testing.assert_allclose(uv, geometry.project(ex['joints_3d'], ex['intrinsics']), atol=1e-3)
    inside = np.all((uv >= -0.5) & (uv <= size - 0.5), axis=-1)
    np.testing.assert_array_equal(ex['joints_mask'], inside)
    assert np.all(ex['joints_visible'] <= ex['joints_mask'])
    assert ex['has_3d'] and np.all(ex['eval_mask'] == 1)
    # The box: 1.25 x the joints' bounding box, centred on it.
    low, high = uv.min(0), uv.max(0)
    np.testing.assert_allclose(ex['box_center'], (low + high) / 2, atol=1e-3)
    np.testing.assert_allclose(ex['box_side'], 1.25 * np.max(high - low), rtol=1e-5)
    np.testing.assert_allclose(
      ex['torso_size'], np.linalg.norm(uv[MPII('l_shoulder')] - uv[MPII('r_hip')]), rtol=1e-5
    )
    assert 0 < ex['head_size'] < ex['box_side'] / 2
    # Crop pixels map back to original pixels: the crop centre is the box centre, and the box
    # (hence every joint) fills the middle 1 / CROP_MARGIN of the crop.
    crop_to_image = ex['crop_to_image']
    centre = (crop_size - 1) / 2
    np.testing.assert_allclose(
      geometry.transform_points(crop_to_image, np.array([centre] * 2)), ex['box_center'], atol=1e-2
    )
    in_crop = geometry.transform_points(geometry.invert_affine(crop_to_image), uv)
    half_box = crop_size / features.CROP_MARGIN / 2
    assert np.all(np.abs(in_crop - centre) <= half_box / 1.25 + 1e-3)


def test_stored_crop_shows_the_original_image(builder, examples):
  config = builder.builder_config
  for index in (0, 5):
    ex = examples['test'][index]
    crop = features.decode_jpeg(ex['image'])
    assert crop.shape == (config.crop_size, config.crop_size, 3)
    image = _scene(config, 'test', index).image
    # Sampling the original image through crop_to_image reproduces the stored crop.
    resampled = cv2.warpAffine(
      image, ex['crop_to_image'], crop.shape[:2], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    resampled = features.decode_jpeg(features.encode_jpeg(resampled))
    assert np.abs(resampled.astype(float) - crop).mean() < 1


def test_deterministic_and_disjoint(builder, examples):
  config = builder.builder_config
  first, second = (synthetic_humans.make_example(config, 'train_3d', 7) for _ in range(2))
  stored = examples['train_3d'][7]
  for key in LABELS:
    np.testing.assert_array_equal(first[key], second[key])
    np.testing.assert_array_equal(first[key], stored[key])
  assert first['image'] == second['image'] == stored['image']
  poses = {
    split: {np.round(e['eval_joints_3d']).tobytes() for e in examples[split]} for split in SPLITS
  }
  assert (
    sum(len(p) for p in poses.values())
    == len(set.union(*poses.values()))
    == sum(len(examples[s]) for s in SPLITS)
  )
  other_seed = synthetic_humans.SyntheticHumansConfig(name='other', seed=1)
  assert not np.array_equal(
    synthetic_humans.make_example(other_seed, 'train_3d', 7)['joints_3d'], first['joints_3d']
  )


def _bone(points, a, b):
  return np.linalg.norm(
    points[..., joints.H36M17.index(a), :] - points[..., joints.H36M17.index(b), :], axis=-1
  )


def test_anatomy():
  poses = [body.sample_pose(np.random.default_rng([9, i])) for i in range(300)]
  p = np.stack([pose.joints for pose in poses])
  for (a, b), (low, high) in {
    ('l_hip', 'l_knee'): (330, 620),
    ('l_knee', 'l_ankle'): (330, 620),
    ('l_shoulder', 'l_elbow'): (210, 380),
    ('l_elbow', 'l_wrist'): (180, 340),
    ('l_hip', 'r_hip'): (200, 340),
    ('l_shoulder', 'r_shoulder'): (230, 400),
    ('pelvis', 'thorax'): (320, 620),
    ('thorax', 'head'): (180, 330),
  }.items():
    length = _bone(p, a, b)
    assert low < length.min() and length.max() < high, (a, b)
    if a[:2] == b[:2] == 'l_':  # left and right limbs are alike
      np.testing.assert_allclose(length, _bone(p, 'r_' + a[2:], 'r_' + b[2:]))
  assert np.ptp(_bone(p, 'l_hip', 'l_knee')) > 100  # people differ in size

  def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)

  def at(name):
    return p[:, joints.H36M17.index(name)]

  # Left is left: with the chest's up vector, cross(left - right, up) points where the face does
  # (the nose's offset from the neck-to-head-top line).
  axis = unit(at('head') - at('thorax'))
  nose = at('nose') - at('thorax')
  face = nose - np.sum(nose * axis, -1, keepdims=True) * axis
  front = np.cross(at('l_shoulder') - at('r_shoulder'), at('thorax') - at('spine'))
  assert np.all(np.sum(front * face, -1) > 0)
  # Knees bend backwards: the hinge axis cross(thigh, shin) points to the person's left.
  for side in 'lr':
    thigh, shin = at(f'{side}_knee') - at(f'{side}_hip'), at(f'{side}_ankle') - at(f'{side}_knee')
    hinge = np.cross(unit(thigh), unit(shin))
    bent = np.linalg.norm(hinge, axis=-1) > np.sin(np.deg2rad(5))
    assert np.all(np.sum(hinge * (at('l_hip') - at('r_hip')), -1)[bent] > 0)
    # Elbows bend forwards: the forearm turns towards the upper arm frame's front (+z).
    upper_arm = np.stack([pose.frames[f'{side}_upper_arm'] for pose in poses])
    fore = at(f'{side}_wrist') - at(f'{side}_elbow')
    assert np.all(np.einsum('ni,ni->n', fore, upper_arm[:, :, 2]) >= -1e-6)
  # Poses vary: arms up and down, legs bent and straight, all headings.
  assert np.ptp(_bone(p, 'l_wrist', 'l_hip')) > 800
  assert np.ptp(_bone(p, 'l_ankle', 'l_hip')) > 400


def test_mpii_joints_come_from_h36m(examples):
  for ex in examples['train_2d']:
    mpii, mask = joints.MPII_FROM_H36M(ex['eval_joints_3d'], ex['eval_mask'])
    np.testing.assert_allclose(ex['joints_3d'], mpii, atol=1e-3)
    assert np.all(mask == 1)


def test_all_headings(examples):
  """The body's heading in the camera covers the full circle, so the mean pose predicts badly."""
  pose = np.stack([e['eval_joints_3d'] for e in examples['train_3d']])
  across = pose[:, joints.H36M17.index('l_hip')] - pose[:, joints.H36M17.index('r_hip')]
  heading = np.arctan2(across[:, 2], across[:, 0])
  counts, _ = np.histogram(heading, bins=4, range=(-np.pi, np.pi))
  assert np.all(counts > 0)


def _hue(patch: np.ndarray) -> float:
  """Median hue in degrees (-90..270) of an RGB uint8 patch."""
  hue = cv2.cvtColor(patch, cv2.COLOR_RGB2HSV_FULL)[..., 0].astype(float) * 360 / 256
  return float(np.median(np.where(hue > 270, hue - 360, hue)))


def test_left_and_right_limbs_have_their_colours():
  """A person facing the camera in a T-pose: left limbs warm, right limbs cool, mirror-placed."""
  angles = {k: np.zeros(len(v)) for k, v in body.LIMITS.items()}
  angles = {f'{s}_{k}': v for k, v in angles.items() for s in 'lr'} | angles
  for side in 'lr':
    angles[f'{side}_shoulder'] = (0, 90, 0)
  facing_camera = body.rotation('x', 180)  # body up -> image up, body front -> towards camera
  pose = body.forward_kinematics(body.REST_LENGTHS, angles).transformed(facing_camera, (0, 0, 4000))
  intrinsics = np.array([400.0, 400.0, 159.5, 159.5])
  uv = geometry.project(pose.joints, intrinsics)
  wrist = {side: np.round(uv[joints.H36M17.index(f'{side}_wrist')]).astype(int) for side in 'lr'}
  assert wrist['l'][0] > wrist['r'][0]  # facing us, the person's left is on the image's right
  for seed in range(8):
    rng = np.random.default_rng(seed)
    image = np.full((320, 320, 3), 128, np.uint8)
    render.draw_person(image, pose, intrinsics, render.sample_outfit(rng), np.array([0, 0, -1.0]))
    for side, (low, high) in (('l', render.LEFT_HUES), ('r', render.RIGHT_HUES)):
      (u, v) = wrist[side]
      assert low - 5 <= _hue(image[v - 2 : v + 3, u - 2 : u + 3]) <= high + 5, (seed, side)


def test_person_fills_the_crop_centre(builder, examples):
  config = builder.builder_config
  inner, border = [], []
  for index, ex in enumerate(examples['test'][:12]):
    part_ids = _scene(config, 'test', index).part_ids
    person = cv2.warpAffine(
      (part_ids > 0).astype(np.uint8),
      ex['crop_to_image'],
      (config.crop_size,) * 2,
      flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
    )
    # The box is the middle 1 / CROP_MARGIN of the crop.
    margin = int(round(config.crop_size * (1 - 1 / features.CROP_MARGIN) / 2))
    box = np.zeros_like(person, bool)
    box[margin:-margin, margin:-margin] = True
    ring = np.ones_like(box)
    ring[4:-4, 4:-4] = False
    inner.append(person[box].mean())
    border.append(person[ring].mean())
  assert np.mean(inner) > 0.08 and np.mean(border) < 0.01


def test_builds_and_reads_without_tensorflow(tmp_path):
  code = f"""
import sys
import tensorflow_datasets as tfds
from hpe_jax.data.builders import synthetic_humans
b = synthetic_humans.SyntheticHumans(config='tiny', data_dir={str(tmp_path)!r},
                                     file_format='array_record')
b.download_and_prepare()
source = tfds.data_source('synthetic_humans/tiny', split='test', data_dir={str(tmp_path)!r},
                          decoders={{'image': tfds.decode.SkipDecoding()}},
                          builder_kwargs={{'file_format': 'array_record'}})
assert len(source) == 32 and source[0]['image'][:2] == b'\\xff\\xd8'
assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'
"""
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize('elevation_deg', [(-5.0, 20.0), (30.0, 60.0)])
def test_camera_elevation_range(elevation_deg):
  """The `overhead` config's cameras look down from 30-60 degrees; the default's from -5-20."""
  rng = np.random.default_rng(0)
  for _ in range(20):
    pose = body.sample_pose(rng)
    _, eye, _ = render.sample_camera(rng, pose.joints, 320, elevation_deg)
    offset = eye - (pose.joints.min(0) + pose.joints.max(0)) / 2
    elevation = np.rad2deg(np.arcsin(offset[1] / np.linalg.norm(offset)))
    assert elevation_deg[0] - 1e-6 <= elevation <= elevation_deg[1] + 1e-6

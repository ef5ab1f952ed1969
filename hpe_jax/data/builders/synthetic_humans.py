"""`synthetic_humans`: procedurally rendered people with exact 2D and 3D labels, no download.

Example i of a split is drawn from `np.random.default_rng([seed, split id, i])`, so a seed fixes
every label byte for byte, and the splits (different split ids) never share an example.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data import features
from hpe_jax.data.synthetic import render

SPLIT_IDS = {'train_2d': 0, 'train_3d': 1, 'test': 2}
BOX_MARGIN = 1.25  # person box side / longest side of the joints' bounding box


@dataclasses.dataclass(eq=False)
class SyntheticHumansConfig(tfds.core.BuilderConfig):
  """Split sizes, original image side, stored crop side (px), camera elevation range (degrees)
  and seed."""

  num_train_2d: int = 3000
  num_train_3d: int = 3000
  num_test: int = 500
  image_size: int = 320
  crop_size: int = 192
  elevation_deg: tuple[float, float] = (-5.0, 20.0)
  seed: int = 0

  def num_examples(self, split: str) -> int:
    return {'train_2d': self.num_train_2d, 'train_3d': self.num_train_3d, 'test': self.num_test}[
      split
    ]


def make_example(config: SyntheticHumansConfig, split: str, index: int) -> dict:
  """Renders example `index` of `split` and labels it in the `features.pose_features()` format."""
  rng = np.random.default_rng([config.seed, SPLIT_IDS[split], index])
  scene = render.render_scene(rng, config.image_size, config.elevation_deg)
  h36m = scene.pose.joints
  mpii, _ = joints.MPII_FROM_H36M(h36m, np.ones(len(joints.H36M17)))
  _, visible = joints.MPII_FROM_H36M(h36m, scene.visible)
  uv = geometry.project(mpii, scene.intrinsics)
  inside = np.all((uv >= -0.5) & (uv <= config.image_size - 0.5), axis=-1).astype(np.float32)
  low, high = uv.min(0), uv.max(0)
  center, side = (low + high) / 2, BOX_MARGIN * float(np.max(high - low))
  crop, crop_to_image = features.person_crop(scene.image, center, side, config.crop_size)
  name = lambda joint: joints.MPII16.index(joint)
  # Head box: the square of side upper-neck-to-head-top length, fronto-parallel at the head's
  # depth (a projected head length that foreshortening cannot shrink); head size = 0.6 x its
  # diagonal, as in PCKh.
  neck, top = mpii[name('upper_neck')], mpii[name('head_top')]
  head_side = scene.intrinsics[0] * np.linalg.norm(top - neck) / ((neck[2] + top[2]) / 2)
  return {
    'image': features.encode_jpeg(crop),
    'image_name': f'{split}/{index:06d}.jpg',
    'person_index': 0,
    'crop_to_image': crop_to_image,
    'image_size': np.array(scene.image.shape[1::-1], np.float32),
    'box_center': center.astype(np.float32),
    'box_side': np.float32(side),
    'joints_2d': uv.astype(np.float32),
    'joints_mask': inside,
    'joints_visible': visible * inside,
    'has_3d': True,
    'joints_3d': mpii.astype(np.float32),
    'eval_joints_3d': h36m.astype(np.float32),
    'eval_mask': np.ones(len(joints.H36M17), np.float32),
    'eval_visible': scene.visible.astype(np.float32),
    'fork_joints_3d': np.zeros((len(joints.H36M17), 3), np.float32),  # scored as ours
    'intrinsics': scene.intrinsics.astype(np.float32),
    'distortion': np.zeros(5, np.float32),  # rendered through a pinhole camera
    # LSP's PCK reference: left shoulder to right hip.
    'torso_size': np.float32(np.linalg.norm(uv[name('l_shoulder')] - uv[name('r_hip')])),
    'head_size': np.float32(0.6 * np.sqrt(2) * head_side),
    'subject': '',
    'action': '',
    'camera': '',
    'frame': index,
  }


class SyntheticHumans(tfds.core.GeneratorBasedBuilder):
  """Rendered people with 2D and 3D labels (camera mm, Human3.6M eval joints); no download."""

  VERSION = tfds.core.Version('1.3.0')
  RELEASE_NOTES = {
    '1.1.0': 'eval_visible and image-origin fields (subject, action, camera, frame).',
    '1.2.0': 'distortion field (zeros: a pinhole camera).',
    '1.3.0': 'image_size (for the crop clamp) and fork_joints_3d (zeros) fields.',
  }
  BUILDER_CONFIGS = [
    SyntheticHumansConfig(name='default', description='3000 / 3000 / 500 people, 192 px crops'),
    SyntheticHumansConfig(
      name='tiny',
      num_train_2d=64,
      num_train_3d=64,
      num_test=32,
      crop_size=96,
      description='for tests',
    ),
    # The crops of the real datasets' default builds: paper-resolution (256 px) inputs on the
    # embedded data, e.g. to measure the input pipeline where no dataset can be downloaded.
    SyntheticHumansConfig(
      name='large', crop_size=384, description='3000 / 3000 / 500 people, 384 px crops'
    ),
    # Another camera setup, for cross-dataset generalisation studies on CPU: the cameras look
    # down on the people, as ceiling-mounted ones do.
    SyntheticHumansConfig(
      name='overhead',
      elevation_deg=(30.0, 60.0),
      seed=1,
      description='3000 / 3000 / 500 people seen from 30-60 degrees above',
    ),
  ]
  # The split serving each training role: disjoint 2D and 3D sources, a held-out test split.
  DEFAULT_SPLITS = {'2d': 'train_2d', '3d': 'train_3d', 'eval': 'test'}

  def _info(self) -> tfds.core.DatasetInfo:
    # Stored in index order, so record i is example i.
    return self.dataset_info_from_configs(features=features.pose_features(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLIT_IDS}

  def _generate_examples(self, split: str):
    for index in range(self.builder_config.num_examples(split)):
      yield index, make_example(self.builder_config, split, index)

"""From a stored example to a network input: random crop parameters, warp, flip, targets.

The transforms here are picklable classes so grain can run them in worker processes; all
randomness comes from the per-example generator grain passes in, so a pipeline is deterministic
for its seed and resumes exactly.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data import features


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Random scale, rotation and flip (REFERENCE.md 1, "Augmentation")."""

  scale_sigma: float = 0.25
  scale_limit: float = 0.25  # s *= clip(N(0,1) * scale_sigma + 1, 1 - limit, 1 + limit)
  rotation_prob: float = 0.6
  rotation_sigma: float = 30.0
  rotation_limit: float = 60.0
  flip: bool = True

  def sample(self, rng: np.random.Generator, rotate: bool) -> tuple[float, float, bool]:
    """-> (scale factor, rotation in degrees, flip)."""
    scale = float(
      np.clip(
        rng.standard_normal() * self.scale_sigma + 1, 1 - self.scale_limit, 1 + self.scale_limit
      )
    )
    rotation = 0.0
    if rotate and rng.random() < self.rotation_prob:
      rotation = float(
        np.clip(
          rng.standard_normal() * self.rotation_sigma, -self.rotation_limit, self.rotation_limit
        )
      )
    return scale, rotation, bool(self.flip and rng.random() < 0.5)


@dataclasses.dataclass(frozen=True)
class PoseTransform:
  """Turns a stored example into one training or evaluation sample.

  The sample holds what the train step needs; heatmaps are rendered on the device from `joints`
  (16x64x64 floats per sample would cost far more to ship than 16x2).
    image (S, S, 3) uint8; joints (16, 2) input pixels; joints_mask (16,) annotated;
    depth (16,) root-relative depth in crop units (0 without 3D); has_3d () bool.
  Evaluation samples (`evaluation=True`, no augmentation) also carry what metrics need:
    input_to_image (2, 3); joints_2d (16, 2) original pixels; torso_size; head_size; box_side
    (the crop side, `geometry.clamp_crop_side` of the person box);
    intrinsics (4,); distortion (5,); joints_3d (16, 3) camera mm; eval_joints_3d (17, 3);
    eval_mask (17,); eval_visible (17,); fork_joints_3d (17, 3).
  """

  image_size: int
  use_3d: bool  # False for 2D sources: their 3D labels, if any, stay unused
  augmentation: Augmentation | None = None  # None: centred crop, no flip (evaluation)
  rotate: bool = True

  def __call__(self, example: dict, rng: np.random.Generator | None = None) -> dict:
    scale, rotation, flip = 1.0, 0.0, False
    if self.augmentation is not None:
      scale, rotation, flip = self.augmentation.sample(rng, self.rotate)
    side = geometry.clamp_crop_side(example['box_side'] * scale, example['image_size'])
    image_to_input = geometry.crop_affine(
      example['box_center'], side, rotation, self.image_size, flip
    )
    crop_to_input = geometry.compose_affine(image_to_input, example['crop_to_image'])
    image = cv2.warpAffine(
      features.decode_jpeg(example['image']),
      crop_to_input,
      (self.image_size, self.image_size),
      flags=cv2.INTER_LINEAR,
      borderMode=cv2.BORDER_CONSTANT,
      borderValue=(0, 0, 0),
    )
    joints_input = geometry.transform_points(image_to_input, example['joints_2d'])
    mask = example['joints_mask']
    has_3d = bool(self.use_3d and example['has_3d'])
    depth = np.zeros(joints.NUM_JOINTS, np.float32)
    if has_3d:
      depth_px = geometry.root_relative_depth_px(
        example['joints_3d'], example['intrinsics'][0], joints.PELVIS
      )
      depth = depth_px / side
    if flip:  # the mirrored image shows the person's right side where the left was
      joints_input, mask, depth = (a[joints.MPII_FLIP] for a in (joints_input, mask, depth))
    sample = {
      'image': image,
      'joints': joints_input.astype(np.float32),
      'joints_mask': mask.astype(np.float32),
      'depth': depth.astype(np.float32),
      'has_3d': np.bool_(has_3d),
    }
    if self.augmentation is None:
      sample.update(
        input_to_image=geometry.invert_affine(image_to_input).astype(np.float32),
        joints_2d=example['joints_2d'],
        torso_size=example['torso_size'],
        head_size=example['head_size'],
        box_side=np.float32(side),
        intrinsics=example['intrinsics'],
        distortion=example['distortion'],
        joints_3d=example['joints_3d'],
        eval_joints_3d=example['eval_joints_3d'],
        eval_mask=example['eval_mask'],
        eval_visible=example['eval_visible'],
        fork_joints_3d=example['fork_joints_3d'],
      )
    return sample

"""The stored example format shared by every pose dataset builder, and how to make one.

Every builder stores one example per person: a person-centred JPEG crop with a margin around the
person box (room for scale and rotation augmentation), the affine from crop pixels back to the
original image, and the labels in original image pixels (2D) and camera millimetres (3D). Joints
are always in the MPII-16 order of `hpe_jax.joints`; joints a dataset lacks have mask 0.

The person box is a square: `box_center` (x, y) and `box_side`, in original image pixels. At
augmentation scale 1 it is exactly the network's input region.
"""

from __future__ import annotations

import cv2
import numpy as np
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints

# The stored crop spans CROP_MARGIN x the person box, so a 1.25x zoom-out with moderate rotation
# still finds image content; beyond it the pipeline fills with zeros.
CROP_MARGIN = 1.5
JPEG_QUALITY = 90


def pose_features() -> tfds.features.FeaturesDict:
  """The features of one stored person (see the module docstring for units)."""
  f32 = np.float32
  return tfds.features.FeaturesDict(
    {
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
      'image_name': tfds.features.Text(),  # the original image, relative to its dataset's root
      'person_index': np.int32,  # which person of that image
      'crop_to_image': tfds.features.Tensor(shape=(2, 3), dtype=f32),  # crop px -> original px
      'image_size': tfds.features.Tensor(shape=(2,), dtype=f32),  # original (width, height) px
      'box_center': tfds.features.Tensor(shape=(2,), dtype=f32),
      'box_side': f32,
      'joints_2d': tfds.features.Tensor(shape=(joints.NUM_JOINTS, 2), dtype=f32),
      'joints_mask': tfds.features.Tensor(shape=(joints.NUM_JOINTS,), dtype=f32),  # annotated
      'joints_visible': tfds.features.Tensor(shape=(joints.NUM_JOINTS,), dtype=f32),  # unoccluded
      'has_3d': np.bool_,
      'joints_3d': tfds.features.Tensor(shape=(joints.NUM_JOINTS, 3), dtype=f32),  # camera mm
      'eval_joints_3d': tfds.features.Tensor(shape=(len(joints.H36M17), 3), dtype=f32),
      'eval_mask': tfds.features.Tensor(shape=(len(joints.H36M17),), dtype=f32),
      'eval_visible': tfds.features.Tensor(shape=(len(joints.H36M17),), dtype=f32),  # unoccluded
      # The study's fork's ground truth where it scores a 3D set otherwise than we do (camera
      # mm, its Human3.6M-17 layout: joints.FORK_H36M_FROM_*): zeros elsewhere, and for frames
      # it leaves out. metrics.mpjpe_legacy against it is `mpjpe_fork`.
      'fork_joints_3d': tfds.features.Tensor(shape=(len(joints.H36M17), 3), dtype=f32),
      'intrinsics': tfds.features.Tensor(shape=(4,), dtype=f32),  # fx, fy, cx, cy; 0 if unknown
      # Lens distortion k1, k2, p1, p2, k3 (geometry.distort); zeros: pinhole or unknown.
      'distortion': tfds.features.Tensor(shape=(5,), dtype=f32),
      'torso_size': f32,  # PCK reference length in original px; 0 if unknown
      'head_size': f32,  # PCKh reference (0.6 x head box diagonal) in original px; 0 if unknown
      # Where the image comes from, for per-subject / per-action tables ('' if not applicable).
      'subject': tfds.features.Text(),
      'action': tfds.features.Text(),
      'camera': tfds.features.Text(),
      'frame': np.int32,
    }
  )


def person_crop(image: np.ndarray, box_center, box_side: float, crop_size: int):
  """Cuts the stored crop around a person.

  Args:
    image: (H, W, 3) uint8, the original image.
    box_center: (2,) person box centre in original pixels.
    box_side: side of the square person box in original pixels.
    crop_size: side of the stored crop in pixels; it spans CROP_MARGIN * box_side.
  Returns:
    (crop (crop_size, crop_size, 3) uint8, crop_to_image (2, 3) float32).
  """
  image_to_crop = geometry.crop_affine(box_center, box_side * CROP_MARGIN, 0.0, crop_size)
  crop = cv2.warpAffine(
    image,
    image_to_crop,
    (crop_size, crop_size),
    flags=cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_CONSTANT,
    borderValue=(0, 0, 0),
  )
  return crop, geometry.invert_affine(image_to_crop).astype(np.float32)


def encode_jpeg(image: np.ndarray) -> bytes:
  """(H, W, 3) uint8 RGB -> JPEG bytes, the form tfds.features.Image takes without TensorFlow."""
  ok, buffer = cv2.imencode('.jpg', image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
  if not ok:
    raise ValueError(f'JPEG encoding failed for an image of shape {image.shape}')
  return buffer.tobytes()


# OpenCV >= 4.10 decodes straight to RGB; an older one decodes BGR, converted into a new array.
_IMREAD_RGB = getattr(cv2, 'IMREAD_COLOR_RGB', None)


def decode_image(data) -> np.ndarray | None:
  """Encoded image bytes (JPEG, PNG, ...) -> (H, W, 3) uint8 RGB, C-contiguous; None if OpenCV
  cannot decode them. Contiguous because OpenCV copies a channel-reversed view into a new array
  before warping it, which cost more than the warp (BENCHMARKS.md, "Feeding the device")."""
  buffer = np.frombuffer(data, np.uint8)
  if _IMREAD_RGB is not None:
    return cv2.imdecode(buffer, _IMREAD_RGB)
  image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
  return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_jpeg(data: bytes) -> np.ndarray:
  """JPEG bytes -> (H, W, 3) uint8 RGB (`decode_image`). Raises ValueError on undecodable bytes."""
  image = decode_image(data)
  if image is None:
    raise ValueError('undecodable JPEG')
  return image

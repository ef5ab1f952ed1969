"""From an image and a person box to the square crop a model sees, and from the model's outputs
back to image pixels and a 3D pose: what every predictor shares (the live `Predictor` and the
exported model of `load_exported`). Numpy and OpenCV only.

  result = crops.predict_person(predict_inputs, image_size, image, box)
  crop = crops.crop_person(image, box, image_size)   # many people: stack their crops
  pose = crops.person_pose(crop, outputs_of_this_person)
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import cv2
import numpy as np

from hpe_jax import geometry
from hpe_jax import joints

# A tight person box (around the joints) is padded like the training boxes
# (data.builders.base.box_from_joints).
BOX_PAD = 1.25
MAX_BOX_TO_IMAGE = 10  # a larger box is a typo (or pixels mistaken for another unit)


def check_model_inputs(inputs, image_size: int) -> np.ndarray:
  """-> `inputs` as an array, after checking it is (N, S, S, 3) with S = `image_size`: what a
  model's `predict_inputs` takes (uint8 RGB). Raises ValueError naming both shapes."""
  inputs = np.asarray(inputs)
  if inputs.ndim != 4 or inputs.shape[1:] != (image_size, image_size, 3):
    raise ValueError(
      f'inputs have shape {inputs.shape}; this model takes (N, {image_size}, {image_size}, 3) '
      'uint8 RGB'
    )
  return inputs


def person_square(image_shape, box=None) -> tuple[np.ndarray, float]:
  """The square (centre, side) in pixels around a person box (x, y, w, h) padded by BOX_PAD, or
  around the whole image for box None. Pixel centres are integers, so a box edge at x is pixel
  coordinate x - 0.5.

  Raises:
    ValueError: the box has no area, lies wholly outside the image or is over
      MAX_BOX_TO_IMAGE times its size.
  """
  height, width = image_shape[:2]
  if box is None:
    return np.array([(width - 1) / 2, (height - 1) / 2]), float(max(width, height))
  x, y, w, h = (float(v) for v in box)
  if w <= 0 or h <= 0:
    raise ValueError(f'box {tuple(box)} has no area: expected x, y, width, height')
  if x >= width or y >= height or x + w <= 0 or y + h <= 0:
    raise ValueError(
      f'box {tuple(box)} lies wholly outside the {width} x {height} image: '
      'expected x, y of its top-left corner, then width, height, in pixels'
    )
  if max(w, h) > MAX_BOX_TO_IMAGE * max(width, height):
    raise ValueError(
      f'box {tuple(box)} is over {MAX_BOX_TO_IMAGE} times the {width} x {height} '
      'image: the person would be a few pixels in what the model sees'
    )
  return np.array([x + w / 2 - 0.5, y + h / 2 - 0.5]), BOX_PAD * max(w, h)


@dataclasses.dataclass(frozen=True)
class PersonCrop:
  """The square around one person, resampled to the model's input (`crop_person`)."""

  model_input: np.ndarray  # (S, S, 3) uint8 RGB
  image_to_input: np.ndarray  # (2, 3) affine from image pixels to input pixels
  center: np.ndarray  # (2,) the square's centre in image pixels
  side: float  # the square's side in image pixels


def crop_person(image: np.ndarray, box, image_size: int) -> PersonCrop:
  """The square crop the model sees of the person in `box` (see `predict_person`).

  Raises:
    ValueError: a box `person_square` refuses.
  """
  center, side = person_square(image.shape, box)
  image_to_input = geometry.crop_affine(center, side, 0.0, image_size)
  model_input = cv2.warpAffine(
    np.asarray(image, np.uint8),
    image_to_input,
    (image_size, image_size),
    flags=cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_CONSTANT,
    borderValue=(0, 0, 0),
  )
  return PersonCrop(model_input, image_to_input, np.asarray(center), float(side))


def person_pose(crop: PersonCrop, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """One person's model outputs (pred_xy (16, 2), pred_peak (16,), pred_depth (16,) if any) on
  `crop` -> `predict_person`'s result."""
  joints_2d = geometry.transform_points(
    geometry.invert_affine(crop.image_to_input), np.asarray(outputs['pred_xy'], np.float64)
  )
  result = {
    'joints_2d': joints_2d,
    'scores': np.asarray(outputs['pred_peak']),
    'box_center': crop.center,
    'box_side': np.float64(crop.side),
  }
  if 'pred_depth' in outputs:
    # Weak perspective: x, y in image pixels and depth in box units * box side share one unit.
    depth = np.asarray(outputs['pred_depth'], np.float64)
    pose = np.concatenate([joints_2d, depth[:, None] * crop.side], axis=1)
    pose = pose - pose[joints.PELVIS]
    result['joints_3d'] = pose * geometry.canonical_limb_scale(pose)
  return result


def predict_person(
  predict_inputs: Callable[[np.ndarray], dict[str, np.ndarray]],
  image_size: int,
  image: np.ndarray,
  box=None,
) -> dict[str, np.ndarray]:
  """Predicts the pose of one person: crops the square around `box`, runs the model on it and
  maps its joints back to the image (many people at once: `crop_person`, one `predict_inputs`
  call on the stacked crops, `person_pose` per person).

  Args:
    predict_inputs: (N, S, S, 3) uint8 model inputs -> pred_xy (N, 16, 2) input pixels,
      pred_peak (N, 16) and, for models with depth, pred_depth (N, 16) in units of the input side.
    image_size: S, the side of the model's input.
    image: (H, W, 3) uint8 RGB.
    box: (x, y, w, h) the person's box in pixels (x, y its top-left corner, COCO-style), padded
      by BOX_PAD like the training boxes; None: the whole image is the person's box.
  Returns:
    joints_2d (16, 2) image pixels (MPII-16 order, joints.MPII16); scores (16,) heatmap maxima
    (about 1 for a confident joint); box_center (2,), box_side: the square the model saw; and
    for models with depth, joints_3d (16, 3) root-relative (pelvis) mm: x right, y down, z away
    from the camera, scaled by `geometry.canonical_limb_scale` (a monocular image has no
    absolute scale: the limbs get canonical human lengths).
  Raises:
    ValueError: a box `person_square` refuses.
  """
  crop = crop_person(image, box, image_size)
  outputs = predict_inputs(crop.model_input[None])
  return person_pose(crop, {key: np.asarray(value)[0] for key, value in outputs.items()})

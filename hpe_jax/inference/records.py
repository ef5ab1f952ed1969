"""The JSON records of predictions: one person's (`person_record`) and one image's or video's
(`joints_record`: the model, the joint names and the conventions), the same for images and video
frames, and the warning of a person no joint of which the model is confident about."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from hpe_jax import joints
from hpe_jax.inference import visualize

NO_DEPTH_NOTE = (
  'this run predicts 2D only (model.depth=False): 3D joints need a run fine-tuned '
  'with depth (hpe-train --config=configs/finetune.py)'
)


def low_confidence_warning(scores: np.ndarray) -> str:
  """A warning if no joint scores as confident as visualize.MIN_CONFIDENT_SCORE, else ''."""
  best = float(np.max(scores))
  if best >= visualize.MIN_CONFIDENT_SCORE:
    return ''
  # Rounded down, so that the best never reads as the threshold it is below (0.2999 -> 0.29).
  shown = min(math.floor(best * 100 + 1e-9) / 100, visualize.MIN_CONFIDENT_SCORE - 0.01)
  return (
    f'no joint scores above {visualize.MIN_CONFIDENT_SCORE} (best {shown:.2f}): '
    'the box holds no person the model recognises, or the model is barely trained; the '
    'pose is a guess'
  )


def person_record(box, prediction: dict, box_score: float | None = None) -> dict:
  """The JSON of one person: its box, the square the model saw and the joints (MPII-16 order).

  Args:
    box: the person's (x, y, w, h) or None (the whole image).
    prediction: Predictor.predict's result for it.
    box_score: the detector's score of a box from a boxes file; None otherwise.
  """
  person = {
    'box': None if box is None else [float(v) for v in box],
    'box_score': box_score,
    'square': {
      'center': [float(v) for v in prediction['box_center']],
      'side': float(prediction['box_side']),
    },
    'joints_2d': np.asarray(prediction['joints_2d'], np.float64).tolist(),
    'scores': np.asarray(prediction['scores'], np.float64).tolist(),
    'joints_3d': None,
  }
  if 'joints_3d' in prediction:
    person['joints_3d'] = np.asarray(prediction['joints_3d'], np.float64).tolist()
  return person


def joints_record(image_path: str, image_shape, people: Sequence[dict], run: dict) -> dict:
  """The JSON record of one image: the same shape for one person or many.

  Args:
    image_path, image_shape: the image and its (H, W, ...).
    people: `person_record`s, in the order predicted.
    run: {'workdir' (or 'model', an exported file), 'step', 'depth'}: the model that predicted.
  """
  record = {
    'image': image_path,
    'image_size': {'width': image_shape[1], 'height': image_shape[0]},
    'run': run,
    'joint_names': list(joints.MPII16),
    'square_note': "each person's square crop the model saw: its box padded by 1.25, or the "
    'whole image without a box',
    'joints_2d_convention': 'per person, joints_2d (16, 2) and scores (16,) in joint_names order; '
    'image pixels, x right, y down, (0, 0) the centre of the top-left pixel; score: the heatmap '
    'maximum, about 1 when confident',
  }
  if run['depth']:
    canonical_sum = sum(joints.CANONICAL_LIMB_LENGTHS_MM.values())
    record['joints_3d_convention'] = (
      'per person, joints_3d (16, 3) in joint_names order: mm relative to the pelvis (at 0), '
      'x right, y down, z away from the camera'
    )
    record['scale_rule'] = (
      'one image has no absolute scale: each pose is scaled so that its 8 limbs (shins, '
      f'thighs, forearms, upper arms) sum to the canonical {canonical_sum:.2f} mm '
      "(joints.CANONICAL_LIMB_LENGTHS_MM); the proportions are the model's"
    )
  else:
    record['note_3d'] = NO_DEPTH_NOTE
  record['people'] = list(people)
  return record

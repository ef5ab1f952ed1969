"""Held-out evaluation: 2D PCK in original image pixels, 3D MPJPE / PA-MPJPE in camera mm,
each next to the baseline that predicts the training set's mean pose.

3D reconstruction: the predicted 2D joints are mapped back to the original image, undistorted
where the dataset stores its lens distortion, and lifted to camera space with the predicted root-relative depth and the ground-truth root depth (the usual
protocol when the camera distance is not predicted), then compared root-relative on the
Human3.6M-17 evaluation joints the model predicts.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
from jax.experimental import multihost_utils
import numpy as np

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax import metrics
from hpe_jax.data import datasets
from hpe_jax.data import pipeline

PCK_THRESHOLD = 0.2  # PCK@0.2 of the torso size (LSP convention)
_MAX_LABELS_FOR_MEAN = 20000


@dataclasses.dataclass(frozen=True)
class MeanPose:
  """The training set's mean pose: 2D in person-box units, 3D root-relative in mm (H36M-17)."""

  box_xy: np.ndarray | None  # (16, 2), (joint - box centre) / box side
  pose_3d: np.ndarray | None  # (17, 3)


def _labels(ref: datasets.DatasetRef, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
  source = datasets.data_source(ref)
  indices = np.linspace(0, len(source) - 1, min(len(source), _MAX_LABELS_FOR_MEAN)).astype(int)
  records = [source[int(i)] for i in indices]
  return {k: np.stack([np.asarray(r[k]) for r in records]) for k in keys}


def mean_pose(ref_2d: datasets.DatasetRef | None, ref_3d: datasets.DatasetRef | None) -> MeanPose:
  """Averages the annotated joints of (up to 20,000 evenly spread) training labels."""
  box_xy = pose_3d = None
  if ref_2d is not None:
    labels = _labels(ref_2d, ('joints_2d', 'joints_mask', 'box_center', 'box_side'))
    xy = (labels['joints_2d'] - labels['box_center'][:, None]) / labels['box_side'][:, None, None]
    box_xy = _masked_mean(xy, labels['joints_mask'])
  if ref_3d is not None:
    labels = _labels(ref_3d, ('eval_joints_3d', 'eval_mask'))
    pose = labels['eval_joints_3d'] - labels['eval_joints_3d'][:, joints.H36M_PELVIS:][:, :1]
    pose_3d = _masked_mean(pose, labels['eval_mask'])
  return MeanPose(box_xy, pose_3d)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
  weight = mask[..., None]
  return (values * weight).sum(0) / np.maximum(weight.sum(0), 1)


def _collect(predict, model_state, ref, config, sharding) -> dict[str, np.ndarray]:
  """Runs the model over a split; -> every batch field and prediction, valid samples only."""
  parts = []
  for batch in pipeline.eval_batches(ref, config, limit=config.data.eval_limit):
    images = pipeline.to_global({'image': batch.pop('image')}, sharding)['image']
    prediction = predict(model_state, images)
    batch = multihost_utils.process_allgather(batch, tiled=True)
    parts.append({**batch, **jax.tree.map(np.asarray, prediction)})
  merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  valid = merged.pop('valid')
  return {k: v[valid] for k, v in merged.items()}


def evaluate(predict, model_state, ref: datasets.DatasetRef, config, sharding,
             baseline: MeanPose) -> dict[str, float]:
  """-> {'pck', 'pck_mean_pose'} (PCK@0.2 torso), 'pckh' (PCKh@0.5, where head sizes are
  known) and, for a model with depth on a 3D split, {'mpjpe', 'pa_mpjpe', 'mpjpe_legacy_4000',
  'pck3d_150', 'auc_3d',
  'mpjpe_visible', 'mpjpe_occluded', 'mpjpe_mean_pose', 'pa_mpjpe_mean_pose'} and, where the
  split names actions, 'per_action' {action: those of `_metrics_3d`}; plus 'num_examples'."""
  r = _collect(predict, model_state, ref, config, sharding)
  size = config.data.image_size
  xy = geometry.transform_points(r['input_to_image'], r['pred_xy'])
  has_torso = r['torso_size'] > 0
  results = {'num_examples': len(xy)}
  if has_torso.any():
    results['pck'] = metrics.pck(xy, r['joints_2d'], r['joints_mask'], r['torso_size'],
                                 PCK_THRESHOLD)['mean']
    if baseline.box_xy is not None:
      mean_input = baseline.box_xy * size + size / 2 - 0.5
      mean_xy = geometry.transform_points(r['input_to_image'],
                                          np.broadcast_to(mean_input, xy.shape).copy())
      results['pck_mean_pose'] = metrics.pck(mean_xy, r['joints_2d'], r['joints_mask'],
                                             r['torso_size'], PCK_THRESHOLD)['mean']
  has_head = r['head_size'] > 0
  if has_head.any():  # MPII's PCKh@0.5
    results['pckh'] = metrics.pckh(xy[has_head], r['joints_2d'][has_head],
                                   r['joints_mask'][has_head], r['head_size'][has_head])['mean']
  has_3d = r['eval_mask'].sum(axis=1) > 0
  if 'pred_depth' in r and has_3d.any():
    pinhole_xy = geometry.undistort_pixels(xy, r['intrinsics'], r['distortion'])
    pose = geometry.backproject_root_relative(
        pinhole_xy, r['pred_depth'] * r['box_side'][:, None], r['intrinsics'], r['root_depth'],
        joints.PELVIS)
    pred, predicted = joints.H36M_FROM_MPII(pose, np.ones(pose.shape[:2]))
    pred, gt = pred[has_3d], r['eval_joints_3d'][has_3d]
    mask = (r['eval_mask'] * predicted)[has_3d]
    visible = r['eval_visible'][has_3d]
    results.update(_metrics_3d(pred, gt, mask))
    results['mpjpe_visible'] = metrics.mpjpe(pred, gt, mask=mask * visible)
    results['mpjpe_occluded'] = metrics.mpjpe(pred, gt, mask=mask * (1 - visible))
    if baseline.pose_3d is not None:
      mean = np.broadcast_to(baseline.pose_3d, gt.shape)
      results['mpjpe_mean_pose'] = metrics.mpjpe(mean, gt, mask=mask)
      results['pa_mpjpe_mean_pose'] = metrics.pa_mpjpe(mean, gt, mask=mask)
    actions = _split_labels(ref, 'action')[r['index'][has_3d]]
    if any(actions):
      results['per_action'] = {
          action: {**_metrics_3d(pred[actions == action], gt[actions == action],
                                 mask[actions == action]),
                   'num_examples': int((actions == action).sum())}
          for action in sorted(set(actions))}
  return {k: v if isinstance(v, dict) else float(v) for k, v in results.items()}


def _metrics_3d(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, float]:
  """MPJPE (P1), PA-MPJPE (P2), the reference's legacy fixed-4000 mm MPJPE, 3DPCK@150 mm and its
  AUC over 0-150 mm, root-relative mm."""
  return {'mpjpe': metrics.mpjpe(pred, gt, mask=mask),
          'pa_mpjpe': metrics.pa_mpjpe(pred, gt, mask=mask),
          'mpjpe_legacy_4000': metrics.mpjpe_fixed_bone_sum(pred, gt, mask=mask),
          'pck3d_150': metrics.pck_3d(pred, gt, 150.0, mask=mask),
          'auc_3d': metrics.auc_3d(pred, gt, mask=mask)}


@functools.cache
def _split_labels(ref: datasets.DatasetRef, key: str) -> np.ndarray:
  """A text label (e.g. the action) of every example of a split, as a str array; read once per
  process (a pass over the records, images left encoded), not at every evaluation."""
  source = datasets.data_source(ref)
  return np.array([_text(source[i][key]) for i in range(len(source))])


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)

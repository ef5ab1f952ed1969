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
import time

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


def training_mean_pose(config) -> MeanPose:
  """`mean_pose` of the first 2D and first 3D training source of a run's config."""
  refs = []
  for role in ('2d', '3d'):
    names = datasets.parse_list(config.data[f'train_{role}'])
    refs.append(datasets.resolve(names[0], role, config.data.data_dir) if names else None)
  return mean_pose(*refs)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
  weight = mask[..., None]
  return (values * weight).sum(0) / np.maximum(weight.sum(0), 1)


def _collect(predict, model_state, ref, config, sharding, log=None
             ) -> tuple[dict[str, np.ndarray], float]:
  """Runs the model over a split; -> every batch field and prediction, valid samples only, and
  'images_per_s' (after the first batch, which includes compilation; NaN with one batch).
  `log(line)` gets a progress line about every 10% of the batches."""
  parts = []
  total = -(-pipeline.eval_size(ref, config.data.eval_limit) // config.train.batch_size)
  start = None
  for number, batch in enumerate(pipeline.eval_batches(ref, config,
                                                       limit=config.data.eval_limit), 1):
    images = pipeline.to_global({'image': batch.pop('image')}, sharding)['image']
    prediction = jax.tree.map(np.asarray, predict(model_state, images))
    batch = multihost_utils.process_allgather(batch, tiled=True)
    parts.append({**batch, **prediction})
    if start is None:
      start = time.perf_counter()
    elif log and (number == total or number % max(total // 10, 1) == 0):
      rate = (number - 1) * config.train.batch_size / (time.perf_counter() - start)
      log(f'eval {ref}: batch {number}/{total} | {rate:.1f} img/s | ETA '
          f'{(total - number) * config.train.batch_size / rate:.0f} s')
  merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  valid = merged.pop('valid')
  seconds = time.perf_counter() - start
  rate = (len(parts) - 1) * config.train.batch_size / seconds if len(parts) > 1 else np.nan
  return {k: v[valid] for k, v in merged.items()}, rate


def evaluate(predict, model_state, ref: datasets.DatasetRef, config, sharding,
             baseline: MeanPose | None, log=None) -> dict[str, float]:
  """-> {'pck', 'pck_mean_pose'} (PCK@0.2 torso), 'pckh' (PCKh@0.5, where head sizes are
  known) and, for a model with depth on a 3D split, {'mpjpe', 'pa_mpjpe', 'mpjpe_legacy_4000',
  'pck3d_150', 'auc_3d',
  'mpjpe_visible', 'mpjpe_occluded', 'mpjpe_mean_pose', 'pa_mpjpe_mean_pose'} and, where the
  split names actions, 'per_action' {action: those of `_metrics_3d`}; plus 'num_examples' and
  'images_per_s' (the prediction rate, input pipeline included). Baselines need `baseline`;
  `log(line)` gets progress lines."""
  r, images_per_s = _collect(predict, model_state, ref, config, sharding, log)
  size = config.data.image_size
  xy = geometry.transform_points(r['input_to_image'], r['pred_xy'])
  has_torso = r['torso_size'] > 0
  results = {'num_examples': int(len(xy)), 'images_per_s': images_per_s}
  if has_torso.any():
    results['pck'] = metrics.pck(xy, r['joints_2d'], r['joints_mask'], r['torso_size'],
                                 PCK_THRESHOLD)['mean']
    if baseline is not None and baseline.box_xy is not None:
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
    if baseline is not None and baseline.pose_3d is not None:
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
  return {k: v if isinstance(v, (dict, int)) else float(v) for k, v in results.items()}


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

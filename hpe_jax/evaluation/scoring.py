"""Held-out evaluation: 2D PCK in original image pixels, 3D MPJPE / PA-MPJPE in camera mm,
each next to the baseline that predicts the training set's mean pose.

3D reconstruction (`lift`): the predicted 2D joints are mapped back to the original image,
undistorted where the dataset stores its lens distortion, and lifted to camera space with the
predicted root-relative depth and the ground-truth root depth (the usual protocol when the camera
distance is not predicted), then compared root-relative on the 17 Human3.6M joints, spine and
nose interpolated by the reference implementation's rule. The reference's own figure
(`mpjpe_legacy`) is reported beside them.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from hpe_jax import default_config
from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax import metrics
from hpe_jax.data import datasets
from hpe_jax.data import pipeline

PCK_THRESHOLD = 0.2  # PCK@0.2 of the torso size (LSP convention)
_MAX_LABELS_FOR_MEAN = 20000
# The Human3.6M-17 joints an MPII-16 model predicts directly (all but spine and nose).
_DIRECT = np.array([bool(sources) for sources in joints.H36M_FROM_MPII_DIRECT.sources], np.float32)


@dataclasses.dataclass(frozen=True)
class MeanPose:
  """The training set's mean pose: 2D in person-box units, 3D root-relative in mm (H36M-17)."""

  box_xy: np.ndarray | None  # (16, 2), (joint - box centre) / box side
  pose_3d: np.ndarray | None  # (17, 3)


def _labels(ref: datasets.DatasetRef, keys: tuple[str, ...], log) -> dict[str, np.ndarray]:
  source = datasets.data_source(ref)
  count = min(len(source), _MAX_LABELS_FOR_MEAN)
  if log:
    log(f'Mean-pose baseline: reading {count} of the {len(source)} labels of {ref}...')
  indices = np.linspace(0, len(source) - 1, count).astype(int)
  records = [source[int(i)] for i in indices]
  return {k: np.stack([np.asarray(r[k]) for r in records]) for k in keys}


def mean_pose(
  ref_2d: datasets.DatasetRef | None, ref_3d: datasets.DatasetRef | None, log=None
) -> MeanPose:
  """Averages the annotated joints of (up to 20,000 evenly spread) training labels; `log(line)`
  gets a line before reading each split's labels and one with the seconds it all took."""
  start = time.perf_counter()
  box_xy = pose_3d = None
  if ref_2d is not None:
    labels = _labels(ref_2d, ('joints_2d', 'joints_mask', 'box_center', 'box_side'), log)
    xy = (labels['joints_2d'] - labels['box_center'][:, None]) / labels['box_side'][:, None, None]
    box_xy = _masked_mean(xy, labels['joints_mask'])
  if ref_3d is not None:
    labels = _labels(ref_3d, ('eval_joints_3d', 'eval_mask'), log)
    pose = labels['eval_joints_3d'] - labels['eval_joints_3d'][:, joints.H36M_PELVIS :][:, :1]
    pose_3d = _masked_mean(pose, labels['eval_mask'])
  if log:
    log(f'Mean-pose baseline ready in {time.perf_counter() - start:.1f} s.')
  return MeanPose(box_xy, pose_3d)


def training_mean_pose(run: default_config.RunSpec, log=None) -> MeanPose:
  """`mean_pose` of the first 2D and first 3D training source of a run (`log` as there)."""
  refs = [
    datasets.resolve(sources.specs[0], role, run.config.data.data_dir) if sources.specs else None
    for role, sources in (('2d', run.train_2d), ('3d', run.train_3d))
  ]
  return mean_pose(*refs, log=log)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
  weight = mask[..., None]
  return (values * weight).sum(0) / np.maximum(weight.sum(0), 1)


LOG_SECONDS = 10.0  # between evaluation progress lines


def _collect(
  predict, model_state, ref, config, sharding, batch_size: int, log=None, first_batch=None
) -> tuple[dict[str, np.ndarray], float]:
  """Runs the model over a split in global batches of `batch_size`; -> every batch field and
  prediction, valid samples only, and 'images_per_s' (after the first batch, which includes
  compilation; NaN with one batch). `log(line)` gets a progress line at most every
  LOG_SECONDS and one after the last batch; `first_batch` as `evaluate` says."""
  parts = []
  total = -(-pipeline.eval_size(ref, config.data.eval_limit) // batch_size)
  start = last_log = None
  for number, batch in enumerate(
    pipeline.eval_batches(ref, config, batch_size=batch_size, limit=config.data.eval_limit), 1
  ):
    local_images = batch.pop('image')
    images = pipeline.to_global({'image': local_images}, sharding)['image']
    prediction = jax.tree.map(np.asarray, predict(model_state, images))
    if first_batch and number == 1 and jax.process_index() == 0:
      # Process 0's images are the first rows of the global batch.
      valid = batch['valid']
      first_batch(local_images[valid], {k: v[: len(valid)][valid] for k, v in prediction.items()})
    batch = multihost_utils.process_allgather(batch, tiled=True)
    parts.append({**batch, **prediction})
    now = time.perf_counter()
    if start is None:
      start = last_log = now
    elif log and (number == total or now - last_log >= LOG_SECONDS):
      last_log = now
      rate = (number - 1) * batch_size / (now - start)
      log(
        f'eval {ref}: batch {number}/{total} | {rate:.1f} img/s | ETA '
        f'{(total - number) * batch_size / rate:.0f} s'
      )
  merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  valid = merged.pop('valid')
  seconds = time.perf_counter() - start
  rate = (len(parts) - 1) * batch_size / seconds if len(parts) > 1 else np.nan
  return {k: v[valid] for k, v in merged.items()}, rate


def evaluate(
  predict,
  model_state,
  ref: datasets.DatasetRef,
  config,
  sharding,
  baseline: MeanPose | None,
  *,
  batch_size: int,
  log=None,
  first_batch=None,
) -> dict:
  """Runs the model over a split and scores it (`score`); adds 'images_per_s', the prediction
  rate with the input pipeline.

  Args:
    predict: predict(model_state, images (B, S, S, 3) uint8) -> `inference.predict_step`'s dict.
    model_state: the model's weights, placed as `predict` expects.
    ref: the split.
    config: the run's config (data.image_size, data.eval_limit, data.threads).
    sharding: where each global batch of images goes (split along the batch axis).
    baseline: the training set's mean pose, or None.
    batch_size: images per global batch, a multiple of the devices `sharding` spans.
    log: log(line) gets progress lines.
    first_batch: on process 0, first_batch(images, prediction) gets the valid examples of the
      first batch (no second pass for pictures): the model inputs (N, S, S, 3) uint8 and
      `predict`'s outputs for them (e.g. 'pred_xy' (N, 16, 2) input pixels, 'pred_peak' (N, 16)).
  """
  collected, images_per_s = _collect(
    predict, model_state, ref, config, sharding, batch_size, log, first_batch
  )
  results = score(collected, ref, config.data.image_size, baseline)
  return {**results, 'images_per_s': float(images_per_s)}


def score(
  r: dict[str, np.ndarray], ref: datasets.DatasetRef, image_size: int, baseline: MeanPose | None
) -> dict:
  """The metrics of a split's predictions.

  Args:
    r: per example, the evaluation fields of `augment.PoseTransform`, 'index' (position in the
      split), and the predictions 'pred_xy' (N, 16, 2) in input pixels and, for models with
      depth, 'pred_depth' (N, 16) in crop units; 'legacy_xy' and 'legacy_depth' likewise where
      the reference's readout was run (`readout.predict_step`), for 'mpjpe_legacy'.
    ref: the split (its per-example action labels).
    image_size: the input side in pixels.
    baseline: the training set's mean pose (the `*_mean_pose` figures), or None.
  Returns:
    'num_examples'; 'pck' (PCK@0.2 torso) and 'pck_mean_pose' where torso sizes are known;
    'pckh' (PCKh@0.5) where head sizes are; and, for a model with depth on a 3D split, those of
    `_score_3d` and `_score_fork`.
  """
  xy = geometry.transform_points(r['input_to_image'], r['pred_xy'])
  has_torso = r['torso_size'] > 0
  results = {'num_examples': int(len(xy))}
  if has_torso.any():
    results['pck'] = metrics.pck(
      xy, r['joints_2d'], r['joints_mask'], r['torso_size'], PCK_THRESHOLD
    )['mean']
    if baseline is not None and baseline.box_xy is not None:
      mean_input = baseline.box_xy * image_size + image_size / 2 - 0.5
      mean_xy = geometry.transform_points(
        r['input_to_image'], np.broadcast_to(mean_input, xy.shape).copy()
      )
      results['pck_mean_pose'] = metrics.pck(
        mean_xy, r['joints_2d'], r['joints_mask'], r['torso_size'], PCK_THRESHOLD
      )['mean']
  has_head = r['head_size'] > 0
  if has_head.any():  # MPII's PCKh@0.5
    results['pckh'] = metrics.pckh(
      xy[has_head], r['joints_2d'][has_head], r['joints_mask'][has_head], r['head_size'][has_head]
    )['mean']
  has_3d = r['eval_mask'].sum(axis=1) > 0
  if 'pred_depth' in r and has_3d.any():
    results.update(
      _score_3d({k: v[has_3d] for k, v in r.items()}, xy[has_3d], ref, image_size, baseline)
    )
  if 'pred_depth' in r:
    results.update(_score_fork(r, image_size))
  return {k: v if isinstance(v, (dict, int)) else float(v) for k, v in results.items()}


def lift(r: dict[str, np.ndarray], xy: np.ndarray) -> np.ndarray:
  """Predicted 2D joints and depth -> root-relative Human3.6M-17 poses in the scored labels' mm.

  xy (N, 16, 2) original pixels are undistorted where the dataset stores its lens distortion and
  lifted with the predicted depth and the ground-truth root depth of the camera-space labels
  (`joints_3d`, the geometry the depth targets come from); mapped to Human3.6M-17 by
  `joints.H36M_FROM_MPII` (spine and nose interpolated); then scaled by `label_scale`, which is
  1 except where the scored labels are a rescaled skeleton (MPI-INF-3DHP's univ_annot3).
  -> (N, 17, 3).
  """
  pinhole_xy = geometry.undistort_pixels(xy, r['intrinsics'], r['distortion'])
  pose = geometry.backproject_root_relative(
    pinhole_xy,
    r['pred_depth'] * r['box_side'][:, None],
    r['intrinsics'],
    r['joints_3d'][:, joints.PELVIS, 2],
    joints.PELVIS,
  )
  pose, _ = joints.H36M_FROM_MPII(pose, np.ones(pose.shape[:2]))
  return pose * label_scale(r)[:, None, None]


def label_scale(r: dict[str, np.ndarray]) -> np.ndarray:
  """(N,): the size of the scored skeleton (`eval_joints_3d`) over that of the camera-space labels
  (`joints_3d`), fitted by least squares on the root-relative joints both have. MPI-INF-3DHP
  scores univ_annot3, its labels rescaled to a universal body height, while its 2D labels, depth
  targets and root depth are those of annot3; elsewhere both label sets are one skeleton (1)."""
  camera, camera_mask = joints.H36M_FROM_MPII_DIRECT(r['joints_3d'], r['joints_mask'])
  root = joints.H36M_PELVIS
  scored = r['eval_joints_3d']
  return geometry.fit_scale(
    camera - camera[:, root : root + 1],
    scored - scored[:, root : root + 1],
    camera_mask * r['eval_mask'],
  )


def _score_3d(
  r: dict[str, np.ndarray],
  xy: np.ndarray,
  ref: datasets.DatasetRef,
  image_size: int,
  baseline: MeanPose | None,
) -> dict:
  """3D metrics over the 17 Human3.6M joints the split labels, root-relative mm: those of
  `_metrics_3d`, 'mpjpe_15j' / 'pa_mpjpe_15j' (the 15 joints predicted directly, without the
  interpolated spine and nose), 'mpjpe_visible' / 'mpjpe_occluded', 'mpjpe_mean_pose' /
  'pa_mpjpe_mean_pose' (with a baseline) and, where the split names actions, 'per_action'
  {action: `_metrics_3d` and 'num_examples'}."""
  pred = lift(r, xy)
  gt = r['eval_joints_3d'] - r['eval_joints_3d'][:, joints.H36M_PELVIS :][:, :1]
  mask, visible = r['eval_mask'], r['eval_visible']
  ortho = _orthographic(r, image_size)
  results = _metrics_3d(pred, gt, mask, ortho)
  results['mpjpe_15j'] = metrics.mpjpe(pred, gt, mask=mask * _DIRECT)
  results['pa_mpjpe_15j'] = metrics.pa_mpjpe(pred, gt, mask=mask * _DIRECT)
  results['mpjpe_visible'] = metrics.mpjpe(pred, gt, mask=mask * visible)
  results['mpjpe_occluded'] = metrics.mpjpe(pred, gt, mask=mask * (1 - visible))
  if baseline is not None and baseline.pose_3d is not None:
    mean = np.broadcast_to(baseline.pose_3d, gt.shape)
    results['mpjpe_mean_pose'] = metrics.mpjpe(mean, gt, mask=mask)
    results['pa_mpjpe_mean_pose'] = metrics.pa_mpjpe(mean, gt, mask=mask)
  actions = _split_labels(ref, 'action')[r['index']]
  if any(actions):
    results['per_action'] = {
      action: {
        **_metrics_3d(
          pred[actions == action],
          gt[actions == action],
          mask[actions == action],
          ortho[actions == action],
        ),
        'num_examples': int((actions == action).sum()),
      }
      for action in sorted(set(actions))
    }
  return results


def _orthographic(r: dict[str, np.ndarray], image_size: int) -> np.ndarray:
  """The reference's orthographic prediction (N, 16, 3): heatmap x, y and depth, all in crop-side
  units, from its own readout (integer argmax with the flip test) where the predict step gave it
  ('legacy_xy', 'legacy_depth'), else from 'pred_xy' and 'pred_depth'."""
  legacy = 'legacy_xy' in r
  return np.concatenate(
    [
      r['legacy_xy' if legacy else 'pred_xy'] / image_size,
      r['legacy_depth' if legacy else 'pred_depth'][..., None],
    ],
    axis=-1,
  )


def _score_fork(r: dict[str, np.ndarray], image_size: int) -> dict:
  """The study's fork's figure where the split stores its labels ('fork_joints_3d', nonzero on
  the frames it scores, invalid ones included): 'mpjpe_fork', the legacy MPJPE against them, and
  'num_examples_fork'; {} for other splits."""
  fork = r['fork_joints_3d'] - r['fork_joints_3d'][:, joints.H36M_PELVIS :][:, :1]
  scored = np.any(fork != 0, axis=(1, 2))
  if not scored.any():
    return {}
  ortho = _orthographic({k: v[scored] for k, v in r.items()}, image_size)
  return {
    'mpjpe_fork': metrics.mpjpe_legacy(ortho, fork[scored]),
    'num_examples_fork': int(scored.sum()),
  }


def _metrics_3d(
  pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, ortho: np.ndarray
) -> dict[str, float]:
  """MPJPE (P1), PA-MPJPE (P2), 3DPCK@150 mm and its AUC over 0-150 mm of pred against gt
  ((N, 17, 3) root-relative mm, mask (N, 17)), and the reference's legacy MPJPE of the
  orthographic MPII-16 prediction `ortho` (N, 16, 3) (`metrics.mpjpe_legacy`)."""
  return {
    'mpjpe': metrics.mpjpe(pred, gt, mask=mask),
    'pa_mpjpe': metrics.pa_mpjpe(pred, gt, mask=mask),
    'mpjpe_legacy': metrics.mpjpe_legacy(ortho, gt, mask=mask),
    'pck3d_150': metrics.pck_3d(pred, gt, 150.0, mask=mask),
    'auc_3d': metrics.auc_3d(pred, gt, mask=mask),
  }


@functools.cache
def _split_labels(ref: datasets.DatasetRef, key: str) -> np.ndarray:
  """A text label (e.g. the action) of every example of a split, as a str array; read once per
  process (a pass over the records, images left encoded), not at every evaluation."""
  source = datasets.data_source(ref)
  return np.array([_text(source[i][key]) for i in range(len(source))])


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)

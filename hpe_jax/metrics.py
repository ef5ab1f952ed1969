"""Evaluation metrics on the host (numpy): PCK / PCKh for 2D, MPJPE / PA-MPJPE for 3D.

Masks select which joint instances count (> 0 counts); a metric with nothing to count is NaN.
"""

from __future__ import annotations

import numpy as np

from hpe_jax import joints

# PCKh's mean leaves out the pelvis and thorax (the standard MPII figure).
_PCKH_MEAN_JOINTS = np.array(
  [name not in ('pelvis', 'thorax') for name in joints.MPII16], np.float32
)


def _ratio(numerator, denominator):
  """numerator / denominator elementwise, NaN where the denominator is 0."""
  numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
  return np.divide(
    numerator, denominator, out=np.full_like(numerator, np.nan), where=denominator > 0
  )


def pck(
  pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, ref_size: np.ndarray, threshold: float
) -> dict:
  """Percentage of correct keypoints: distance <= threshold * ref_size.

  Args:
    pred, gt: (N, J, 2).
    mask: (N, J) annotated joints.
    ref_size: (N,) reference length per sample; samples with ref_size <= 0 are left out.
    threshold: fraction of ref_size.
  Returns:
    {'per_joint': (J,) fractions (NaN for joints never annotated), 'mean': the fraction over all
    counted joint instances (NaN if none)}.
  """
  ref_size = np.asarray(ref_size, np.float64)
  counted = (np.asarray(mask) > 0) & (ref_size > 0)[:, None]
  distance = np.linalg.norm(np.asarray(pred, np.float64) - gt, axis=-1)
  correct = counted & (distance <= threshold * ref_size[:, None])
  return {
    'per_joint': _ratio(correct.sum(0), counted.sum(0)),
    'mean': float(_ratio(correct.sum(), counted.sum())),
  }


def pckh(
  pred: np.ndarray,
  gt: np.ndarray,
  visible: np.ndarray,
  head_size: np.ndarray,
  threshold: float = 0.5,
) -> dict:
  """MPII PCKh. pred, gt (N, 16, 2); visible (N, 16) annotated joints; head_size (N,) already
  0.6 x the head-box diagonal -> {'per_joint': (16,), 'mean': weighted by annotated counts,
  pelvis and thorax excluded}."""
  result = pck(pred, gt, visible, head_size, threshold)
  result['mean'] = pck(pred, gt, np.asarray(visible) * _PCKH_MEAN_JOINTS, head_size, threshold)[
    'mean'
  ]
  return result


def _center(points: np.ndarray, root: int | None) -> np.ndarray:
  return points if root is None else points - points[:, root : root + 1]


def _counted(pred: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
  return np.ones(pred.shape[:2], bool) if mask is None else np.asarray(mask) > 0


def _mean_error(pred: np.ndarray, gt: np.ndarray, counted: np.ndarray) -> float:
  error = np.linalg.norm(pred - gt, axis=-1)
  return float(_ratio(error[counted].sum(), counted.sum()))


def mpjpe(
  pred: np.ndarray,
  gt: np.ndarray,
  root: int | None = joints.H36M_PELVIS,
  mask: np.ndarray | None = None,
) -> float:
  """Mean per-joint position error (protocol 1).

  Args:
    pred, gt: (N, J, 3), e.g. mm.
    root: joint subtracted from each pose (pred and gt separately); None: no alignment.
    mask: (N, J) joints that count; None: all.
  Returns:
    The mean Euclidean error over all counted joints, in the input unit.
  """
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  return _mean_error(_center(pred, root), _center(gt, root), _counted(pred, mask))


LEGACY_BONE_SUM_MM = 4000.0  # the reference's fixed skeleton size (its `mean_bone_length`)


def mpjpe_legacy(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
  """The reference implementation's MPJPE, the figure its papers report (64.5 mm for
  MPII + Human3.6M): xingyizhou/pytorch-pose-hg-3d `utils/eval.py` `mpjpe` with
  `datasets/h36m.py` `convert_eval_format`, which the study's fork keeps unchanged.

  Per sample: pred is made relative to the MPII pelvis; mapped to the 17 Human3.6M joints by
  `joints.H36M_FROM_MPII` (thorax <- upper neck, head <- head top, spine and nose interpolated);
  scaled so that the 15 bones `joints.H36M_LEGACY_BONES` sum to 4000 mm (the true scale being
  unknown to an orthographic prediction); its error is the mean Euclidean distance to gt over the
  joints. The result is the mean over samples; samples whose gt is all zero are skipped (the
  reference tests `gt.sum() ** 2 > 0`, the same on real poses). The reference reads pred from
  integer heatmap peaks into float32 (`get_preds_3d`; only its labels are float16); this takes
  any pred, in float64 (evaluation gives it the reference's readout: `readout.predict_step`).

  Args:
    pred: (N, 16, 3) MPII-16 in any consistent unit (e.g. heatmap x, y and depth as fractions of
      the crop side), relative to any origin.
    gt: (N, 17, 3) Human3.6M-17, root-relative, mm.
    mask: (N, 17) joints that count (None: all 17, as in the reference; a dataset without a nose
      label leaves it out).
  Returns:
    The mean error in mm (NaN without a counted sample).
  """
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  pred = pred - pred[:, joints.PELVIS : joints.PELVIS + 1]
  pred = np.einsum('ts,nsd->ntd', joints.H36M_FROM_MPII.matrix(), pred)
  child, parent = np.array(joints.H36M_LEGACY_BONES).T
  bone_sum = np.linalg.norm(pred[:, child] - pred[:, parent], axis=-1).sum(1)
  scale = LEGACY_BONE_SUM_MM / np.maximum(bone_sum, np.finfo(np.float64).tiny)
  pred = pred * scale[:, None, None]
  counted = _counted(pred, mask) & np.any(gt != 0, axis=(1, 2))[:, None]
  error = np.linalg.norm(pred - gt, axis=-1)
  per_sample = _ratio((error * counted).sum(1), counted.sum(1))
  return float(np.mean(per_sample[counted.any(1)])) if counted.any() else float('nan')


def procrustes_align(pred: np.ndarray, gt: np.ndarray, counted: np.ndarray) -> np.ndarray:
  """Moves each pred by the similarity (rotation, uniform scale, translation) closest to its gt.

  Umeyama's least squares on the counted joints; the SVD sign trick keeps det(R) = +1, so a
  mirrored pose is not undone. pred, gt (N, J, D), counted (N, J) bool -> (N, J, D), all joints
  moved (a sample with no counted joints collapses to scale 0).
  """
  weight = counted[..., None].astype(np.float64)
  num = np.maximum(weight.sum(1, keepdims=True), 1.0)
  p = pred - (weight * pred).sum(1, keepdims=True) / num
  mean_gt = (weight * gt).sum(1, keepdims=True) / num
  u, s, vt = np.linalg.svd(np.einsum('nji,njk->nik', weight * (gt - mean_gt), p))  # sum g p^T
  sign = np.ones_like(s)
  sign[:, -1] = np.sign(np.linalg.det(u @ vt))
  rotation = u @ (sign[:, :, None] * vt)
  norm = (weight * np.square(p)).sum((1, 2))
  scale = (s * sign).sum(1) / np.maximum(norm, np.finfo(np.float64).tiny)
  return scale[:, None, None] * np.einsum('nik,njk->nji', rotation, p) + mean_gt


def pa_mpjpe(
  pred: np.ndarray,
  gt: np.ndarray,
  root: int | None = joints.H36M_PELVIS,
  mask: np.ndarray | None = None,
) -> float:
  """`mpjpe` after aligning each pred to its gt by `procrustes_align` on the counted joints
  (protocol 2). The alignment's translation makes the result independent of `root`."""
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  counted = _counted(pred, mask)
  pred, gt = _center(pred, root), _center(gt, root)
  return _mean_error(procrustes_align(pred, gt, counted), gt, counted)


def pck_3d(
  pred: np.ndarray,
  gt: np.ndarray,
  threshold: float = 150.0,
  root: int | None = joints.H36M_PELVIS,
  mask: np.ndarray | None = None,
) -> float:
  """3D PCK (MPI-INF-3DHP's 3DPCK): the fraction of counted joints within `threshold` of the
  ground truth after root alignment. pred, gt (N, J, 3) mm; mask (N, J)."""
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  counted = _counted(pred, mask)
  error = np.linalg.norm(_center(pred, root) - _center(gt, root), axis=-1)
  return float(_ratio((error[counted] <= threshold).sum(), counted.sum()))


def auc_3d(
  pred: np.ndarray,
  gt: np.ndarray,
  max_threshold: float = 150.0,
  steps: int = 31,
  root: int | None = joints.H36M_PELVIS,
  mask: np.ndarray | None = None,
) -> float:
  """Area under the 3DPCK curve: the mean of `pck_3d` over `steps` thresholds evenly spaced in
  [0, max_threshold] mm (MPI-INF-3DHP's protocol: 0, 5, ..., 150)."""
  return float(
    np.mean([pck_3d(pred, gt, t, root, mask) for t in np.linspace(0.0, max_threshold, steps)])
  )

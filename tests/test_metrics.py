"""Tests of hpe_jax.metrics: known answers and plain-numpy references."""

import os
import pickle

from conftest import realdata_dir
import numpy as np
import pytest

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax import metrics


def _rotation(axis, angle):
  axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _np_mpjpe(pred, gt, root, mask):
  errors = []
  for n in range(len(pred)):
    for j in range(pred.shape[1]):
      if mask[n, j]:
        errors.append(np.linalg.norm((pred[n, j] - pred[n, root]) - (gt[n, j] - gt[n, root])))
  return np.mean(errors)


def _np_pa_mpjpe(pred, gt, mask):
  """Per sample: Kabsch/Umeyama on the counted joints with an explicit loop over samples."""
  errors = []
  for n in range(len(pred)):
    p, g = pred[n][mask[n]], gt[n][mask[n]]
    p0, g0 = p - p.mean(0), g - g.mean(0)
    u, s, vt = np.linalg.svd(g0.T @ p0)
    d = np.diag([1, 1, np.linalg.det(u @ vt)])
    r = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / np.sum(p0**2)
    aligned = scale * p0 @ r.T + g.mean(0)
    errors.extend(np.linalg.norm(aligned - g, axis=-1))
  return np.mean(errors)


def _poses(seed, num=5, num_joints=17):
  rng = np.random.default_rng(seed)
  gt = rng.normal(0, 300, (num, num_joints, 3)) + [0, 0, 4000]
  pred = gt + rng.normal(0, 40, gt.shape)
  mask = rng.uniform(size=(num, num_joints)) < 0.8
  mask[:, joints.H36M_PELVIS] = True
  return pred, gt, mask


def test_mpjpe_matches_numpy_and_is_translation_invariant():
  pred, gt, mask = _poses(0)
  want = _np_mpjpe(pred, gt, joints.H36M_PELVIS, mask)
  np.testing.assert_allclose(metrics.mpjpe(pred, gt, mask=mask), want, rtol=1e-12)
  shift = np.random.default_rng(1).normal(0, 1000, (5, 1, 3))
  np.testing.assert_allclose(metrics.mpjpe(pred + shift, gt, mask=mask), want, rtol=1e-9)
  np.testing.assert_allclose(
    metrics.mpjpe(pred, gt), _np_mpjpe(pred, gt, joints.H36M_PELVIS, np.ones_like(mask))
  )


def test_mpjpe_known_values():
  gt = np.zeros((2, 3, 3))
  pred = gt.copy()
  pred[0, 1] = (3, 4, 0)  # error 5
  pred[1, 2] = (0, 0, 10)  # error 10, not counted below
  np.testing.assert_allclose(metrics.mpjpe(pred, gt, root=None), 15 / 6)
  mask = np.array([[1, 1, 1], [1, 1, 0]])
  np.testing.assert_allclose(metrics.mpjpe(pred, gt, root=None, mask=mask), 5 / 5)
  # Root alignment with root 1: sample 0's other joints become off by 5.
  np.testing.assert_allclose(metrics.mpjpe(pred, gt, root=1), (5 + 5 + 10) / 6)
  assert np.isnan(metrics.mpjpe(pred, gt, mask=np.zeros((2, 3))))


def test_pa_mpjpe_matches_numpy():
  pred, gt, mask = _poses(2)
  np.testing.assert_allclose(
    metrics.pa_mpjpe(pred, gt, mask=mask), _np_pa_mpjpe(pred, gt, mask), rtol=1e-9
  )
  assert metrics.pa_mpjpe(pred, gt, mask=mask) < metrics.mpjpe(pred, gt, mask=mask)
  np.testing.assert_allclose(
    metrics.pa_mpjpe(pred, gt, root=None, mask=mask),
    metrics.pa_mpjpe(pred, gt, mask=mask),
    rtol=1e-9,
  )


def test_pa_mpjpe_undoes_similarity():
  _, gt, _ = _poses(3)
  rotation = _rotation((1, 2, -0.5), 0.7)
  pred = 1.3 * gt @ rotation.T + (100, -50, 20)
  assert metrics.pa_mpjpe(pred, gt) < 1e-6
  # A pure scaling about the root has a known MPJPE: 0.3 x the mean root distance.
  scaled = gt + 0.3 * (gt - gt[:, :1])
  want = 0.3 * np.linalg.norm(gt - gt[:, :1], axis=-1).mean()
  np.testing.assert_allclose(metrics.mpjpe(scaled, gt), want, rtol=1e-12)
  assert metrics.pa_mpjpe(scaled, gt) < 1e-6


def test_pa_mpjpe_keeps_reflections():
  _, gt, _ = _poses(4)
  mirrored = gt * (-1, 1, 1)
  error = metrics.pa_mpjpe(mirrored, gt)
  assert error > 10
  np.testing.assert_allclose(error, _np_pa_mpjpe(mirrored, gt, np.ones(gt.shape[:2], bool)))


def test_pck_known_answer():
  gt = np.zeros((3, 2, 2))
  pred = np.array(
    [
      [[1.0, 0.0], [0.0, 3.0]],  # ref 2, threshold 0.5 -> radius 1: hit, miss
      [[0.6, 0.8], [0.0, 0.0]],  # ref 2: distance exactly 1 counts as correct
      [[0.0, 0.0], [0.0, 0.0]],
    ]
  )  # ref 0: left out
  mask = np.array([[1, 1], [1, 0], [1, 1]])
  result = metrics.pck(pred, gt, mask, np.array([2.0, 2.0, 0.0]), 0.5)
  np.testing.assert_allclose(result['per_joint'], [1.0, 0.0])
  np.testing.assert_allclose(result['mean'], 2 / 3)
  # A joint never annotated: NaN per joint, left out of the mean.
  result = metrics.pck(pred, gt, mask * [1, 0], np.array([2.0, 2.0, 0.0]), 0.5)
  assert np.isnan(result['per_joint'][1]) and result['mean'] == 1.0
  result = metrics.pck(pred, gt, np.zeros((3, 2)), np.ones(3), 0.5)
  assert np.all(np.isnan(result['per_joint'])) and np.isnan(result['mean'])


def test_pck_matches_numpy():
  rng = np.random.default_rng(5)
  gt = rng.uniform(0, 100, (20, 16, 2))
  pred = gt + rng.normal(0, 8, gt.shape)
  mask = rng.uniform(size=(20, 16)) < 0.7
  ref = rng.uniform(5, 30, 20)
  ref[:3] = 0
  correct, count = np.zeros(16), np.zeros(16)
  for n in range(20):
    for j in range(16):
      if mask[n, j] and ref[n] > 0:
        count[j] += 1
        correct[j] += np.linalg.norm(pred[n, j] - gt[n, j]) <= 0.5 * ref[n]
  result = metrics.pck(pred, gt, mask, ref, 0.5)
  np.testing.assert_allclose(result['per_joint'], correct / count)
  np.testing.assert_allclose(result['mean'], correct.sum() / count.sum())


def test_pckh_excludes_pelvis_and_thorax():
  pelvis, thorax = joints.MPII16.index('pelvis'), joints.MPII16.index('thorax')
  gt = np.zeros((2, 16, 2))
  pred = np.zeros((2, 16, 2))
  pred[:, [pelvis, thorax]] = 100.0  # wrong, but they do not enter the mean
  pred[0, 0] = 100.0  # one more miss among the 2 * 14 counted instances...
  visible = np.ones((2, 16))
  visible[1, 5] = 0  # ...of which one is unannotated: 27 counted, 26 correct
  result = metrics.pckh(pred, gt, visible, np.array([10.0, 10.0]))
  np.testing.assert_allclose(result['mean'], 26 / 27)
  assert result['per_joint'][pelvis] == 0 and result['per_joint'][thorax] == 0
  np.testing.assert_allclose(result['per_joint'][[0, 5, 9]], [0.5, 1.0, 1.0])
  # Threshold 0.5 of the head size: an error of 5 with head size 10 still counts.
  pred[1, 9] = (3.0, 4.0)
  np.testing.assert_allclose(
    metrics.pckh(pred, gt, visible, np.array([10.0, 10.0]))['mean'], 26 / 27
  )
  np.testing.assert_allclose(
    metrics.pckh(pred, gt, visible, np.array([10.0, 9.99]))['per_joint'][9], 0.5
  )


@pytest.mark.parametrize('num_joints', [3, 17])
def test_procrustes_with_few_or_no_counted_joints(num_joints):
  pred, gt, _ = _poses(6, num=2, num_joints=num_joints)
  counted = np.zeros((2, num_joints), bool)
  counted[0] = True
  aligned = metrics.procrustes_align(pred, gt, counted)
  assert np.all(np.isfinite(aligned))
  np.testing.assert_allclose(
    metrics.pa_mpjpe(pred, gt, mask=counted), _np_pa_mpjpe(pred[:1], gt[:1], counted[:1])
  )


def test_pck_3d_and_auc_against_numpy_loops():
  rng = np.random.default_rng(5)
  gt = rng.normal(0, 300, (6, 17, 3))
  pred = gt + rng.normal(0, 60, gt.shape)
  mask = rng.random((6, 17)) > 0.2

  def reference_pck(threshold):
    hits = total = 0
    for n in range(6):
      for j in range(17):
        if mask[n, j]:
          error = np.linalg.norm((pred[n, j] - pred[n, 0]) - (gt[n, j] - gt[n, 0]))
          hits += error <= threshold
          total += 1
    return hits / total

  for threshold in (50.0, 150.0):
    assert metrics.pck_3d(pred, gt, threshold, root=0, mask=mask) == pytest.approx(
      reference_pck(threshold)
    )
  expected_auc = np.mean([reference_pck(t) for t in np.arange(0, 151, 5)])
  assert metrics.auc_3d(pred, gt, root=0, mask=mask) == pytest.approx(expected_auc)
  assert metrics.pck_3d(gt, gt, 0.0, root=0) == 1.0  # a perfect prediction is within 0 mm


def _reference_mpjpe_legacy(pred16, gt17):
  """The reference's code in plain numpy (xingyizhou/pytorch-pose-hg-3d, utils/eval.py `mpjpe` and
  datasets/h36m.py `convert_eval_format` / `_get_bone_length`), in float64 instead of float16."""
  mpii_to_h36m = [6, 2, 1, 0, 3, 4, 5, 7, 8, 9, 9, 13, 14, 15, 12, 11, 10]
  edges_3d = [
    [3, 2],
    [2, 1],
    [1, 0],
    [0, 4],
    [4, 5],
    [5, 6],
    [0, 7],
    [7, 8],
    [8, 10],
    [16, 15],
    [15, 14],
    [14, 8],
    [8, 11],
    [11, 12],
    [12, 13],
  ]
  count, total = 0, 0.0
  for i in range(len(pred16)):
    if gt17[i].sum() ** 2 > 0:
      count += 1
      pred = pred16[i] - pred16[i, 6:7]  # get_preds_3d: relative to the MPII pelvis
      h36m = pred[mpii_to_h36m]
      h36m[7] = (h36m[0] + h36m[8]) / 2
      h36m[9] = (h36m[8] + h36m[10]) / 2
      bones = sum(((h36m[a] - h36m[b]) ** 2).sum() ** 0.5 for a, b in edges_3d)
      h36m = h36m * 4000 / bones
      total += (((gt17[i] - h36m) ** 2).sum(axis=1) ** 0.5).mean()
  return total / count


def test_mpjpe_legacy_matches_the_reference_on_random_poses():
  rng = np.random.default_rng(3)
  pred = rng.normal(0, 0.2, (9, 16, 3)) + rng.normal(0, 1, (9, 1, 3))  # any unit and origin
  gt = rng.normal(0, 300, (9, 17, 3))
  gt -= gt[:, :1]
  gt[4] = 0  # a sample without ground truth is skipped
  want = _reference_mpjpe_legacy(pred, gt)
  assert metrics.mpjpe_legacy(pred, gt) == pytest.approx(want, rel=1e-12)
  # Scale- and translation-free: what the reference's fixed 4000 mm skeleton is for.
  assert metrics.mpjpe_legacy(7.5 * pred + 3.0, gt) == pytest.approx(want, rel=1e-12)
  # A mask leaves joints out of each sample's mean.
  mask = np.ones((9, 17))
  mask[:, joints.H36M17.index('nose')] = 0
  assert metrics.mpjpe_legacy(pred, gt, mask=mask) != pytest.approx(want, rel=1e-3)


def test_mpjpe_legacy_is_zero_for_the_reference_rule_of_a_4000_mm_skeleton():
  rng = np.random.default_rng(4)
  pred = rng.normal(0, 300, (3, 16, 3))
  h36m = np.einsum('ts,nsd->ntd', joints.H36M_FROM_MPII.matrix(), pred - pred[:, 6:7])
  child, parent = np.array(joints.H36M_LEGACY_BONES).T
  gt = h36m * 4000 / np.linalg.norm(h36m[:, child] - h36m[:, parent], axis=-1).sum(1)[:, None, None]
  assert metrics.mpjpe_legacy(0.01 * pred, gt) < 1e-9
  assert (
    metrics.mpjpe(np.einsum('ts,nsd->ntd', joints.H36M_FROM_MPII.matrix(), 0.01 * pred), gt) > 100
  )


def test_mpjpe_legacy_on_real_human36m_frames():
  """The reference's orthographic prediction made from the labels of the 4 real frames (x, y: the
  2D labels over the crop side; z: root-relative depth in the same unit, weak perspective at the
  root) against their 3D labels: equal to the reference's code; the error left is the metric's
  own (interpolated spine and nose, H36M thorax read as the upper neck, fixed skeleton size)."""
  path = realdata_dir()
  if path is None or not os.path.isdir(os.path.join(path, 'h36m', 'mmpose')):
    pytest.skip('realdata/h36m is absent')
  data = np.load(os.path.join(path, 'h36m', 'mmpose', 'test_h36m_body3d.npz'))
  with open(os.path.join(path, 'h36m', 'mmpose', 'cameras.pkl'), 'rb') as f:
    cameras = pickle.load(f)
  focal = np.array(
    [np.ravel(cameras[(n.split('/')[0], n.split('.')[1][:8])]['f'])[0] for n in data['imgname']]
  )
  camera_mm = data['S'][..., :3] * 1000
  side = data['scale'] * 200  # the person box side in pixels
  depth = geometry.root_relative_depth_px(camera_mm, focal, joints.H36M_PELVIS)
  ortho_h36m = np.concatenate([data['part'][..., :2], depth[..., None]], -1) / side[:, None, None]
  ortho, _ = joints.MPII_FROM_H36M(ortho_h36m, np.ones((4, 17)))
  gt = camera_mm - camera_mm[:, :1]
  value = metrics.mpjpe_legacy(ortho.astype(np.float64), gt)
  assert value == pytest.approx(_reference_mpjpe_legacy(ortho.astype(np.float64), gt), rel=1e-9)
  assert 5 < value < 60, value

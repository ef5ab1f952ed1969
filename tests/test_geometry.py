"""Camera geometry against OpenCV: distorted projection, undistortion, and the 3D lifting chain
evaluation uses."""

from __future__ import annotations

import cv2
import numpy as np

from hpe_jax import geometry
from hpe_jax import joints

INTRINSICS = np.array([1145.0, 1144.0, 512.5, 515.4])  # a Human3.6M camera
DISTORTION = np.array([-0.207, 0.247, -0.0009, -0.0018, -0.0031])  # k1, k2, p1, p2, k3


def _camera_matrix(intrinsics):
  fx, fy, cx, cy = intrinsics
  return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])


def _points(rng, n):
  """n points 3-6 m in front of the camera, spread over a 1000 px image."""
  z = rng.uniform(3000, 6000, n)
  xy = rng.uniform(-0.4, 0.4, (n, 2)) * z[:, None]
  return np.concatenate([xy, z[:, None]], axis=1)


def test_project_matches_opencv_with_and_without_distortion():
  points = _points(np.random.default_rng(0), 50)
  for distortion in (np.zeros(5), DISTORTION):
    want, _ = cv2.projectPoints(
      points, np.zeros(3), np.zeros(3), _camera_matrix(INTRINSICS), distortion
    )
    np.testing.assert_allclose(
      geometry.project(points, INTRINSICS, distortion), want[:, 0], atol=1e-6
    )
  np.testing.assert_allclose(
    geometry.project(points, INTRINSICS),
    geometry.project(points, INTRINSICS, np.zeros(5)),
    atol=1e-9,
  )


def test_undistort_inverts_distortion_and_matches_opencv():
  points = _points(np.random.default_rng(1), 50)
  uv = geometry.project(points, INTRINSICS, DISTORTION)
  pinhole = geometry.undistort_pixels(uv, INTRINSICS, DISTORTION)
  np.testing.assert_allclose(pinhole, geometry.project(points, INTRINSICS), atol=1e-5)
  opencv = cv2.undistortPoints(
    uv[:, None], _camera_matrix(INTRINSICS), DISTORTION, P=_camera_matrix(INTRINSICS)
  )[:, 0]
  np.testing.assert_allclose(pinhole, opencv, atol=1e-3)
  # Batched over samples: intrinsics (N, 4) and distortion (N, 5) with uv (N, J, 2).
  batch = np.stack([uv, uv])
  np.testing.assert_allclose(
    geometry.undistort_pixels(
      batch, np.stack([INTRINSICS] * 2), np.stack([DISTORTION, np.zeros(5)])
    ),
    np.stack([pinhole, uv]),
    atol=1e-5,
  )


def test_distorted_labels_lift_back_to_the_3d_pose():
  """The evaluation chain: distorted 2D -> undistort -> lift with the true root-relative depth
  and root depth -> the root-relative 3D pose, exactly."""
  rng = np.random.default_rng(2)
  pose = rng.normal(0, 300, (3, joints.NUM_JOINTS, 3)) + np.array([200.0, -100.0, 4500.0])
  intrinsics = np.stack([INTRINSICS] * 3)
  uv = geometry.project(pose, intrinsics, np.stack([DISTORTION] * 3))
  depth_px = geometry.root_relative_depth_px(pose, intrinsics[:, 0], joints.PELVIS)
  lifted = geometry.backproject_root_relative(
    geometry.undistort_pixels(uv, intrinsics, np.stack([DISTORTION] * 3)),
    depth_px,
    intrinsics,
    pose[:, joints.PELVIS, 2],
    joints.PELVIS,
  )
  np.testing.assert_allclose(lifted, pose - pose[:, joints.PELVIS : joints.PELVIS + 1], atol=1e-3)


def test_fit_scale_is_the_least_squares_factor_on_the_counted_joints():
  rng = np.random.default_rng(5)
  points = rng.normal(0, 300, (3, 17, 3))
  reference = points * np.array([0.9, 1.0, 1.2])[:, None, None] + rng.normal(0, 5, points.shape)
  mask = np.ones((3, 17))
  mask[1, 5:] = 0
  reference[1, 5:] = 1e4  # uncounted joints do not move the fit
  mask[2] = 0  # nothing counted: 1
  want = [
    np.sum(p[m > 0] * r[m > 0]) / np.sum(p[m > 0] ** 2)
    for p, r, m in zip(points[:2], reference[:2], mask[:2])
  ] + [1.0]
  got = geometry.fit_scale(points, reference, mask)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert abs(got[0] - 0.9) < 0.01 and abs(got[1] - 1.0) < 0.01


def test_joint_map_matrix_maps_like_the_map():
  points = np.random.default_rng(6).normal(0, 1, (4, 16, 3))
  mapped, mask = joints.H36M_FROM_MPII(points, np.ones((4, 16)))
  assert mask.all()  # spine and nose are midpoints of predicted joints
  np.testing.assert_allclose(
    np.einsum('ts,nsd->ntd', joints.H36M_FROM_MPII.matrix(), points), mapped, atol=1e-6
  )
  direct = joints.H36M_FROM_MPII_DIRECT.matrix()
  assert np.array_equal(
    direct.sum(1) > 0, [name not in ('spine', 'nose') for name in joints.H36M17]
  )

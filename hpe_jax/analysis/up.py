"""The up direction that trunk angles are measured against, and the y-up frame motion files use.

Predicted 3D joints are in the camera's axes (x right, y down, z away from the camera), relative
to the pelvis. Two ways to know which way is up:
- `CAMERA_UP` (--up=camera): the camera's up, -y. An assumption: the camera was held level (a
  camera pitched by 10 degrees adds 10 degrees to trunk flexion);
- `floor_up` (--up=floor): the normal of the ground plane the feet touch over the clip. Each
  pose is placed in the camera frame first (`place`: its 2D joints fix where it stands, its size
  in pixels against its size in mm how far away), then a plane is fitted to the lower ankle of
  every frame. The feet must cover ground in two directions (people walking, not standing
  still); `FloorError` says so otherwise.
"""

from __future__ import annotations

import numpy as np

from hpe_jax import errors
from hpe_jax import joints

CAMERA_UP = np.array([0.0, -1.0, 0.0])
# The focal length assumed when the video's is unknown, as a multiple of the frame's longer side
# (a 53 degree field of view across it): placing people only needs their depths' proportions.
DEFAULT_FOCAL_PER_SIDE = 1.0
# The least spread (the ground points' second principal standard deviation, mm) that fixes a
# plane: narrower, the plane's tilt is mostly the ankles' noise.
MIN_FLOOR_SPREAD_MM = 150.0
# Ground points farther from the first plane than this quantile of distances are dropped (swing
# feet, misplaced frames) before the final fit.
_INLIER_QUANTILE = 0.8
_ANKLES = (joints.MPII16.index('r_ankle'), joints.MPII16.index('l_ankle'))


class FloorError(errors.HpeError, ValueError):
  """The feet do not fix a ground plane; the message says why and what to use instead."""


def place(
  joints_2d: np.ndarray, joints_3d: np.ndarray, image_size: tuple[int, int], focal_px: float
) -> np.ndarray:
  """Pelvis-relative 3D poses placed in the camera frame by weak perspective.

  Per frame, the scale s (px per mm) and shift t best mapping the 3D joints' x, y onto the 2D
  joints (least squares) give the pelvis at ((t - c) / s, focal_px / s), c the image centre.

  Args:
    joints_2d: (T, J, 2) pixels; joints_3d: (T, J, 3) mm, camera axes, pelvis at 0; NaN where a
      joint was not measured.
    image_size: (width, height) pixels.
    focal_px: the camera's focal length in pixels.

  Returns:
    (T, J, 3) mm in the camera frame; NaN rows where fewer than two joints were measured.
  """
  xy = joints_3d[..., :2]
  valid = np.isfinite(joints_2d).all(-1) & np.isfinite(joints_3d).all(-1)
  count = valid.sum(-1, keepdims=True)
  with np.errstate(invalid='ignore', divide='ignore'):
    mean_xy = np.where(valid[..., None], xy, 0).sum(-2) / count
    mean_uv = np.where(valid[..., None], joints_2d, 0).sum(-2) / count
    dxy = np.where(valid[..., None], xy - mean_xy[..., None, :], 0)
    duv = np.where(valid[..., None], joints_2d - mean_uv[..., None, :], 0)
    scale = (dxy * duv).sum((-1, -2)) / (dxy**2).sum((-1, -2))
    centre = np.array([image_size[0] / 2 - 0.5, image_size[1] / 2 - 0.5])
    shift = mean_uv - scale[:, None] * mean_xy
    pelvis = np.concatenate([(shift - centre) / scale[:, None], focal_px / scale[:, None]], -1)
  pelvis[(count[:, 0] < 2) | ~(scale > 0)] = np.nan
  return joints_3d + pelvis[:, None, :]


def floor_up(placed: list[np.ndarray]) -> tuple[np.ndarray, dict]:
  """The ground plane's normal, pointing up, from placed poses (`place`) of one or more tracks.

  Args:
    placed: per track, (T, 16, 3) MPII-16 joints in the camera frame, mm; NaN where unmeasured.

  Returns:
    (3,) unit up vector in the camera frame, and facts for the summary: 'ground_points',
    'spread_mm' (the ground points' second principal standard deviation), 'camera_tilt_deg' (the
    angle between this up and the camera's).
  Raises:
    FloorError: fewer than 3 ground points, or ground too narrow to fix a plane.
  """
  points = []
  for track in placed:
    ankles = track[:, _ANKLES, :]
    # The lower ankle (larger camera y) of each frame stands on the ground.
    lower = np.take_along_axis(ankles, np.argmax(ankles[..., 1], axis=1)[:, None, None], 1)[:, 0]
    points.append(lower[np.isfinite(lower).all(-1)])
  points = np.concatenate(points) if points else np.zeros((0, 3))
  if len(points) < 3:
    raise FloorError(
      f'--up=floor: {len(points)} frames with both ankles measured, too few to find the floor: '
      'use --up=camera'
    )
  normal, spread = _plane(points)
  distance = np.abs((points - points.mean(0)) @ normal)
  inliers = points[distance <= np.quantile(distance, _INLIER_QUANTILE)]
  if len(inliers) >= 3:
    normal, spread = _plane(inliers)
  if spread < MIN_FLOOR_SPREAD_MM:
    raise FloorError(
      f'--up=floor: the feet cover too little ground to find the floor (spread {spread:.0f} mm, '
      f'needs {MIN_FLOOR_SPREAD_MM:.0f}: people standing in place): use --up=camera'
    )
  # Up is the side of the plane the bodies are on.
  bodies = np.concatenate([track[:, joints.PELVIS, :] for track in placed])
  bodies = bodies[np.isfinite(bodies).all(-1)]
  if np.mean((bodies - points.mean(0)) @ normal) < 0:
    normal = -normal
  tilt = float(np.degrees(np.arccos(np.clip(normal @ CAMERA_UP, -1.0, 1.0))))
  return normal, {'ground_points': int(len(points)), 'spread_mm': spread, 'camera_tilt_deg': tilt}


def _plane(points: np.ndarray) -> tuple[np.ndarray, float]:
  """The least-squares plane's unit normal and the points' second principal std deviation."""
  centred = points - points.mean(0)
  _, singular, vt = np.linalg.svd(centred, full_matrices=False)
  return vt[2], float(singular[1] / np.sqrt(len(points)))


def y_up_rotation(up: np.ndarray) -> np.ndarray:
  """(3, 3) rotation from the camera frame to the motion files' frame: y = `up`, x = the camera's
  right made horizontal, z = x cross y (towards the camera). With CAMERA_UP it maps (x, y, z) to
  (x, -y, -z)."""
  y = up / np.linalg.norm(up)
  x = np.array([1.0, 0.0, 0.0]) - y[0] * y
  x /= np.linalg.norm(x)
  return np.stack([x, y, np.cross(x, y)])

"""Camera and image geometry on the host (numpy): crop affines, projection, depth, back-projection.

Pixel convention: integer coordinates are pixel centres (as in cv2.warpAffine), so an image of
side N spans [-0.5, N - 0.5].
"""

from __future__ import annotations

import numpy as np

from hpe_jax import joints


def crop_affine(
  center, side: float, rotation_deg: float, output_size: int, flip: bool = False
) -> np.ndarray:
  """The affine taking original pixels to the pixels of a square crop.

  Args:
    center: (2,) crop centre in original pixels.
    side: crop side in original pixels; it fills the output exactly.
    rotation_deg: rotation of the image content, counter-clockwise as seen on screen.
    output_size: output side in pixels.
    flip: mirror the output horizontally.
  Returns:
    (2, 3) float64 matrix A with [x_out, y_out] = A @ [x, y, 1].
  """
  scale = output_size / side
  theta = np.deg2rad(rotation_deg)
  cos, sin = np.cos(theta) * scale, np.sin(theta) * scale
  # y points down on screen, so a counter-clockwise rotation on screen is clockwise in (x, y).
  linear = np.array([[cos, sin], [-sin, cos]])
  if flip:
    linear[0] = -linear[0]
  half = output_size / 2 - 0.5
  offset = np.array([half, half]) - linear @ np.asarray(center, np.float64)
  return np.concatenate([linear, offset[:, None]], axis=1)


def clamp_crop_side(side: float, image_size) -> float:
  """The reference's crop clamp: a crop side is at most the image's longer side.

  xingyizhou/pytorch-pose-hg-3d and the study's fork set `s = min(s, max(img.shape[0],
  img.shape[1]))` after the scale augmentation, in training and in evaluation (`mpii.py`,
  `h36m.py`, `mpii3d.py`), and divide the depth target by that clamped `s`: a person box
  larger than its image (a close-up) is cropped at the image's size.

  Args:
    side: the crop side in original pixels (person box x augmentation scale).
    image_size: (width, height) of the original image; zeros if unknown (no clamp).
  """
  longer = float(np.max(image_size))
  return float(side) if longer <= 0 else min(float(side), longer)


def invert_affine(affine: np.ndarray) -> np.ndarray:
  """(2, 3) -> (2, 3): the inverse affine."""
  linear_inv = np.linalg.inv(affine[:, :2])
  return np.concatenate([linear_inv, -linear_inv @ affine[:, 2:]], axis=1)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
  """(2, 3), (2, 3) -> (2, 3): the affine x -> outer(inner(x))."""
  return np.concatenate(
    [outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]], axis=1
  )


def transform_points(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
  """(2, 3) or (N, 2, 3) affine, (..., 2) points -> (..., 2)."""
  affine = np.asarray(affine)
  return (
    (np.einsum('...ij,...kj->...ki', affine[..., :2], points) + affine[..., None, :, 2])
    if affine.ndim == 3
    else points @ affine[:, :2].T + affine[:, 2]
  )


def project(
  points_3d: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray | None = None
) -> np.ndarray:
  """Camera projection. points_3d (..., J, 3) camera frame, intrinsics (..., 4) = fx, fy, cx, cy,
  distortion (..., 5) = k1, k2, p1, p2, k3 (OpenCV's radial-tangential model; None or zeros:
  pinhole) -> (..., J, 2) pixels."""
  intrinsics = np.asarray(intrinsics)[..., None, :]
  normalized = points_3d[..., :2] / points_3d[..., 2:3]
  if distortion is not None:
    normalized = distort(normalized, distortion)
  return normalized * intrinsics[..., :2] + intrinsics[..., 2:]


def distort(normalized: np.ndarray, distortion: np.ndarray) -> np.ndarray:
  """Lens distortion of normalised image points. normalized (..., J, 2) = (X/Z, Y/Z), distortion
  (..., 5) = k1, k2, p1, p2, k3 -> (..., J, 2)."""
  k1, k2, p1, p2, k3 = (np.asarray(distortion)[..., None, k] for k in range(5))
  x, y = normalized[..., 0], normalized[..., 1]
  r2 = x * x + y * y
  radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
  return np.stack(
    [
      x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
      y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y,
    ],
    axis=-1,
  )


def undistort_pixels(
  uv: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray, iterations: int = 20
) -> np.ndarray:
  """Inverts `distort` on pixels: where a pinhole camera would have imaged the same ray.

  Fixed-point iteration (as OpenCV's undistortPoints), exact to ~1e-6 px for the mild distortion
  of real lenses within the image. uv (..., J, 2) pixels, intrinsics (..., 4), distortion (..., 5)
  -> (..., J, 2) pixels.
  """
  intrinsics = np.asarray(intrinsics, np.float64)[..., None, :]
  target = (np.asarray(uv, np.float64) - intrinsics[..., 2:]) / intrinsics[..., :2]
  normalized = target
  for _ in range(iterations):
    normalized = normalized + target - distort(normalized, distortion)
  return normalized * intrinsics[..., :2] + intrinsics[..., 2:]


def root_relative_depth_px(points_3d: np.ndarray, focal: np.ndarray, root: int) -> np.ndarray:
  """Depth relative to the root joint in original-image pixels, under weak perspective at the
  root: (Z_j - Z_root) * f / Z_root (REFERENCE.md 1, "Targets"). Dividing by the crop side in
  pixels gives the depth target in crop units.

  points_3d (..., J, 3) camera frame, focal (...,) pixels -> (..., J).
  """
  z_root = points_3d[..., root : root + 1, 2]
  return (points_3d[..., 2] - z_root) * np.asarray(focal)[..., None] / z_root


def backproject_root_relative(
  uv: np.ndarray, depth_px: np.ndarray, intrinsics: np.ndarray, root_depth: np.ndarray, root: int
) -> np.ndarray:
  """Inverts projection + `root_relative_depth_px` given the root's true depth.

  Args:
    uv: (N, J, 2) joints in original pixels.
    depth_px: (N, J) root-relative depth in original pixels (weak perspective at the root).
    intrinsics: (N, 4) fx, fy, cx, cy.
    root_depth: (N,) the root's camera depth Z_root in mm.
    root: index of the root joint.
  Returns:
    (N, J, 3) camera-frame joints in mm relative to the root.
  """
  fx, fy, cx, cy = (intrinsics[:, None, k] for k in range(4))
  z = root_depth[:, None] * (1.0 + depth_px / fx)
  points = np.stack([(uv[..., 0] - cx) / fx * z, (uv[..., 1] - cy) / fy * z, z], axis=-1)
  return points - points[:, root : root + 1]


def canonical_limb_scale(pose: np.ndarray) -> np.ndarray:
  """The factor that gives an MPII-16 pose of unknown scale the canonical limb lengths: the sum of
  joints.CANONICAL_LIMB_LENGTHS_MM over the sum of the pose's 8 limb lengths (thighs, shins,
  upper arms, forearms). pose (..., 16, 3) in any unit -> (...,) mm per unit."""
  child, parent = np.array(list(joints.CANONICAL_LIMB_LENGTHS_MM)).T
  length = np.linalg.norm(pose[..., child, :] - pose[..., parent, :], axis=-1).sum(-1)
  return sum(joints.CANONICAL_LIMB_LENGTHS_MM.values()) / np.maximum(length, 1e-9)


def fit_scale(points: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Per sample, the factor s minimising sum |s * points - reference|^2 over the masked joints
  (both in the same frame, e.g. root-relative).

  points, reference (N, J, D); mask (N, J) -> (N,) float64; 1 where nothing counts.
  """
  weight = (np.asarray(mask) > 0)[..., None]
  points, reference = np.asarray(points, np.float64), np.asarray(reference, np.float64)
  numerator = (weight * points * reference).sum((1, 2))
  denominator = (weight * points * points).sum((1, 2))
  return np.divide(numerator, denominator, out=np.ones_like(numerator), where=denominator > 0)

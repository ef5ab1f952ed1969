"""Pictures of predicted poses: the 2D skeleton over the image, the 3D skeleton from two sides.

  from hpe_jax.inference import visualize
  overlay = visualize.draw_2d(image, result['joints_2d'], result['scores'])  # (H, W, 3) RGB
  visualize.plot_3d(result['joints_3d'], 'pose_3d.png')
  overlay = visualize.draw_people(image, record['people'])  # every person, boxes outlined
  visualize.plot_3d_people([pose_a, pose_b], 'people_3d.png', labels=['a', 'b'])

Left limbs are blue, right limbs red and the trunk and head green, in both pictures ("left" is
the person's left).
"""

from __future__ import annotations

import os

import cv2
from matplotlib import figure
from matplotlib.backends import backend_agg
import numpy as np

from hpe_jax import joints
from hpe_jax.inference import image_io
from hpe_jax.inference import outputs

# RGB colours of the three sides of the skeleton (matplotlib's tab:blue, tab:red, tab:green).
SIDE_RGB = {'left': (31, 119, 180), 'right': (214, 39, 40), 'centre': (44, 160, 44)}
# Joints whose heatmap maximum is below this are drawn hollow, and their bones thin: the model is
# unsure of them (a confident joint scores about 1).
MIN_CONFIDENT_SCORE = 0.3
# RGB of the person boxes' outlines in draw_people: light grey, apart from the three sides,
# 1 px, over a 3 px dark grey edge: the light line shows on dark images, the edge on light ones.
BOX_RGB = (200, 200, 200)
BOX_EDGE_RGB = (40, 40, 40)
# The 3D pictures of many people: at most this many front/side pairs side by side.
PAIRS_PER_ROW = 2
# ... and at most this many people in one picture (the first ones; 4 rows, about 1.6 s to draw):
# the figure grows with every person, and 300 took minutes and 1.5 GB.
MAX_PEOPLE_3D = 8
# Fixed-point bits of OpenCV's drawing coordinates: joints are drawn at sub-pixel positions.
_SHIFT_BITS = 4


def side(joint_indices) -> str:
  """'left', 'right' or 'centre': the side of a joint or bone (a bone touching a left joint is
  left, e.g. left hip - pelvis)."""
  names = [joints.MPII16[i] for i in np.atleast_1d(joint_indices)]
  if any(name.startswith('l_') for name in names):
    return 'left'
  if any(name.startswith('r_') for name in names):
    return 'right'
  return 'centre'


def line_width(image_shape) -> int:
  """The bone thickness in pixels for an image of (H, W, ...): about 1/250 of its longer side."""
  return max(2, round(max(image_shape[:2]) / 250))


def marker_radius(image_shape) -> int:
  """The radius in pixels of the joint discs and rings for an image of (H, W, ...)."""
  return line_width(image_shape) + 2


def draw_2d(
  image: np.ndarray,
  joints_2d: np.ndarray,
  scores: np.ndarray,
  min_score: float = MIN_CONFIDENT_SCORE,
) -> np.ndarray:
  """The skeleton drawn over a copy of the image.

  Args:
    image: (H, W, 3) uint8 RGB.
    joints_2d: (16, 2) MPII-16 joints in image pixels, (0, 0) the centre of the top-left pixel.
    scores: (16,) per-joint confidences; joints below `min_score` are drawn as rings and their
      bones at half width.
  Returns:
    (H, W, 3) uint8 RGB: the image with bones (lines) and joints (discs) drawn on it; pixels
    farther than marker_radius + line_width / 2 + 2 (anti-aliasing) from every bone and joint
    are unchanged.
  """
  canvas = np.array(image, dtype=np.uint8, copy=True)
  width = line_width(canvas.shape)
  radius = marker_radius(canvas.shape)
  confident = np.asarray(scores) >= min_score
  points = [
    tuple(int(v) for v in np.round(p * (1 << _SHIFT_BITS)))
    for p in np.asarray(joints_2d, np.float64)
  ]
  for parent, child in joints.BONES:
    bone_width = width if confident[parent] and confident[child] else max(1, width // 2)
    cv2.line(
      canvas,
      points[parent],
      points[child],
      SIDE_RGB[side((parent, child))],
      bone_width,
      cv2.LINE_AA,
      _SHIFT_BITS,
    )
  for index, point in enumerate(points):
    fill = cv2.FILLED if confident[index] else max(1, width // 2)
    cv2.circle(
      canvas, point, radius << _SHIFT_BITS, SIDE_RGB[side(index)], fill, cv2.LINE_AA, _SHIFT_BITS
    )
  return canvas


# The two orthographic views of plot_3d: (title, horizontal axis, its label). The vertical axis is
# always up (-y); the camera looks along +z.
_VIEWS = (
  ('front (as the camera sees it)', 0, 'x, right (mm)'),
  ('side (camera on the left)', 2, 'z, away from the camera (mm)'),
)


def draw_people(image: np.ndarray, people) -> np.ndarray:
  """Every person's box outline (thin, light grey on a dark edge, so that it shows on any
  image; none for a whole-image person) and skeleton (`draw_2d`) over a copy of the image.

  Args:
    image: (H, W, 3) uint8 RGB.
    people: records with 'box' ((x, y, w, h) or None), 'joints_2d' (16, 2) and 'scores' (16,),
      as records.person_record writes them.
  Returns:
    (H, W, 3) uint8 RGB.
  """
  canvas = np.array(image, dtype=np.uint8, copy=True)
  for person in people:  # boxes first: no outline crosses a skeleton drawn over it
    if person['box'] is not None:
      x, y, w, h = person['box']
      # Box edges lie half a pixel before the centres of their first and after their last pixels.
      corners = [
        tuple(int(v) for v in np.round(np.array(p) * (1 << _SHIFT_BITS)))
        for p in ((x - 0.5, y - 0.5), (x + w - 0.5, y + h - 0.5))
      ]
      cv2.rectangle(canvas, *corners, BOX_EDGE_RGB, 3, cv2.LINE_AA, _SHIFT_BITS)
      cv2.rectangle(canvas, *corners, BOX_RGB, 1, cv2.LINE_AA, _SHIFT_BITS)
  for person in people:
    canvas = draw_2d(canvas, np.asarray(person['joints_2d']), np.asarray(person['scores']))
  return canvas


def _plot_views(fig, pose: np.ndarray, first_panel: int, rows: int, columns: int) -> list:
  """The front and side views of one (16, 3) pose in panels first_panel, first_panel + 1 of a
  rows x columns grid, on one equal mm scale; returns the two axes."""
  # Both views share one half-range, so a millimetre is equally long along every axis.
  centre = (pose.max(0) + pose.min(0)) / 2
  half_range = max((pose.max(0) - pose.min(0)).max() / 2 * 1.1, 100.0)
  axes = []
  for panel, (view_title, axis, label) in enumerate(_VIEWS):
    ax = fig.add_subplot(rows, columns, first_panel + panel)
    for side_name in SIDE_RGB:
      ax.plot([], [], color=np.array(SIDE_RGB[side_name]) / 255, label=side_name)
    for bone in joints.BONES:
      ax.plot(
        pose[bone, axis],
        -pose[bone, 1],
        color=np.array(SIDE_RGB[side(bone)]) / 255,
        linewidth=3,
        solid_capstyle='round',
      )
    ax.scatter(pose[:, axis], -pose[:, 1], s=14, color='black', zorder=3)
    ax.set_xlim(centre[axis] - half_range, centre[axis] + half_range)
    ax.set_ylim(-centre[1] - half_range, -centre[1] + half_range)
    ax.set_aspect('equal')
    ax.grid(alpha=0.3)
    ax.set_title(view_title)
    ax.set_xlabel(label)
    ax.set_ylabel('-y, up (mm)')
    axes.append(ax)
  return axes


def plot_3d(joints_3d: np.ndarray, path: str, title: str | None = None) -> None:
  """Writes a PNG of the 3D skeleton seen from the front and from the side, on equal mm scales.

  Args:
    joints_3d: (16, 3) MPII-16 joints in mm: x right, y down, z away from the camera (as
      predictor.Predictor.predict gives them).
    path: the PNG to write.
    title: a line above both views.
  """
  plot_3d_people([joints_3d], path, title=title)


def plot_3d_people(
  poses, path: str, labels=None, title: str | None = None, max_people: int | None = None
) -> None:
  """Writes a PNG of each person's 3D skeleton from the front and the side (`plot_3d`'s pair),
  the pairs in a grid of up to PAIRS_PER_ROW per row; each pair has its own equal mm scale
  (the poses are root-relative, each about its own pelvis). Of more than `max_people` poses the
  first `max_people` are drawn, and a line in the figure and a warning on stderr say so.

  Args:
    poses: P (16, 3) poses in mm, as `plot_3d` takes one.
    path: the PNG to write.
    labels: P lines, one above each pair (e.g. which box); None: none.
    title: a line above everything.
    max_people: the most pairs drawn; None: MAX_PEOPLE_3D.
  Raises:
    ImageError: the PNG cannot be written (no partial file is left).
  """
  poses = [np.asarray(pose, np.float64) for pose in poses]
  max_people = MAX_PEOPLE_3D if max_people is None else max_people
  if len(poses) > max_people:
    shown = f'the first {max_people} of {len(poses)} people'
    outputs.warn(f'{path}: the 3D figure shows {shown} (the JSON holds every person)')
    title = f'{title}\n{shown} shown' if title else f'{shown} shown'
    poses, labels = poses[:max_people], labels[:max_people] if labels else labels
  pairs_per_row = min(len(poses), PAIRS_PER_ROW)
  rows = -(-len(poses) // pairs_per_row)
  label_height = 0.3 if labels else 0.0
  title_height = 0.2 * title.count('\n') if title else 0.0
  fig = figure.Figure(
    figsize=(10 * pairs_per_row, (5.0 + label_height) * rows + 0.4 + title_height), dpi=100
  )
  backend_agg.FigureCanvasAgg(fig)
  for index, pose in enumerate(poses):
    axes = _plot_views(fig, pose, 2 * index + 1, rows, 2 * pairs_per_row)
    if index == 0:
      axes[0].legend(loc='upper left', fontsize='small')
    if labels:
      # The label heads the pair, over the front view; the side view's title gets an empty line
      # so that both view titles stay level.
      axes[0].set_title(f'{labels[index]}\n{axes[0].get_title()}')
      axes[1].set_title(f'\n{axes[1].get_title()}')
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  try:
    fig.savefig(path)
  except OSError as e:
    if os.path.exists(path):
      os.remove(path)
    raise image_io.ImageError(outputs.cannot_write(path, e)) from None

"""The joint-angle registry: every angle `hpe-analyze` reports, defined once, in degrees.

Angles come from MPII-16 joints (`joints.MPII16`). A straight limb, an upright trunk and a level
head are 0 degrees. Three kinds of angle, all computed frame by frame:
- between two body segments (knee, elbow, shoulder elevation): the 3D angle between them,
  unsigned, scale-free (it needs no camera and no unit);
- in the body's sagittal plane (hip and neck flexion): the angle between a segment and the trunk
  seen from the person's side, positive forward (flexion), negative backward (extension). The
  side axis is the hip line (hip) or the shoulder line (neck), the trunk is pelvis -> thorax;
- against the vertical (trunk flexion, lateral lean): the trunk's angle from the up direction seen
  from the side (positive forward) and from the front (positive towards the person's right). These
  need the up direction: `up.CAMERA_UP` (the camera held level) or `up.floor_up`.

From 2D joints only (a run without depth), each angle is the unsigned angle between the same two
directions as they appear in the image (up: the image's up): it equals the 3D angle only for a
movement parallel to the image plane.

A joint that was not measured (NaN: below the confidence threshold) makes every angle that uses
it NaN in that frame: gaps are never filled.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hpe_jax import joints


@dataclasses.dataclass(frozen=True)
class Angle:
  """One reported angle.

  Attributes:
    name: the column name, e.g. 'knee_flexion_left'.
    group: the plot panel it shares with its other side ('knee', 'trunk', ...).
    segment: (from, to) MPII-16 joint names: the moving segment.
    reference: (from, to) joint names of the segment it is measured against, or 'up' (the
      vertical).
    plane: None: the 3D angle between segment and reference; 'sagittal': seen from the side,
      positive forward; 'frontal': seen from the front, positive towards the person's right.
    side_axis: (right, left) joint names whose line is the body's side axis (for a plane).
    definition: what it measures, for docs/movement_analysis.md and the report.
  """

  name: str
  group: str
  segment: tuple[str, str]
  reference: tuple[str, str] | str
  plane: str | None
  side_axis: tuple[str, str] | None
  definition: str

  @property
  def uses_up(self) -> bool:
    return self.reference == 'up'

  @property
  def joint_names(self) -> frozenset[str]:
    names = {*self.segment, *(self.side_axis or ())}
    if not self.uses_up:
      names |= set(self.reference)
    return frozenset(names)


_TRUNK = ('pelvis', 'thorax')
_TRUNK_DOWN = ('thorax', 'pelvis')
_HIPS = ('r_hip', 'l_hip')
_SHOULDERS = ('r_shoulder', 'l_shoulder')


def _sides(name, group, segment, reference, plane, side_axis, definition) -> tuple[Angle, ...]:
  """The left and right angle of a limb: `segment` and `reference` written with `{s}` for r/l."""

  def one(side: str, prefix: str) -> Angle:
    def named(pair):
      return tuple(j.format(s=prefix) for j in pair) if isinstance(pair, tuple) else pair

    return Angle(
      f'{name}_{side}', group, named(segment), named(reference), plane, side_axis, definition
    )

  return one('left', 'l'), one('right', 'r')


ANGLES: tuple[Angle, ...] = (
  *_sides(
    'knee_flexion',
    'knee',
    ('{s}_knee', '{s}_ankle'),
    ('{s}_hip', '{s}_knee'),
    None,
    None,
    'angle between thigh (hip->knee) and shin (knee->ankle); 0 = straight leg, 90 = shin at '
    'a right angle to the thigh',
  ),
  *_sides(
    'hip_flexion',
    'hip',
    ('{s}_hip', '{s}_knee'),
    _TRUNK_DOWN,
    'sagittal',
    _HIPS,
    'thigh (hip->knee) against the trunk (thorax->pelvis) seen from the side; 0 = thigh in '
    'line with the trunk, 90 = thigh forward at a right angle (sitting), negative = behind',
  ),
  *_sides(
    'elbow_flexion',
    'elbow',
    ('{s}_elbow', '{s}_wrist'),
    ('{s}_shoulder', '{s}_elbow'),
    None,
    None,
    'angle between upper arm (shoulder->elbow) and forearm (elbow->wrist); 0 = straight arm',
  ),
  *_sides(
    'shoulder_elevation',
    'shoulder',
    ('{s}_shoulder', '{s}_elbow'),
    _TRUNK_DOWN,
    None,
    None,
    'angle between upper arm (shoulder->elbow) and the trunk pointing down (thorax->pelvis), '
    'in any plane; 0 = arm hanging, 90 = arm horizontal, 180 = arm straight up',
  ),
  Angle(
    'trunk_flexion',
    'trunk',
    _TRUNK,
    'up',
    'sagittal',
    _HIPS,
    'trunk (pelvis->thorax) against the vertical seen from the side; 0 = upright, positive = '
    'leaning forward, negative = backward',
  ),
  Angle(
    'trunk_lateral_lean',
    'trunk',
    _TRUNK,
    'up',
    'frontal',
    _HIPS,
    'trunk (pelvis->thorax) against the vertical seen from the front; 0 = upright, positive = '
    "leaning towards the person's right, negative = left",
  ),
  Angle(
    'neck_flexion',
    'neck',
    ('upper_neck', 'head_top'),
    _TRUNK,
    'sagittal',
    _SHOULDERS,
    'head (upper neck->head top) against the trunk (pelvis->thorax) seen from the side; 0 = '
    'head in line with the trunk, positive = bent forward (chin to chest), negative = back',
  ),
)
BY_NAME = {angle.name: angle for angle in ANGLES}
NAMES = tuple(BY_NAME)
# The plot panels, in registry order: each joint's left and right angles share one.
GROUPS = tuple(dict.fromkeys(angle.group for angle in ANGLES))


class UnknownAngleError(KeyError):
  pass


def lookup(name: str) -> Angle:
  """The registry's angle `name`.

  Raises:
    UnknownAngleError: no such angle; the message lists them.
  """
  if name not in BY_NAME:
    raise UnknownAngleError(f'no angle {name!r}: the angles are {", ".join(NAMES)}')
  return BY_NAME[name]


def _index(name: str) -> int:
  return joints.MPII16.index(name)


def _vector(points: np.ndarray, pair: tuple[str, str]) -> np.ndarray:
  return points[..., _index(pair[1]), :] - points[..., _index(pair[0]), :]


def _unit(v: np.ndarray) -> np.ndarray:
  with np.errstate(invalid='ignore', divide='ignore'):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.sum(a * b, axis=-1)


def _between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Unsigned angle between vectors (..., D), degrees; atan2 keeps it exact near 0 and 180."""
  if a.shape[-1] == 2:
    cross = np.abs(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0])
  else:
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
  return np.degrees(np.arctan2(cross, _dot(a, b)))


def _in_plane(
  segment: np.ndarray, reference: np.ndarray, body_up: np.ndarray, left: np.ndarray, plane: str
) -> np.ndarray:
  """Signed angle of `segment` from `reference` in the body's sagittal or frontal plane, degrees.

  body_up is the frame's up (the trunk or the vertical), left the body's side axis; forward =
  left x up (a right-handed frame). Sagittal: positive towards forward; frontal: towards the
  person's right. reference is +-body_up.
  """
  up = _unit(body_up)
  left = _unit(left - _dot(left, up)[..., None] * up)
  positive = np.cross(left, up) if plane == 'sagittal' else -left
  return np.degrees(np.arctan2(_dot(segment, positive), _dot(segment, _unit(reference))))


def compute(points: np.ndarray, up: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Every registry angle of every frame.

  Args:
    points: (T, 16, 3) MPII-16 joints in any right-handed frame (e.g. the camera's: x right, y
      down, z forward), any unit; or (T, 16, 2) image pixels (x right, y down) for the 2D
      angles. NaN where a joint was not measured.
    up: (3,) the up direction in the points' frame, for the angles against the vertical (unused
      with 2D points: the image's up).

  Returns:
    name -> (T,) float64 degrees, NaN where a joint it needs is NaN.
  """
  points = np.asarray(points, np.float64)
  two_d = points.shape[-1] == 2
  if two_d:
    up = np.array([0.0, -1.0])
  elif up is None:
    raise ValueError('3D angles against the vertical need the up direction')
  up = np.broadcast_to(np.asarray(up, np.float64), points.shape[:-2] + (points.shape[-1],))
  out = {}
  for angle in ANGLES:
    segment = _vector(points, angle.segment)
    reference = up if angle.uses_up else _vector(points, angle.reference)
    if two_d or angle.plane is None:
      out[angle.name] = _between(segment, reference)
      continue
    body_up = up if angle.uses_up else _vector(points, _TRUNK)
    left = _vector(points, angle.side_axis)
    out[angle.name] = _in_plane(segment, reference, body_up, left, angle.plane)
  return out

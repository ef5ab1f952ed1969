"""Motion files of one person's track: TRC and C3D markers (biomechanics), BVH animation.

Every writer takes the track as `names` (joints.MPII16 or joints.H36M17; TRC and C3D take any
names), `points` (T, J, 3) in mm in a y-up frame (x the camera's right, y up, z towards the camera)
with NaN where a joint was not measured, and the frame rate. TRC and C3D keep the gaps as their
formats' missing values; a BVH needs a pose in every frame and holds rotations over gaps.

BVH design. The skeleton is joints.MPII16_PARENTS or H36M17_PARENTS, rooted at the pelvis (channels
Xposition Yposition Zposition and three rotations); every other joint has three rotations, leaves
an End Site. Lengths are in mm. OFFSETs are the track's median bone lengths (over frames where both
ends are measured) along a T-pose: the person faces +z with the left side at +x (so someone upright
and facing the camera is at rest), spine, neck and head up (+y), legs down (-y), hips, shoulders
and arms sideways (+x left, -x right).

One rotation cannot point all bones of a joint along their observed directions when the angles
between them vary (pelvis: hips and spine; thorax: neck and shoulders). As in the CMU motion
capture skeletons, such a joint gets a zero-OFFSET branch joint per child, `<joint>_to_<child>`:
the joint's own rotation is its body frame (x from its right to its left child, y along the
incoming bone, or the spine at the root, made orthogonal to x), and each branch turns its bone
onto the observed direction. Every bone then points exactly where it was seen: forward kinematics
of the file gives the joints rebuilt from the observed bone directions, the median lengths and the
pelvis, to the rounding of the written numbers (FK_TOLERANCE_MM; `write_bvh` measures it).

A bone's rotation relative to its parent is the shortest arc from its rest direction (no twist
about the bone). Each joint's Euler order puts its bone's rest axis in the middle, so gimbal lock
needs a bone turned about 180 degrees from rest; the root's order (heading about y first) locks
only with the body lying on its side. Angles are unwrapped over time (no 360 degree jumps). Where
a joint that a rotation needs is missing, that rotation, relative to the parent, is the previous
frame's that had it (before the first, the first such frame's), and the root position likewise.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings

import c3d
import numpy as np

from hpe_jax import errors
from hpe_jax import joints

# How far forward kinematics of a written BVH may be from the length-normalised joints: the
# rounding of 0.001 mm positions and 0.0001 degree angles, along chains of up to 7 rotations.
FK_TOLERANCE_MM = 0.05
_POSITION_DECIMALS = 3
_ANGLE_DECIMALS = 4
_POSITION_FORMAT = f'%.{_POSITION_DECIMALS}f'
_ANGLE_FORMAT = f'%.{_ANGLE_DECIMALS}f'
_PARENTS = {joints.MPII16: joints.MPII16_PARENTS, joints.H36M17: joints.H36M17_PARENTS}
# BVH Euler orders (intrinsic: the CHANNELS order) by the axis a joint's bone lies along at rest;
# the root turns about y (heading) first, then z (roll), then x (pitch: squats, push-ups).
_ORDERS = {'x': 'ZXY', 'y': 'ZYX'}
_ROOT_ORDER = 'YZX'


class MotionFileError(errors.HpeError, ValueError):
  """A motion file cannot be written from this track, or not at this path."""


def _track(names, points) -> np.ndarray:
  """points as float64 (T, J, 3) with NaN for every joint not measured in all three coordinates."""
  points = np.array(points, np.float64)
  if points.ndim != 3 or points.shape[2] != 3 or points.shape[0] == 0:
    raise MotionFileError(f'points must be (frames >= 1, joints, 3), got shape {points.shape}')
  if len(names) != points.shape[1]:
    raise MotionFileError(f'points have {points.shape[1]} joints but {len(names)} names')
  points[~np.isfinite(points).all(axis=2)] = np.nan
  return points


def _fps(fps) -> float:
  if not np.isfinite(fps) or fps <= 0:
    raise MotionFileError(f'fps must be a positive number, got {fps}')
  return float(fps)


def _write(path, data: str | bytes) -> None:
  try:
    with open(path, 'wb' if isinstance(data, bytes) else 'w') as f:
      f.write(data)
  except OSError as e:
    raise MotionFileError(f'cannot write {path}: {e.strerror}') from None


def write_trc(path, names, points, time_s, fps, frame_numbers=None) -> None:
  """Writes an OpenSim marker file (.trc): one marker per joint, in mm.

  The layout is OpenSim's TRCFileAdapter's: tab-separated, header lines PathFileType 4 (X/Y/Z),
  the DataRate ... OrigNumFrames keys and values, marker names, X1 Y1 Z1 ... labels and a blank
  line, then a row per frame: Frame#, Time and every coordinate followed by a tab. A joint not
  measured in a frame has three empty cells, which OpenSim reads as a missing marker (NaN).

  Args:
    time_s: (T,) seconds of each frame (the track may start late).
    frame_numbers: (T,) ints for the Frame# column (e.g. the video's); default 1..T.
  """
  points = _track(names, points)
  fps = _fps(fps)
  num_frames = len(points)
  time_s = np.asarray(time_s, np.float64)
  frame_numbers = np.arange(1, num_frames + 1) if frame_numbers is None else frame_numbers
  frame_numbers = np.asarray(frame_numbers)
  if time_s.shape != (num_frames,) or frame_numbers.shape != (num_frames,):
    raise MotionFileError(
      f'time_s and frame_numbers must be ({num_frames},), got {time_s.shape} and '
      f'{frame_numbers.shape}'
    )
  if not np.isfinite(time_s).all():
    raise MotionFileError('time_s must be finite: a TRC row needs its time')
  rate = f'{fps:.10g}'
  header = [
    f'PathFileType\t4\t(X/Y/Z)\t{os.path.basename(path)}',
    'DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\t'
    'OrigNumFrames',
    f'{rate}\t{rate}\t{num_frames}\t{len(names)}\tmm\t{rate}\t{frame_numbers[0]}\t{num_frames}',
    'Frame#\tTime\t' + ''.join(f'{name}\t\t\t' for name in names),
    '\t\t' + ''.join(f'X{i}\tY{i}\tZ{i}\t' for i in range(1, len(names) + 1)),
    '',
    '',
  ]
  rows = np.concatenate(
    [frame_numbers[:, None], time_s[:, None], points.reshape(num_frames, -1)], axis=1
  )
  row = '%d\t%.6f\t' + f'{_POSITION_FORMAT}\t' * (rows.shape[1] - 2) + '\n'
  # One format for the whole table; 'nan' occurs only where a joint is missing: empty cells.
  body = ((row * num_frames) % tuple(rows.ravel().tolist())).replace('nan', '')
  _write(path, '\n'.join(header) + body)


def read_trc(path) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
  """Reads a .trc marker file: (marker names, (T, M, 3) points with NaN for missing, (T,) time)."""
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise MotionFileError(f'cannot read {path}: {e.strerror}') from None
  if len(lines) < 5 or not lines[0].startswith('PathFileType'):
    raise MotionFileError(f'{path} is not a TRC file (no PathFileType header)')
  names = tuple(cell for cell in lines[3].split('\t')[2:] if cell)
  rows = [line.split('\t') for line in lines[5:] if line.strip()]
  width = 2 + 3 * len(names)
  values = np.array(
    [[float(c) if c else np.nan for c in (r + [''] * width)[:width]] for r in rows], np.float64
  ).reshape(len(rows), width)
  return names, values[:, 2:].reshape(len(rows), len(names), 3), values[:, 1]


def write_c3d(path, names, points, fps, first_frame: int = 1) -> None:
  """Writes a C3D file: point labels = joint names, float coordinates in mm, rate = fps.

  A joint not measured in a frame is an invalid point (residual -1, coordinates 0); measured
  points have residual 0, C3D's mark of computed (not camera-tracked) data. POINT:X_SCREEN and
  Y_SCREEN say +X right and +Y up, this module's y-up frame. `first_frame` is the track's first
  video frame (1-based), C3D's TRIAL:ACTUAL_START_FIELD.
  """
  points = _track(names, points)
  missing = np.isnan(points[..., 0])
  # (x, y, z, residual word) per point, as C3D's float format stores it.
  raw = np.zeros(points.shape[:2] + (4,), np.float32)
  raw[..., :3] = np.where(missing[..., None], 0.0, points)
  raw[missing, 3] = -1.0
  writer = c3d.Writer(point_rate=_fps(fps), point_units='mm')
  writer.set_point_labels(list(names))
  writer.set_screen_axis('+X', '+Y')
  writer.set_start_frame(int(first_frame))
  frames = np.zeros(points.shape[:2] + (5,), np.float32)
  frames[..., :4] = raw
  no_analog = np.zeros((0, 0), np.float32)
  writer.add_frames([(frame, no_analog) for frame in frames])
  buffer = io.BytesIO()
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', 'No analog data found in file')
    writer.write(buffer)
  # c3d 0.6 writes frames through a reused buffer that leaves an invalid point with the
  # coordinates of its last valid frame: the point data (from the header's data block on, no
  # analog channels) is written again from `raw`, with zeros there.
  data = bytearray(buffer.getvalue())
  start = (int(writer.header.data_block) - 1) * 512
  data[start : start + raw.nbytes] = raw.tobytes()
  _write(path, bytes(data))


@dataclasses.dataclass(frozen=True)
class _Node:
  """A BVH joint. kind: 'root' and 'frame' joints turn to their body frame (module docstring),
  'bone' joints aim the bone into track joint `aim`, 'leaf' joints follow their parent."""

  name: str
  parent: int  # node index, -1 for the root
  joint: int  # the track joint at this node, -1 for a branch
  kind: str
  rest: tuple[float, float, float]  # rest direction of its bone (leaf: incoming; frame: up)
  aim: int = -1
  frame: tuple[int, int, int, int] = (-1, -1, -1, -1)  # track joints: right, left, up from, up to

  @property
  def order(self) -> str:
    return _ROOT_ORDER if self.kind == 'root' else _ORDERS['xyz'[int(np.argmax(np.abs(self.rest)))]]


def _rest_direction(name: str) -> tuple[float, float, float]:
  """The T-pose direction of the bone into joint `name` (module docstring)."""
  side, base = (name[0], name[2:]) if name[:2] in ('l_', 'r_') else ('', name)
  if base in ('hip', 'shoulder', 'elbow', 'wrist'):
    return (1.0 if side == 'l' else -1.0, 0.0, 0.0)
  return (0.0, -1.0 if base in ('knee', 'ankle') else 1.0, 0.0)


def _hierarchy(names: tuple[str, ...], parents: list[int]) -> list[_Node]:
  """The BVH joints of a joint set, depth first from the root."""
  nodes = []

  def add(j: int, parent: int):
    kids = [k for k in range(len(names)) if parents[k] == j]
    if len(kids) > 1:  # a body frame from its left/right pair and a branch per child
      right = next(k for k in kids if names[k].startswith('r_'))
      left = names.index('l_' + names[right][2:])
      centre = next(k for k in kids if k not in (right, left))
      frame = (right, left) + ((j, centre) if parent < 0 else (parents[j], j))
      kind = 'root' if parent < 0 else 'frame'
      nodes.append(_Node(names[j], parent, j, kind, (0.0, 1.0, 0.0), frame=frame))
      index = len(nodes) - 1
      for k in kids:
        rest = _rest_direction(names[k])
        nodes.append(_Node(f'{names[j]}_to_{names[k]}', index, -1, 'bone', rest, aim=k))
        add(k, len(nodes) - 1)
    elif kids:
      nodes.append(_Node(names[j], parent, j, 'bone', _rest_direction(names[kids[0]]), kids[0]))
      add(kids[0], len(nodes) - 1)
    else:
      nodes.append(_Node(names[j], parent, j, 'leaf', _rest_direction(names[j])))

  add(parents.index(-1), -1)
  return nodes


def _unit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """v / |v| over the last axis and where that is defined (|v| > 1e-6)."""
  norm = np.linalg.norm(v, axis=-1, keepdims=True)
  ok = norm[..., 0] > 1e-6
  return v / np.where(ok[..., None], norm, 1.0), ok


def _arc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(T, 3, 3): the shortest rotations taking the unit vector a (3,) to unit vectors b (T, 3)."""
  # Near b = -a the arc's axis is undefined: turn half a circle about an axis normal to a first.
  flip = b @ a < -1.0 + 1e-8
  normal = _unit(np.cross(a, np.eye(3)[np.argmin(np.abs(a))]))[0]
  half = 2.0 * np.outer(normal, normal) - np.eye(3)
  start = np.where(flip[:, None], -a, a)
  v = np.cross(start, b)
  k = np.zeros(b.shape + (3,))
  k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
  k -= k.transpose(0, 2, 1)
  cos = np.einsum('ti,ti->t', start, b)
  arc = np.eye(3) + k + k @ k / (1.0 + cos)[:, None, None]
  return np.where(flip[:, None, None], arc @ half, arc)


def _axis_rotations(axis: int, degrees: np.ndarray) -> np.ndarray:
  """(T, 3, 3) right-handed rotations about one axis."""
  c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
  i, j = ((1, 2), (2, 0), (0, 1))[axis]
  r = np.zeros(degrees.shape + (3, 3))
  r[:, axis, axis] = 1.0
  r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
  return r


def _euler(r: np.ndarray, order: str) -> np.ndarray:
  """(T, 3) degrees (a, b, c) with r = R_order[0](a) R_order[1](b) R_order[2](c)."""
  i, j, k = ('XYZ'.index(o) for o in order)
  s = 1.0 if (j - i) % 3 == 1 else -1.0
  cos_b = np.hypot(r[:, i, i], r[:, i, j])
  b = np.arctan2(s * r[:, i, k], cos_b)
  locked = cos_b < 1e-9  # b = +-90 degrees: only a + c or a - c is defined; c = 0
  a = np.where(
    locked, np.arctan2(s * r[:, k, j], r[:, j, j]), np.arctan2(-s * r[:, j, k], r[:, k, k])
  )
  c = np.where(locked, 0.0, np.arctan2(-s * r[:, i, j], r[:, i, i]))
  return np.rad2deg(np.stack([a, b, c], axis=1))


def _from_euler(degrees: np.ndarray, order: str) -> np.ndarray:
  rotations = [_axis_rotations('XYZ'.index(o), degrees[:, n]) for n, o in enumerate(order)]
  return rotations[0] @ rotations[1] @ rotations[2]


def _hold(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
  """values (T, ...) with each frame where not ok taken from the last ok frame (before the first:
  the first ok frame); the identity if no frame is ok."""
  if not ok.any():
    return np.broadcast_to(np.eye(3), values.shape).copy()
  last = np.maximum.accumulate(np.where(ok, np.arange(len(ok)), -1))
  return values[np.where(last < 0, np.argmax(ok), last)]


def write_bvh(path, names, points, fps) -> dict:
  """Writes a BVH animation of the track (lengths in mm: import into Blender with scale 0.001).

  The skeleton, rest pose and rotations are the module docstring's. Returns {'frames': T,
  'held_frames': frames where a missing joint held a rotation or the root position,
  'max_error_mm': the largest distance, over the frames with every joint measured, between forward
  kinematics of the written numbers and the joints rebuilt from the observed bone directions, the
  median bone lengths and the pelvis (at most FK_TOLERANCE_MM)}.
  """
  points = _track(names, points)
  fps = _fps(fps)
  names = tuple(names)
  if names not in _PARENTS:
    raise MotionFileError('a BVH needs the MPII-16 or Human3.6M-17 joints, got ' + ', '.join(names))
  measured = ~np.isnan(points[..., 0])
  complete = measured.all(axis=1)
  if not complete.any():
    raise MotionFileError(
      f'no frame of the track has all {len(names)} joints measured: a BVH needs one for its bone '
      'lengths'
    )
  parents = [names.index(p) if p else -1 for p in _PARENTS[names]]
  root = parents.index(-1)
  nodes = _hierarchy(names, parents)
  # The bone into each joint (zero at the root): observed direction and median length.
  ends = [max(p, 0) for p in parents]
  bones = points - points[:, ends]
  directions, defined = _unit(bones.transpose(1, 0, 2))
  both = measured & measured[:, ends]
  lengths = [np.median(np.linalg.norm(bones[both[:, j], j], axis=1)) for j in range(len(names))]
  offsets = [
    np.zeros(3)
    if node.joint in (-1, root)
    else np.round(
      lengths[node.joint] * np.array(_rest_direction(names[node.joint])), _POSITION_DECIMALS
    )
    for node in nodes
  ]
  local, held = _local_rotations(nodes, points, measured, directions, defined)
  position = _hold(points[:, root], measured[:, root])
  held |= ~measured[:, root]
  angles = [np.unwrap(_euler(r, node.order), period=360.0, axis=0) for r, node in zip(local, nodes)]

  # Forward kinematics of the numbers as written, against the length-normalised joints.
  fk_world, fk_position, rebuilt = [], [], {root: points[:, root]}
  for node, degrees, offset in zip(nodes, angles, offsets):
    rotation = _from_euler(np.round(degrees, _ANGLE_DECIMALS), node.order)
    if node.parent < 0:
      fk_world.append(rotation)
      fk_position.append(np.round(position, _POSITION_DECIMALS))
    else:
      fk_world.append(fk_world[node.parent] @ rotation)
      fk_position.append(fk_position[node.parent] + fk_world[node.parent] @ offset)
    if node.joint not in (-1, root):
      rebuilt[node.joint] = (
        rebuilt[parents[node.joint]] + lengths[node.joint] * directions[node.joint]
      )
  error = max(
    np.linalg.norm((fk_position[n] - rebuilt[node.joint])[complete], axis=1).max()
    for n, node in enumerate(nodes)
    if node.joint >= 0
  )

  motion = np.concatenate([position] + angles, axis=1)
  row = ' '.join([_POSITION_FORMAT] * 3 + [_ANGLE_FORMAT] * (motion.shape[1] - 3)) + '\n'
  text = _hierarchy_text(nodes, offsets) + [
    'MOTION',
    f'Frames: {len(points)}',
    f'Frame Time: {1.0 / fps:.8f}',
    (row * len(points)) % tuple(motion.ravel().tolist()),
  ]
  _write(path, '\n'.join(text))
  return {'frames': len(points), 'held_frames': int(held.sum()), 'max_error_mm': float(error)}


def _local_rotations(nodes, points, measured, directions, defined):
  """(T, 3, 3) rotation of every node relative to its parent (the root's: to the world), parents
  first, each held where it cannot be measured; and the (T,) frames where one was held."""
  world, local, held = [], [], np.zeros(len(points), bool)
  for node in nodes:
    parent = world[node.parent] if node.parent >= 0 else None
    if node.kind in ('root', 'frame'):
      right, left, up_from, up_to = node.frame
      x, ok_x = _unit(points[:, left] - points[:, right])
      up = _unit(points[:, up_to] - points[:, up_from])[0]
      y, ok_y = _unit(up - np.einsum('ti,ti->t', up, x)[:, None] * x)
      frame = np.stack([x, y, np.cross(x, y)], axis=2)
      ok = ok_x & ok_y & measured[:, [up_from, up_to]].all(axis=1)
      rotation = frame if parent is None else parent.transpose(0, 2, 1) @ frame
    elif node.kind == 'bone':
      rest = np.array(node.rest)
      ok = defined[node.aim]
      in_parent = np.einsum('tji,tj->ti', parent, directions[node.aim])
      rotation = _arc(rest, np.where(ok[:, None], in_parent, rest))
    else:
      ok = np.ones(len(points), bool)
      rotation = np.broadcast_to(np.eye(3), (len(points), 3, 3))
    held |= ~ok
    local.append(_hold(rotation, ok))
    world.append(local[-1] if parent is None else parent @ local[-1])
  return local, held


def _hierarchy_text(nodes: list[_Node], offsets: list[np.ndarray]) -> list[str]:
  """The HIERARCHY section's lines."""
  depths = []
  for node in nodes:
    depths.append(0 if node.parent < 0 else depths[node.parent] + 1)
  lines = ['HIERARCHY']
  for n, (node, offset, depth) in enumerate(zip(nodes, offsets, depths)):
    pad = '\t' * depth
    channels = [f'{axis}rotation' for axis in node.order]
    if node.parent < 0:
      channels = ['Xposition', 'Yposition', 'Zposition'] + channels
    lines += [
      f'{pad}{"ROOT" if node.parent < 0 else "JOINT"} {node.name}',
      pad + '{',
      f'{pad}\tOFFSET ' + ' '.join(_POSITION_FORMAT % v for v in offset),
      f'{pad}\tCHANNELS {len(channels)} ' + ' '.join(channels),
    ]
    if node.kind == 'leaf':  # a stub a quarter of the incoming bone long, along it
      end = ' '.join(_POSITION_FORMAT % v for v in 0.25 * offset)
      lines += [f'{pad}\tEnd Site', f'{pad}\t{{', f'{pad}\t\tOFFSET {end}', f'{pad}\t}}']
    # Close the blocks that end here, down to the next node's depth (depth first order).
    following = depths[n + 1] if n + 1 < len(nodes) else 0
    lines += ['\t' * d + '}' for d in range(depth, following - 1, -1)]
  return lines

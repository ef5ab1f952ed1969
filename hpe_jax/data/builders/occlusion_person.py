"""`occlusion_person`: the Occlusion Person dataset (Zhang et al., AdaFuse, IJCV 2021).

A synthetic multi-view set rendered with UnrealCV: people in furnished scenes, with 3D joints
known exactly and a per-joint flag saying whether the joint is occluded in the view. The release
(github.com/zhezh/occlusion_person) holds two pickles, `unrealcv_train.pkl` and
`unrealcv_validation.pkl`, each a list of dicts, one per (frame, camera):

  image          path of the rendered image (this builder: relative to manual_dir)
  joints_2d      (15, 2) pixels; joints_3d (15, 3) camera frame; joints_gt (15, 3) world frame
  joints_vis     (15,) or (15, k): annotated (1 for every joint of a synthetic set)
  joints_vis_2d  (15,) or (15, k): 1 = not occluded in this view
  center, scale (x 200 px), box: a person box; subject, action, subaction, camera_id
  camera         {R, T, fx, fy, cx, cy, k, p}

The record layout follows microsoft/multiview-human-pose-estimation-pytorch, whose Human3.6M
joint names (root, rhip, ..., belly, neck, nose, head, ...) Occlusion Person reuses without nose
and head; hence belly = Human3.6M spine and neck = Human3.6M thorax (the base of the neck).

Conventions, and what is NOT verified against the real release (none is available here):
- Pixels: joints_2d are taken to be in the frame of the pinhole principal point (cx, cy), read as
  0-based. The reader checks that joints_2d is the pinhole projection of joints_3d through
  (fx, fy, cx, cy) and counts people off by more than `PROJECTION_TOLERANCE_PX` in the build
  report; this fixes the camera convention (x right, y down, z forward; no distortion) but
  cannot tell whether UnrealCV's cx is W / 2 (a half-pixel offset from 0-based centres) or
  (W - 1) / 2. Lens distortion (k, p) is ignored: renders are distortion-free.
- Units: the release is believed to be in mm. Projection is scale-invariant, so the reader
  decides from the median thigh (hip-knee) length of each file: 300-600 => mm, 0.3-0.6 =>
  metres (converted to mm and counted in the report), anything else is an AnnotationError.
- Image paths: taken as relative to manual_dir (the release unzips to `images/...`, so the pickle
  names are expected to start with that folder or to be resolved by placing the pickles beside
  it: see MANUAL_DOWNLOAD_INSTRUCTIONS).
- Box: the person box is `base.box_from_joints` (1.25 x the joint extent), not the release's
  center / scale, whose padding is undocumented; every joint is annotated in this set so the box
  is always defined, and the stored crop's 1.5x context covers the head the joint set lacks.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data.builders import base

SPLITS = {'train': 'unrealcv_train.pkl', 'validation': 'unrealcv_validation.pkl'}
NUM_SOURCE_JOINTS = len(joints.OCCLUSION_PERSON15)
PROJECTION_TOLERANCE_PX = 1.0
# Median thigh length ranges that identify the unit of joints_3d (adult thighs are ~400-450 mm).
THIGH_RANGE_MM = (300.0, 600.0)
THIGH_RANGE_M = (0.3, 0.6)
_THIGHS = tuple(
  (joints.OCCLUSION_PERSON15.index(f'{s}_hip'), joints.OCCLUSION_PERSON15.index(f'{s}_knee'))
  for s in 'rl'
)

# MPII joints that are midpoints of two source joints (the thorax).
_DERIVED = np.array([len(s) == 2 for s in joints.MPII_FROM_OCCLUSION_PERSON.sources])

OFF_PROJECTION = 'joints_2d off the projection of joints_3d by > 1 px'
IN_METRES = 'joints_3d in metres (converted to mm)'
_REQUIRED = (
  'image',
  'joints_2d',
  'joints_3d',
  'joints_vis',
  'joints_vis_2d',
  'subject',
  'action',
  'camera_id',
  'camera',
)
_INTRINSICS = ('fx', 'fy', 'cx', 'cy')


def load_entries(path: str) -> list[dict]:
  """Unpickles a release file; AnnotationError if it cannot be read or is not a list of dicts."""
  try:
    with open(path, 'rb') as f:
      entries = pickle.load(f)
  except Exception as e:  # a truncated pickle raises EOFError, UnpicklingError, ValueError...
    raise base.AnnotationError(f'cannot read {path}: {type(e).__name__}: {e}') from e
  if not isinstance(entries, list):
    raise base.AnnotationError(f'{path}: expected a list of dicts, got {type(entries).__name__}')
  for i, entry in enumerate(entries):
    if not isinstance(entry, dict):
      raise base.AnnotationError(f'{path}: entry {i} is a {type(entry).__name__}, not a dict')
  return entries


def _array(path: str, i: int, entry: dict, field: str, shape: tuple[int, ...]) -> np.ndarray:
  """entry[field] (present: read_split checks) as float32 of `shape`; a flag array (15, k)
  keeps its first column."""
  where = f'{path}: entry {i} field {field!r}'
  try:
    value = np.asarray(entry[field], np.float32)
  except (TypeError, ValueError) as e:
    raise base.AnnotationError(f'{where} is not numeric: {e}') from e
  if len(shape) == 1 and value.ndim == 2 and value.shape[0] == shape[0]:
    value = value[:, 0]  # multiview-pose style (15, 3) visibility: one flag repeated per axis
  if value.shape != shape:
    raise base.AnnotationError(f'{where} has shape {value.shape}, expected {shape}')
  return value


def _intrinsics(path: str, i: int, entry: dict) -> np.ndarray:
  """(4,) fx, fy, cx, cy from entry['camera'] (scalars or 1-element arrays)."""
  camera = entry['camera']
  values = []
  for key in _INTRINSICS:
    if not isinstance(camera, dict) or key not in camera or np.size(camera[key]) != 1:
      raise base.AnnotationError(
        f'{path}: entry {i} field camera[{key!r}] is missing or not a scalar'
      )
    values.append(float(np.ravel(camera[key])[0]))
  return np.asarray(values, np.float32)


def mm_per_unit(joints_3d: np.ndarray, annotated: np.ndarray, path: str) -> float:
  """1 if joints_3d (N, 15, 3) are in mm, 1000 if in metres, judged by the median length of the
  thighs whose ends are both annotated (annotated (N, 15))."""
  thighs = np.concatenate(
    [
      np.linalg.norm(joints_3d[:, a] - joints_3d[:, b], axis=-1)[
        (annotated[:, a] > 0) & (annotated[:, b] > 0)
      ]
      for a, b in _THIGHS
    ]
  )
  if not thighs.size:
    raise base.AnnotationError(f'{path}: no annotated thigh to tell the unit of joints_3d')
  median = float(np.median(thighs))
  if THIGH_RANGE_MM[0] <= median <= THIGH_RANGE_MM[1]:
    return 1.0
  if THIGH_RANGE_M[0] <= median <= THIGH_RANGE_M[1]:
    return 1000.0
  raise base.AnnotationError(
    f'{path}: joints_3d median thigh length {median:.4g} fits neither mm {THIGH_RANGE_MM} '
    f'nor metres {THIGH_RANGE_M}'
  )


def read_split(path: str) -> tuple[list[base.Person], dict[str, int]]:
  """Reads one release pickle.

  Args:
    path: unrealcv_train.pkl or unrealcv_validation.pkl.
  Returns:
    (people, counts): one person per entry with MPII-16 joints_2d (16, 2) px, joints_3d (16, 3)
    camera mm, Human3.6M-17 eval_joints_3d (17, 3) camera mm, masks (1 = annotated) and
    visibility (1 = not occluded) for both, intrinsics (4,) px; counts {reason: people} for the
    build report (OFF_PROJECTION, IN_METRES).
  Raises:
    AnnotationError: unreadable pickle, not a list of dicts, a missing or malformed field (the
      message names the file, the entry index and the field), or joints_3d of unknown unit.
  """
  entries = load_entries(path)
  count = len(entries)
  xy = np.zeros((count, NUM_SOURCE_JOINTS, 2), np.float32)
  xyz = np.zeros((count, NUM_SOURCE_JOINTS, 3), np.float32)
  annotated = np.zeros((count, NUM_SOURCE_JOINTS), np.float32)
  visible = np.zeros((count, NUM_SOURCE_JOINTS), np.float32)
  intrinsics = np.zeros((count, 4), np.float32)
  for i, entry in enumerate(entries):
    for field in _REQUIRED:
      if field not in entry:
        raise base.AnnotationError(f'{path}: entry {i} field {field!r} is missing')
    xy[i] = _array(path, i, entry, 'joints_2d', (NUM_SOURCE_JOINTS, 2))
    xyz[i] = _array(path, i, entry, 'joints_3d', (NUM_SOURCE_JOINTS, 3))
    annotated[i] = _array(path, i, entry, 'joints_vis', (NUM_SOURCE_JOINTS,)) > 0
    visible[i] = _array(path, i, entry, 'joints_vis_2d', (NUM_SOURCE_JOINTS,)) > 0
    intrinsics[i] = _intrinsics(path, i, entry)
  counts = {OFF_PROJECTION: 0, IN_METRES: 0}
  if not count:
    return [], counts
  # The check runs before the unit conversion: the projection does not depend on the unit.
  with np.errstate(divide='ignore', invalid='ignore'):  # z = 0 gives NaN, counted as off
    error = np.linalg.norm(geometry.project(xyz, intrinsics) - xy, axis=-1)
  off = np.any((annotated > 0) & ~(error <= PROJECTION_TOLERANCE_PX), axis=-1)  # NaN counts
  counts[OFF_PROJECTION] = int(off.sum())
  scale = mm_per_unit(xyz, annotated, path)
  xyz *= scale
  counts[IN_METRES] = count if scale != 1 else 0

  visible *= annotated
  mpii_xy, mpii_mask = joints.MPII_FROM_OCCLUSION_PERSON(xy, annotated)
  mpii_visible = joints.MPII_FROM_OCCLUSION_PERSON(xy, visible)[1]
  mpii_xyz = joints.MPII_FROM_OCCLUSION_PERSON(xyz, annotated)[0]
  # A derived joint's 2D is the projection of its 3D midpoint, not the midpoint of the two
  # projections (they differ by perspective, ~0.1 px here): stored 2D and 3D must agree.
  derived = (mpii_mask > 0) & _DERIVED
  with np.errstate(divide='ignore', invalid='ignore'):  # masked joints are zeros: z = 0
    projected = geometry.project(mpii_xyz, intrinsics)
  mpii_xy = np.where(derived[..., None], projected, mpii_xy)
  h36m_xyz, h36m_mask = joints.H36M_FROM_OCCLUSION_PERSON(xyz, annotated)
  h36m_visible = joints.H36M_FROM_OCCLUSION_PERSON(xyz, visible)[1]
  # The fork scores every joint of every entry, annotated or not.
  fork_xyz, _ = joints.FORK_H36M_FROM_OCCLUSION_PERSON(xyz, np.ones_like(annotated))
  people = []
  for i, entry in enumerate(entries):
    center, side = base.box_from_joints(mpii_xy[i], mpii_mask[i])
    people.append(
      base.Person(
        image=str(entry['image']),
        person_index=0,
        joints_2d=mpii_xy[i],
        joints_mask=mpii_mask[i],
        joints_visible=mpii_visible[i],
        box_center=center,
        box_side=side,
        joints_3d=mpii_xyz[i],
        eval_joints_3d=h36m_xyz[i],
        eval_mask=h36m_mask[i],
        eval_visible=h36m_visible[i],
        intrinsics=intrinsics[i],
        fork_joints_3d=fork_xyz[i],
        subject=str(entry['subject']),
        action=str(entry['action']),
        camera=str(entry['camera_id']),
        frame=int(entry.get('image_id', i)),
      )
    )
  return people, counts


class OcclusionPerson(base.PoseDatasetBuilder):
  """Occlusion Person: synthetic multi-view renders with exact 3D joints and occlusion flags."""

  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {
    '1.1.0': 'distortion field (zeros here).',
    '1.2.0': "image_size (for the crop clamp) and fork_joints_3d (the study fork's labels) fields.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Get the Occlusion Person release (github.com/zhezh/occlusion_person: the annotation pickles and
the image archive) and arrange manual_dir so that the `image` path of every pickle entry is
relative to it:
  manual_dir/unrealcv_train.pkl
  manual_dir/unrealcv_validation.pkl
  manual_dir/<image of each entry>       (the release unpacks them under images/)
If the pickles name images relative to the images folder, put the pickles inside that folder.
"""
  DEFAULT_SPLITS = {'2d': 'train', '3d': 'train', 'eval': 'validation'}

  def read_annotations(self, manual_dir: str) -> dict[str, list[base.Person]]:
    splits = {}
    for split, name in SPLITS.items():
      splits[split], self.read_report[split] = read_split(os.path.join(manual_dir, name))
    return splits

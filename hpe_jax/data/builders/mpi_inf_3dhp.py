"""`mpi_inf_3dhp`: MPI-INF-3DHP (Mehta et al., 2017), multi-view studio videos with 3D labels.

Splits:
- `train`: S1-S8 x Seq1-2, one video per camera (cameras 0, 1, 2, 4, 5, 6, 7, 8 by default, the
  usual subset), every `frame_stride`-th frame. Labels from `annot.mat` (MATLAB v5, one cell per
  camera): annot2 (N, 56) = 28 joints x 2 pixels, annot3 (N, 84) and univ_annot3 (N, 84) = 28
  joints x 3 camera-frame mm. Intrinsics come from `camera.calibration`, whose training
  `intrinsic` matrices are in pixels.
- `test`: TS1-TS6 (`mpi_inf_3dhp_test_set/TS{n}/annot_data.mat`, MATLAB v7.3 = HDF5): annot2
  (N, 1, 17, 2) pixels, annot3 / univ_annot3 (N, 1, 17, 3) camera mm over the 17 test joints,
  valid_frame (N,), activity_annotation (N,) codes 1-7. Frames with valid_frame == 0 are kept
  (they still carry 2D labels) but get eval_mask 0 so that 3D metrics skip them, as the official
  evaluation does; `read_report` counts them. Intrinsics: `manual_dir/cameras_test.pkl` (mmpose's
  per-sequence calibration, {'TS1': {'f': (2, 1), 'c': (2, 1), ...}}) when present, else the
  published test cameras (`TEST_INTRINSICS`).

Conventions: 2D labels are annot2 as released (0-based pixels: they agree with the pinhole
projection of annot3 to ~2 px on the real frames, which a half-pixel shift would not disturb
measurably, so the release's own convention, 0-based as in its C++ tools, is kept); joints_3d
(MPII-16) is annot3 (camera frame, true scale: the depth targets need the real geometry);
eval_joints_3d (Human3.6M-17) is univ_annot3, the height-normalised skeleton the official 3DPCK
is computed on. Frames whose 2D labels lie more than `MAX_REPROJECTION_PX` from the projected
annot3 are kept and counted in `read_report`. There are no occlusion labels: joints_visible =
annotated. Video frames are named 'S1/Seq1/imageSequence/video_0.avi@000123' (0-based frame).
"""

from __future__ import annotations

import os
import pickle
import re

import cv2
import h5py
import numpy as np
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data.builders import base

# The 28 training joints, in annot2 / annot3 order.
MPI_INF_3DHP28 = (
    'spine3', 'spine4', 'spine2', 'spine', 'pelvis', 'neck', 'head', 'head_top', 'l_clavicle',
    'l_shoulder', 'l_elbow', 'l_wrist', 'l_hand', 'r_clavicle', 'r_shoulder', 'r_elbow',
    'r_wrist', 'r_hand', 'l_hip', 'l_knee', 'l_ankle', 'l_foot', 'l_toe', 'r_hip', 'r_knee',
    'r_ankle', 'r_foot', 'r_toe',
)
# The 17 test joints (test-set annot_data.mat order, also mmpose's 17-joint order): their indices
# among the 28 training joints.
TEST_JOINTS = (7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6)
MPI_INF_3DHP17 = tuple(MPI_INF_3DHP28[i] for i in TEST_JOINTS)
# 3DHP -> MPII: MPII's thorax is mid-shoulders (3DHP's neck sits ~30 mm above it); 3DHP's pelvis
# is exactly mid-hips on the real frames, as MPII's is.
MPII_FROM_3DHP = joints._by_name(MPI_INF_3DHP28, joints.MPII16, {  # pylint: disable=protected-access
    'thorax': ('l_shoulder', 'r_shoulder'), 'upper_neck': ('neck',),
})
# 3DHP -> Human3.6M-17 (evaluation). H36M's thorax is the neck base (3DHP neck), its head the top
# of the head (3DHP head_top; 3DHP 'head' is the head's centre); 3DHP spine lies about halfway from
# pelvis to neck, as H36M's does. 3DHP has no nose.
H36M_FROM_3DHP = joints._by_name(MPI_INF_3DHP28, joints.H36M17, {  # pylint: disable=protected-access
    'thorax': ('neck',), 'head': ('head_top',), 'nose': (),
})

DEFAULT_CAMERAS = (0, 1, 2, 4, 5, 6, 7, 8)
TRAIN_SEQUENCES = tuple((s, q) for s in range(1, 9) for q in (1, 2))
TEST_SEQUENCES = tuple(range(1, 7))
# The published test cameras (the test set's camera.calibration files: sensor-mm intrinsics
# converted to pixels): TS1-TS4 were filmed with one 2048 x 2048 studio camera, TS5-TS6 with one
# 1920 x 1080 outdoor camera. fx, fy, cx, cy in pixels.
TEST_INTRINSICS = {
    'studio': (7.32506 / 10 * 2048, 7.32506 / 10 * 2048,
               1024 - 0.0322884 / 10 * 2048, 1024 + 0.0929296 / 10 * 2048),
    'outdoor': (8.770747185 / 10 * 1920, 8.770747185 / 5.625 * 1080,
                960 - 0.104908645 / 10 * 1920, 540 + 0.104899704 / 5.625 * 1080),
}
TEST_CAMERA = {1: 'studio', 2: 'studio', 3: 'studio', 4: 'studio', 5: 'outdoor', 6: 'outdoor'}
# activity_annotation codes 1-7 (the test set's evaluation scripts).
ACTIVITIES = ('stand_walk', 'exercise', 'sit_on_chair', 'reach_crouch', 'on_floor', 'sports',
              'misc')
MAX_REPROJECTION_PX = 2.0
_INVALID = 'invalid frames (kept, excluded from 3D metrics)'
_OFF_PROJECTION = f'frames whose 2D labels are > {MAX_REPROJECTION_PX:g} px from projected 3D (kept)'
_VIDEO_FRAME = re.compile(r'^(.*\.avi)@(\d+)$')


def video_frame_name(video: str, frame: int) -> str:
  """The image name of 0-based frame `frame` of `video` (relative to manual_dir)."""
  return f'{video}@{frame:06d}'


def read_calibration(path: str, cameras) -> dict[int, np.ndarray]:
  """Reads a training `camera.calibration`.

  The file is a header line, then per camera the keys name, sensor, size, animated, intrinsic
  (16 numbers, a 4x4 row-major matrix in pixels) and extrinsic (16 numbers).

  Args:
    path: the file.
    cameras: the camera ids (ints) to return.
  Returns:
    {camera id: (4,) float64 fx, fy, cx, cy in pixels}.
  Raises:
    AnnotationError: unreadable file, a requested camera absent, or a malformed intrinsic.
  """
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise base.AnnotationError(f'cannot read {path}: {e}') from e
  blocks, name = {}, None
  for line in lines:
    fields = line.split()
    if len(fields) >= 2 and fields[0] == 'name':
      name = fields[1]
      blocks[name] = {}
    elif fields and name is not None:
      blocks[name][fields[0]] = fields[1:]
  intrinsics = {}
  for camera in cameras:
    if str(camera) not in blocks:
      raise base.AnnotationError(f'{path} has no camera {camera} (it has {sorted(blocks)})')
    try:
      matrix = np.array(blocks[str(camera)]['intrinsic'], np.float64).reshape(4, 4)
    except (KeyError, ValueError) as e:
      raise base.AnnotationError(
          f'{path}: camera {camera} has no 16-number intrinsic ({type(e).__name__}: {e})') from e
    intrinsics[camera] = matrix[[0, 1, 0, 1], [0, 1, 2, 2]]
  return intrinsics


def _annot_field(contents: dict, path: str, field: str, cell: int, width: int) -> np.ndarray:
  """Cell `cell` of the per-camera cell array `field` of annot.mat as (N, width) float64."""
  try:
    value = np.asarray(contents[field].reshape(-1)[cell], np.float64)
  except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
    raise base.AnnotationError(f'{path}: cannot read {field}{{{cell + 1}}} '
                               f'({type(e).__name__}: {e})') from e
  if value.ndim != 2 or value.shape[1] != width:
    raise base.AnnotationError(f'{path}: {field}{{{cell + 1}}} has shape {value.shape}, '
                               f'expected (frames, {width})')
  return value


def read_sequence(manual_dir: str, subject: int, sequence: int, cameras,
                  stride: int) -> tuple[list[base.Person], int]:
  """Reads one training sequence.

  Args:
    manual_dir: the dataset root.
    subject, sequence: e.g. 1, 2 for S1/Seq2.
    cameras: camera ids to read.
    stride: keep frames whose 0-based number is a multiple of it.
  Returns:
    (people in video then frame order, how many of them have 2D labels off their projected 3D).
  Raises:
    AnnotationError: naming the file and field (or camera).
  """
  folder = f'S{subject}/Seq{sequence}'
  path = os.path.join(manual_dir, folder, 'annot.mat')
  contents = {k: base.load_mat(path, k) for k in ('annot2', 'annot3', 'univ_annot3', 'cameras',
                                                  'frames')}
  intrinsics = read_calibration(os.path.join(manual_dir, folder, 'camera.calibration'), cameras)
  frames = contents['frames'].reshape(-1).astype(np.int64)
  file_cameras = [int(c) for c in contents['cameras'].reshape(-1)]
  people, off_projection = [], 0
  for camera in cameras:
    if camera not in file_cameras:
      raise base.AnnotationError(f'{path}: cameras {file_cameras} lack camera {camera}')
    cell = file_cameras.index(camera)
    xy = _annot_field(contents, path, 'annot2', cell, 56).reshape(-1, 28, 2)
    xyz = _annot_field(contents, path, 'annot3', cell, 84).reshape(-1, 28, 3)
    univ = _annot_field(contents, path, 'univ_annot3', cell, 84).reshape(-1, 28, 3)
    if not len(xy) == len(xyz) == len(univ) == len(frames):
      raise base.AnnotationError(
          f'{path}: camera {camera} has {len(xy)} annot2, {len(xyz)} annot3, {len(univ)} '
          f'univ_annot3 rows for {len(frames)} frames')
    keep = np.flatnonzero(frames % stride == 0)
    off_projection += _count_off_projection(xy[keep], xyz[keep], intrinsics[camera])
    video = f'{folder}/imageSequence/video_{camera}.avi'
    people += _people(
        [video_frame_name(video, frames[i]) for i in keep], xy[keep], xyz[keep], univ[keep],
        np.ones((len(keep), 28), np.float32), intrinsics[camera], subject=f'S{subject}',
        actions=[''] * len(keep), camera=str(camera), frames=frames[keep])
  return people, off_projection


def _count_off_projection(xy: np.ndarray, xyz: np.ndarray, intrinsics: np.ndarray) -> int:
  """How many frames of (N, J, 2) pixels lie > MAX_REPROJECTION_PX from (N, J, 3) projected."""
  error = np.linalg.norm(geometry.project(xyz, intrinsics) - xy, axis=-1)
  return int(np.sum(error.max(axis=-1, initial=0) > MAX_REPROJECTION_PX))


def _people(names, xy, xyz, univ, eval_mask, intrinsics, *, subject, actions, camera, frames):
  """Person records from 28-joint arrays: xy (N, 28, 2) px, xyz and univ (N, 28, 3) camera mm,
  eval_mask (N, 28) 1 = annotated and counted by 3D metrics. Joints outside TEST_JOINTS may be
  left unannotated by the caller through `annotated` below (the test set has only those)."""
  annotated = np.zeros(28, np.float32)
  annotated[[i for i in range(28) if xy.shape[1] == 28]] = 1
  mpii_xy, mpii_mask = MPII_FROM_3DHP(xy, annotated)
  mpii_xyz, _ = MPII_FROM_3DHP(xyz, annotated)
  eval_xyz, eval_mask = H36M_FROM_3DHP(univ, eval_mask)
  people = []
  for i, name in enumerate(names):
    center, side = base.box_from_joints(mpii_xy[i], mpii_mask)
    people.append(base.Person(
        image=name, person_index=0, joints_2d=mpii_xy[i], joints_mask=mpii_mask,
        joints_visible=mpii_mask, box_center=center, box_side=side, joints_3d=mpii_xyz[i],
        eval_joints_3d=eval_xyz[i], eval_mask=eval_mask[i], eval_visible=eval_mask[i],
        intrinsics=np.asarray(intrinsics, np.float32), subject=subject, action=actions[i],
        camera=camera, frame=int(frames[i])))
  return people

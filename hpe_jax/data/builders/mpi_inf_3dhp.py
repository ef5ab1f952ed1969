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

Conventions: 2D labels are annot2 as released, taken as 0-based pixels (unverified: they agree
with the pinhole projection of annot3 within 2.2 px on the real frames, too coarse to tell a
half-pixel shift); joints_3d
(MPII-16) is annot3 (camera frame, true scale: the depth targets need the real geometry);
eval_joints_3d (Human3.6M-17) is univ_annot3, the height-normalised skeleton the official 3DPCK
is computed on. Frames whose 2D labels lie more than `MAX_REPROJECTION_PX` from the projected
annot3 are kept and counted in `read_report`. There are no occlusion labels: joints_visible =
annotated. Video frames are named 'S1/Seq1/imageSequence/video_0.avi@000123' (0-based frame).
"""

from __future__ import annotations

import os
import pickle

import h5py
import numpy as np
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data.builders import base

DEFAULT_CAMERAS = (0, 1, 2, 4, 5, 6, 7, 8)  # the usual training subset
TRAIN_SEQUENCES = tuple((s, q) for s in range(1, 9) for q in (1, 2))
TEST_SEQUENCES = tuple(range(1, 7))
# The published test cameras (the test set's camera.calibration files: sensor-mm intrinsics
# converted to pixels): TS1-TS4 were filmed with one 2048 x 2048 studio camera, TS5-TS6 with one
# 1920 x 1080 outdoor camera. fx, fy, cx, cy in pixels.
TEST_INTRINSICS = {
  'studio': (
    7.32506 / 10 * 2048,
    7.32506 / 10 * 2048,
    1024 - 0.0322884 / 10 * 2048,
    1024 + 0.0929296 / 10 * 2048,
  ),
  'outdoor': (
    8.770747185 / 10 * 1920,
    8.770747185 / 5.625 * 1080,
    960 - 0.104908645 / 10 * 1920,
    540 + 0.104899704 / 5.625 * 1080,
  ),
}
TEST_CAMERA = {1: 'studio', 2: 'studio', 3: 'studio', 4: 'studio', 5: 'outdoor', 6: 'outdoor'}
TEST_IMAGE_SIZE = {'studio': (2048, 2048), 'outdoor': (1920, 1080)}  # width, height
# The test joints whose 2D the study's fork requires inside the image (VIBE's read_test_data,
# which its mpii3d_val_db comes from): the 16 it maps into MPII-16, all but 'head'.
_FORK_CHECKED = [
  i for i, j in enumerate(joints.MPI_INF_3DHP_TEST_JOINTS) if joints.MPI_INF_3DHP28[j] != 'head'
]
# activity_annotation codes 1-7 (the test set's evaluation scripts).
ACTIVITIES = (
  'stand_walk',
  'exercise',
  'sit_on_chair',
  'reach_crouch',
  'on_floor',
  'sports',
  'misc',
)
MAX_REPROJECTION_PX = 3.0  # the real frames reach 2.1 px (norm)
_INVALID = 'invalid frames (kept, excluded from 3D metrics)'
_OFF_PROJECTION = (
  f'frames whose 2D labels are > {MAX_REPROJECTION_PX:g} px from projected 3D (kept)'
)


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
        f'{path}: camera {camera} has no 16-number intrinsic ({type(e).__name__}: {e})'
      ) from e
    intrinsics[camera] = matrix[[0, 1, 0, 1], [0, 1, 2, 2]]
  return intrinsics


def _annot_field(contents: dict, path: str, field: str, cell: int, width: int) -> np.ndarray:
  """Cell `cell` of the per-camera cell array `field` of annot.mat as (N, width) float64."""
  try:
    value = np.asarray(contents[field].reshape(-1)[cell], np.float64)
  except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
    raise base.AnnotationError(
      f'{path}: cannot read {field}{{{cell + 1}}} ({type(e).__name__}: {e})'
    ) from e
  if value.ndim != 2 or value.shape[1] != width:
    raise base.AnnotationError(
      f'{path}: {field}{{{cell + 1}}} has shape {value.shape}, expected (frames, {width})'
    )
  return value


def read_sequence(
  manual_dir: str, subject: int, sequence: int, cameras, stride: int
) -> tuple[list[base.Person], int]:
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
  contents = {
    k: base.load_mat(path, k) for k in ('annot2', 'annot3', 'univ_annot3', 'cameras', 'frames')
  }
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
        f'univ_annot3 rows for {len(frames)} frames'
      )
    keep = np.flatnonzero(frames % stride == 0)
    off_projection += _count_off_projection(xy[keep], xyz[keep], intrinsics[camera])
    video = f'{folder}/imageSequence/video_{camera}.avi'
    people += _people(
      [base.video_frame_name(video, frames[i]) for i in keep],
      xy[keep],
      xyz[keep],
      univ[keep],
      np.ones(28, np.float32),
      np.ones(len(keep), np.float32),
      intrinsics[camera],
      subject=f'S{subject}',
      actions=[''] * len(keep),
      camera=str(camera),
      frames=frames[keep],
    )
  return people, off_projection


def _count_off_projection(xy: np.ndarray, xyz: np.ndarray, intrinsics: np.ndarray) -> int:
  """How many frames of (N, J, 2) pixels lie > MAX_REPROJECTION_PX from (N, J, 3) projected."""
  error = np.linalg.norm(geometry.project(xyz, intrinsics) - xy, axis=-1)
  return int(np.sum(error.max(axis=-1, initial=0) > MAX_REPROJECTION_PX))


def _people(
  names,
  xy,
  xyz,
  univ,
  annotated,
  valid,
  intrinsics,
  *,
  subject,
  actions,
  camera,
  frames,
  fork_xyz=None,
) -> list[base.Person]:
  """Person records from 28-joint arrays.

  Args:
    names: N image names.
    xy: (N, 28, 2) pixels; xyz, univ: (N, 28, 3) camera-frame mm (annot3, univ_annot3).
    annotated: (28,) 1 = the release labels this joint (the test set labels only
      joints.MPI_INF_3DHP_TEST_JOINTS).
    valid: (N,) 1 = the frame counts in 3D metrics.
    intrinsics: (4,) fx, fy, cx, cy pixels.
    subject, camera: strings; actions: N strings; frames: N 0-based frame numbers.
    fork_xyz: (N, 17, 3) the study fork's labels (`read_test_sequence`), or None.
  """
  per_frame = np.broadcast_to(annotated, xy.shape[:2])  # JointMap wants a mask per pose
  mpii_xy, mpii_mask = joints.MPII_FROM_3DHP(xy, per_frame)
  mpii_xyz, _ = joints.MPII_FROM_3DHP(xyz, per_frame)
  eval_xyz, eval_mask = joints.H36M_FROM_3DHP(univ, annotated[None] * valid[:, None])
  people = []
  for i, name in enumerate(names):
    center, side = base.box_from_joints(mpii_xy[i], mpii_mask[i])
    people.append(
      base.Person(
        image=name,
        person_index=0,
        joints_2d=mpii_xy[i],
        joints_mask=mpii_mask[i],
        joints_visible=mpii_mask[i],
        box_center=center,
        box_side=side,
        joints_3d=mpii_xyz[i],
        eval_joints_3d=eval_xyz[i],
        eval_mask=eval_mask[i],
        eval_visible=eval_mask[i],
        intrinsics=np.asarray(intrinsics, np.float32),
        fork_joints_3d=None if fork_xyz is None else fork_xyz[i],
        subject=subject,
        action=actions[i],
        camera=camera,
        frame=int(frames[i]),
      )
    )
  return people


def test_intrinsics(manual_dir: str) -> dict[int, np.ndarray]:
  """{test sequence: (4,) fx, fy, cx, cy}: from manual_dir/cameras_test.pkl when present (per
  sequence, as mmpose stores them), else TEST_INTRINSICS."""
  path = os.path.join(manual_dir, 'cameras_test.pkl')
  if not os.path.isfile(path):
    return {n: np.array(TEST_INTRINSICS[TEST_CAMERA[n]]) for n in TEST_SEQUENCES}
  try:
    with open(path, 'rb') as f:
      cameras = pickle.load(f)
    return {
      n: np.concatenate([np.ravel(cameras[f'TS{n}']['f']), np.ravel(cameras[f'TS{n}']['c'])])
      for n in TEST_SEQUENCES
    }
  except Exception as e:  # unpickling reports a bad file in many ways
    raise base.AnnotationError(
      f'{path}: cannot read TS1-TS6 f and c ({type(e).__name__}: {e})'
    ) from e


def read_test_sequence(
  manual_dir: str, sequence: int, intrinsics: np.ndarray
) -> tuple[list[base.Person], int, int]:
  """Reads test sequence TS{sequence}.

  Returns:
    (people in frame order, invalid frames, frames with 2D labels off their projected 3D).
  Raises:
    AnnotationError: naming the file and field.
  """
  folder = f'mpi_inf_3dhp_test_set/TS{sequence}'
  path = os.path.join(manual_dir, folder, 'annot_data.mat')
  fields = {'annot2': 2, 'annot3': 3, 'univ_annot3': 3, 'valid_frame': 0, 'activity_annotation': 0}
  arrays = {}
  try:
    with h5py.File(path, 'r') as f:
      for field, width in fields.items():
        if field not in f:
          raise base.AnnotationError(f'{path} has no field {field!r} (it has {sorted(f)})')
        arrays[field] = np.asarray(f[field], np.float64)
        arrays[field] = arrays[field].reshape(-1, 17, width) if width else arrays[field].reshape(-1)
  except (OSError, ValueError) as e:  # not HDF5, or a field of the wrong size
    raise base.AnnotationError(f'cannot read {path}: {type(e).__name__}: {e}') from e
  count = len(arrays['annot2'])
  if any(len(a) != count for a in arrays.values()):
    raise base.AnnotationError(
      f'{path}: fields have different frame counts { {k: len(a) for k, a in arrays.items()} }'
    )
  xy, xyz, univ = (np.zeros((count, 28, w)) for w in (2, 3, 3))
  xy[:, joints.MPI_INF_3DHP_TEST_JOINTS], xyz[:, joints.MPI_INF_3DHP_TEST_JOINTS] = (
    arrays['annot2'],
    arrays['annot3'],
  )
  univ[:, joints.MPI_INF_3DHP_TEST_JOINTS] = arrays['univ_annot3']
  annotated = np.zeros(28, np.float32)
  annotated[list(joints.MPI_INF_3DHP_TEST_JOINTS)] = 1
  valid = (arrays['valid_frame'] != 0).astype(np.float32)
  codes = arrays['activity_annotation'].astype(int)
  actions = [ACTIVITIES[c - 1] if 1 <= c <= len(ACTIVITIES) else '' for c in codes]
  # Invalid frames may hold no 3D pose: only valid frames are checked against their projection.
  off_projection = _count_off_projection(
    arrays['annot2'][valid > 0], arrays['annot3'][valid > 0], intrinsics
  )
  # The study's fork scores annot3 in its own layout, invalid frames included, on the frames its
  # preprocessing keeps: those whose checked joints lie in [0, width) x [0, height).
  width, height = TEST_IMAGE_SIZE[TEST_CAMERA[sequence]]
  checked = arrays['annot2'][:, _FORK_CHECKED]
  inside = np.all((checked >= 0) & (checked < [width, height]), axis=(1, 2))
  fork_xyz, _ = joints.FORK_H36M_FROM_3DHP(xyz, np.ones(xyz.shape[:2]))
  fork_xyz *= inside[:, None, None]
  frames = np.arange(count)
  names = [f'{folder}/imageSequence/img_{i + 1:06d}.jpg' for i in frames]
  people = _people(
    names,
    xy,
    xyz,
    univ,
    annotated,
    valid,
    intrinsics,
    subject=f'TS{sequence}',
    actions=actions,
    camera=TEST_CAMERA[sequence],
    frames=frames,
    fork_xyz=fork_xyz,
  )
  return people, int(count - valid.sum()), off_projection


class MpiInf3dhpConfig(base.PoseBuilderConfig):
  """Adds frame_stride (training videos: keep every n-th frame; consecutive frames at 25-50 fps
  are near duplicates) and cameras (training camera ids)."""

  def __init__(self, *, frame_stride: int = 10, cameras=DEFAULT_CAMERAS, **kwargs):
    super().__init__(**kwargs)
    self.frame_stride = frame_stride
    self.cameras = tuple(cameras)


class MpiInf3dhp(base.PoseDatasetBuilder):
  """MPI-INF-3DHP: training videos (S1-S8, 8 cameras) and the 6 test sequences TS1-TS6."""

  name = 'mpi_inf_3dhp'  # TFDS would derive 'mpi_inf3dhp' from the class name
  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {
    '1.1.0': 'distortion field (zeros here).',
    '1.2.0': "image_size (for the crop clamp) and fork_joints_3d (the study fork's labels) fields.",
  }
  BUILDER_CONFIGS = [
    MpiInf3dhpConfig(name='default', crop_size=384, description='384 px crops'),
    MpiInf3dhpConfig(name='small', crop_size=192, description='192 px crops (small inputs)'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download MPI-INF-3DHP with the release's get_dataset.sh / get_testset.sh
(https://vcai.mpi-inf.mpg.de/3dhp-dataset/) into manual_dir, so that it holds
  manual_dir/S{1-8}/Seq{1,2}/annot.mat, camera.calibration, imageSequence/video_{0-13}.avi
  manual_dir/mpi_inf_3dhp_test_set/TS{1-6}/annot_data.mat, imageSequence/img_000001.jpg ...
  manual_dir/cameras_test.pkl   (optional: mmpose's test cameras; else the published ones)
"""
  DEFAULT_SPLITS = {'2d': 'train', '3d': 'train', 'eval': 'test'}

  def read_annotations(self, manual_dir: str) -> dict[str, list[base.Person]]:
    config = self.builder_config
    splits = {'train': [], 'test': []}
    self.read_report = {'train': {}, 'test': {}}
    for subject, sequence in TRAIN_SEQUENCES:
      if not os.path.isdir(os.path.join(manual_dir, f'S{subject}/Seq{sequence}')):
        continue  # a partial download builds; the base reports a split left empty
      people, off = read_sequence(
        manual_dir, subject, sequence, config.cameras, config.frame_stride
      )
      splits['train'] += people
      self.read_report['train'][_OFF_PROJECTION] = (
        self.read_report['train'].get(_OFF_PROJECTION, 0) + off
      )
    intrinsics = test_intrinsics(manual_dir)
    for sequence in TEST_SEQUENCES:
      if not os.path.isdir(os.path.join(manual_dir, f'mpi_inf_3dhp_test_set/TS{sequence}')):
        continue
      people, invalid, off = read_test_sequence(manual_dir, sequence, intrinsics[sequence])
      splits['test'] += people
      report = self.read_report['test']
      report[_INVALID] = report.get(_INVALID, 0) + invalid
      report[_OFF_PROJECTION] = report.get(_OFF_PROJECTION, 0) + off
    return splits

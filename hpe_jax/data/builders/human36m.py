"""`human36m`: Human3.6M (Ionescu et al., 2014), 3D poses filmed by 4 calibrated cameras.

Protocol: train = S1, S5, S6, S7, S8; test = S9, S11. Every example is one person in one video frame
with camera-frame 3D joints (mm) and pinhole intrinsics.

Two layouts of manual_dir are read (see MANUAL_DOWNLOAD_INSTRUCTIONS). The mmpose layout takes
precedence: when manual_dir holds its npz files, the official files beside them are not read (its
frames are already extracted, so it builds much faster).

Conventions:
- 3D joints are camera-frame millimetres. mmpose's `S` is in metres (x 1000 here).
- Joint order: Human3.6M-17 (joints.H36M17). The official files hold 32 joints; `H36M32_TO_17`
  takes the standard subset, which is also what mmpose's npz stores. Left/right was checked on
  real frames: the r_* joints are the person's right (S1 seen from behind and S7 facing the
  camera, checked by eye; tests/data/test_human36m.py checks that the nose lies in front of the
  body).
- 2D joints are the projection of the 17 3D joints through the camera, lens distortion (k, p)
  included, mapped to MPII-16 afterwards (the derived thorax is the midpoint of the projected
  shoulders, within a fraction of a pixel of the projected 3D midpoint). So they are where the
  joints appear in the frame: on the 4 real frames they match mmpose's `part` (the release's
  distorted 2D) within 0.25 px, where a pinhole projection is off by 0.4-1.2 px on average and up
  to 3.4 px at the wrists. The intrinsics and distortion are stored; evaluation undistorts the
  predicted 2D before lifting it to 3D.
- The person box is a square around the projected joints (base.box_from_joints, 1.25x pad). The
  same rule serves both layouts (the official release has no boxes).
- action is the base action name ('Directions'), without the sub-action number; the sub-action
  stays in the image name. frame is the 0-based video frame (mmpose names frame i `..._{i+1:06d}`).
- H36M has no occlusion labels: every joint is annotated and counted as visible.
- A sequence whose camera is not in the cameras file is an AnnotationError naming the subject and
  camera: a missing calibration is a broken download, not a sample to skip.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pickle
import re

import cdflib
import numpy as np
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data.builders import base

# The 17 joints of Human3.6M-17 among the 32 of the official release: hip, right up-leg, leg, foot,
# left up-leg, leg, foot, spine1, neck, head, head site, left arm, fore-arm, hand, right arm,
# fore-arm, hand. joints.H36M17 names them.
H36M32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
NUM_JOINTS_32 = 32
SPLIT_OF_SUBJECT = {
  **{s: 'train' for s in ('S1', 'S5', 'S6', 'S7', 'S8')},
  **{s: 'test' for s in ('S9', 'S11')},
}


class Human36mConfig(base.PoseBuilderConfig):
  """frame_stride: the official layout keeps every frame_stride-th video frame (50 fps videos)."""

  def __init__(self, *, frame_stride: int = 5, **kwargs):
    super().__init__(**kwargs)
    self.frame_stride = frame_stride


@dataclasses.dataclass(frozen=True)
class Camera:
  intrinsics: np.ndarray  # (4,) fx, fy, cx, cy pixels
  distortion: np.ndarray  # (5,) k1, k2, p1, p2, k3 (geometry.distort)


def load_cameras(manual_dir: str) -> dict[tuple[str, str], Camera]:
  """Reads manual_dir/cameras.pkl (mmpose) or, if absent, manual_dir/cameras.json.

  Both map a camera to {'f': (fx, fy), 'c': (cx, cy), 'k': (k1, k2, k3), 'p': (p1, p2)} in pixels
  (k and p optional: zero distortion without them). The pkl is keyed by (subject, camera id), the
  json by subject then camera id: {"S1": {"54138969": {"f": [fx, fy], "c": [cx, cy], ...}}}.
  Raises:
    AnnotationError: neither file, an unreadable file, or a camera without f or c.
  """
  path = os.path.join(manual_dir, 'cameras.pkl')
  if not os.path.isfile(path):
    path = os.path.join(manual_dir, 'cameras.json')
  if not os.path.isfile(path):
    raise base.AnnotationError(f'{manual_dir} has neither cameras.pkl nor cameras.json')
  try:
    if path.endswith('.pkl'):
      with open(path, 'rb') as f:
        cameras = pickle.load(f)
    else:
      with open(path) as f:
        cameras = {
          (s, c): v for s, per_camera in json.load(f).items() for c, v in per_camera.items()
        }
  except (OSError, ValueError, pickle.UnpicklingError, AttributeError) as e:
    raise base.AnnotationError(f'cannot read the cameras from {path}: {e}') from e
  result = {}
  for key, camera in cameras.items():
    if not {'f', 'c'} <= set(camera):
      raise base.AnnotationError(f'{path}: camera {key} has no f or c (it has {sorted(camera)})')
    radial = np.ravel(camera.get('k', np.zeros(3)))
    tangential = np.ravel(camera.get('p', np.zeros(2)))
    if radial.shape != (3,) or tangential.shape != (2,):
      raise base.AnnotationError(
        f'{path}: camera {key} has k {radial.shape} and p '
        f'{tangential.shape}, expected 3 and 2 numbers'
      )
    result[tuple(key)] = Camera(
      np.concatenate([np.ravel(camera['f']), np.ravel(camera['c'])]).astype(np.float32),
      np.array([*radial[:2], *tangential, radial[2]], np.float32),
    )
  return result


def action_name(sequence: str) -> str:
  """'Directions 1' or 'Directions_1' -> 'Directions' (the sub-action number dropped)."""
  return re.sub(r'[ _]\d+$', '', sequence)


def make_person(
  image: str,
  pose_mm: np.ndarray,
  camera: Camera,
  subject: str,
  action: str,
  camera_id: str,
  frame: int,
) -> base.Person:
  """A Person from Human3.6M-17 camera-frame joints pose_mm (17, 3) in mm seen by `camera`."""
  annotated = np.ones(len(joints.H36M17), np.float32)
  uv = geometry.project(pose_mm, camera.intrinsics, camera.distortion)
  mpii_2d, mpii_mask = joints.MPII_FROM_H36M(uv, annotated)
  mpii_3d, _ = joints.MPII_FROM_H36M(pose_mm, annotated)
  center, side = base.box_from_joints(mpii_2d, mpii_mask)
  return base.Person(
    image=image,
    person_index=0,
    joints_2d=mpii_2d,
    joints_mask=mpii_mask,
    joints_visible=mpii_mask,
    box_center=center,
    box_side=side,
    joints_3d=mpii_3d,
    eval_joints_3d=pose_mm.astype(np.float32),
    eval_mask=annotated,
    eval_visible=annotated,
    intrinsics=camera.intrinsics,
    distortion=camera.distortion,
    subject=subject,
    action=action,
    camera=camera_id,
    frame=frame,
  )


def _split(subject: str, source: str) -> str:
  if subject not in SPLIT_OF_SUBJECT:
    raise base.AnnotationError(
      f'{source}: unknown subject {subject!r} (expected one of {sorted(SPLIT_OF_SUBJECT)})'
    )
  return SPLIT_OF_SUBJECT[subject]


def mmpose_npz_files(manual_dir: str) -> list[str]:
  """The mmpose annotation files: *.npz in manual_dir or in annotation_body3d/fps50/."""
  return sorted(
    glob.glob(os.path.join(manual_dir, '*.npz'))
    + glob.glob(os.path.join(manual_dir, 'annotation_body3d', 'fps50', '*.npz'))
  )


def read_mmpose(manual_dir: str, npz_files: list[str]) -> dict[str, list[base.Person]]:
  """Reads mmpose's preprocessed layout; entries go to splits by subject, whatever the file name.

  Frames are named by the npz `imgname` relative to manual_dir/images/ if that folder exists
  (where mmpose writes them), else relative to manual_dir.
  Raises:
    AnnotationError: a missing key, a wrong shape, an unparsable imgname or a missing camera.
  """
  cameras = load_cameras(manual_dir)
  prefix = 'images/' if os.path.isdir(os.path.join(manual_dir, 'images')) else ''
  splits = {'train': [], 'test': []}
  for path in npz_files:
    try:
      contents = np.load(path)
      names, poses = contents['imgname'], contents['S']
    except (OSError, ValueError, KeyError) as e:
      raise base.AnnotationError(f'cannot read imgname and S from {path}: {e}') from e
    if poses.ndim != 3 or poses.shape[1:] != (len(joints.H36M17), 4) or len(poses) != len(names):
      raise base.AnnotationError(
        f'{path}: S has shape {poses.shape}, expected '
        f'({len(names)}, 17, 4) (x, y, z metres, visibility)'
      )
    for name, pose in zip(names, poses):
      # 'S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg'
      match = re.fullmatch(r'(S\d+)/\1_(.+)\.(\d+)/\1_\2\.\3_(\d+)\.jpg', str(name))
      if match is None:
        raise base.AnnotationError(
          f'{path}: imgname {name!r} is not '
          'S<n>/S<n>_<action>.<camera>/S<n>_<action>.<camera>_<frame>.jpg'
        )
      subject, sequence, camera, number = match.groups()
      if (subject, camera) not in cameras:
        raise base.AnnotationError(
          f'{manual_dir}: no camera {camera} of subject {subject} in '
          f'the cameras file (needed by {name})'
        )
      splits[_split(subject, path)].append(
        make_person(
          prefix + str(name),
          pose[:, :3] * 1000.0,
          cameras[subject, camera],
          subject,
          action_name(sequence),
          camera,
          int(number) - 1,
        )
      )  # mmpose numbers frames from 1
  return splits


def read_pose_cdf(path: str) -> np.ndarray:
  """An official D3_Positions_mono file -> (N, 17, 3) camera-frame mm (Human3.6M-17 order).

  Raises:
    AnnotationError: an unreadable file, no 'Pose', or not 32 joints x 3 per frame.
  """
  try:
    pose = np.asarray(cdflib.CDF(path).varget('Pose'))
  except Exception as e:  # cdflib reports malformed files and missing variables variously
    raise base.AnnotationError(f'cannot read variable Pose from {path}: {e}') from e
  if pose.shape[-1] != NUM_JOINTS_32 * 3:
    raise base.AnnotationError(
      f'{path}: Pose has shape {pose.shape}, expected (1, N, 96) (32 joints x 3)'
    )
  return pose.reshape(-1, NUM_JOINTS_32, 3)[:, H36M32_TO_17]


def read_official(manual_dir: str, frame_stride: int) -> dict[str, list[base.Person]]:
  """Reads the official release: S*/MyPoseFeatures/D3_Positions_mono/<seq>.<camera>.cdf, with
  frames 0, frame_stride, ... of S*/Videos/<seq>.<camera>.mp4 (named '<video>@<frame>')."""
  cameras = load_cameras(manual_dir)
  splits = {'train': [], 'test': []}
  cdfs = sorted(
    glob.glob(os.path.join(manual_dir, 'S*', 'MyPoseFeatures', 'D3_Positions_mono', '*.cdf'))
  )
  for path in cdfs:
    subject = os.path.relpath(path, manual_dir).split(os.sep)[0]
    sequence, camera = os.path.basename(path)[: -len('.cdf')].rsplit('.', 1)
    if (subject, camera) not in cameras:
      raise base.AnnotationError(
        f'{manual_dir}: no camera {camera} of subject {subject} in the '
        f'cameras file (needed by {path})'
      )
    split = _split(subject, path)
    video = f'{subject}/Videos/{sequence}.{camera}.mp4'
    poses = read_pose_cdf(path)
    for frame in range(0, len(poses), frame_stride):
      splits[split].append(
        make_person(
          base.video_frame_name(video, frame),
          poses[frame],
          cameras[subject, camera],
          subject,
          action_name(sequence),
          camera,
          frame,
        )
      )
  return splits


class Human36m(base.PoseDatasetBuilder):
  """Human3.6M, 3D poses with camera intrinsics; train = S1, S5-S8, test = S9, S11."""

  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {
    '1.1.0': 'Lens distortion stored; 2D labels are the distorted projection.',
    '1.2.0': 'image_size (for the crop clamp) and fork_joints_3d (zeros here) fields.',
  }
  BUILDER_CONFIGS = [
    Human36mConfig(name='default', crop_size=384, description='384 px crops, every 5th frame'),
    Human36mConfig(
      name='small', crop_size=192, description='192 px crops (small inputs), every 5th frame'
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Human3.6M needs a licence (http://vision.imar.ro/human3.6m). Put ONE of these layouts in manual_dir
(if both are there, the mmpose layout is used):

1. mmpose's preprocessed layout (tools/dataset_converters/preprocess_h36m.py):
  manual_dir/cameras.pkl                 (mmpose's: {(subject, camera id): {f, c, ...}})
  manual_dir/annotation_body3d/fps50/h36m_train.npz, h36m_test.npz  (or any *.npz directly in
      manual_dir; each holds imgname and S (N, 17, 4) camera-frame metres; entries are split by
      subject, so the file names do not matter)
  manual_dir/images/S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg ...
      (or the same tree directly in manual_dir)

2. The official release, per subject S1, S5, S6, S7, S8, S9, S11:
  manual_dir/S1/MyPoseFeatures/D3_Positions_mono/Directions 1.54138969.cdf ...
  manual_dir/S1/Videos/Directions 1.54138969.mp4 ...
  and decoded camera parameters: manual_dir/cameras.pkl (as above) or manual_dir/cameras.json
  {"S1": {"54138969": {"f": [fx, fy], "c": [cx, cy]}, ...}, ...} (pixels). The release's
  metadata.xml (encoded) is not read. Reading the .cdf files needs the cdflib package. Frames are
  decoded from the videos at the config's frame_stride.
"""
  DEFAULT_SPLITS = {'2d': 'train', '3d': 'train', 'eval': 'test'}

  def read_annotations(self, manual_dir: str) -> dict[str, list[base.Person]]:
    npz_files = mmpose_npz_files(manual_dir)
    if npz_files:
      return read_mmpose(manual_dir, npz_files)
    return read_official(manual_dir, self.builder_config.frame_stride)

"""Human3.6M: an official-format build from a fixture the test writes (CDF, mp4, cameras.json), a
build of the real mmpose frames (skips when realdata is absent), and malformed input."""

from __future__ import annotations

import json
import os
import pickle

from cdflib import cdfwrite
from conftest import oracle_predictions
from conftest import realdata_dir
import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data import datasets
from hpe_jax.data import features
from hpe_jax.data.builders import base
from hpe_jax.data.builders import human36m
from hpe_jax.evaluation import scoring

H36M = joints.H36M17.index
INTRINSICS = np.array([60.0, 62.0, 31.5, 30.5], np.float32)  # fx, fy, cx, cy of the fixture
RADIAL, TANGENTIAL = [-0.2, 0.24, -0.0025], [-0.0018, -0.0009]  # k, p: Human3.6M-like values
VIDEO_FRAMES, VIDEO_SIZE = 12, 64
BRIGHTNESS_STEP = 20  # fixture frame i is a uniform grey of i x BRIGHTNESS_STEP


@pytest.fixture(scope='module')
def realdata() -> str:
  path = realdata_dir()
  if path is None or not os.path.isdir(os.path.join(path, 'h36m', 'mmpose')):
    pytest.skip('realdata/h36m is absent')
  return os.path.join(path, 'h36m', 'mmpose')


def _build(manual_dir: str, data_dir: str, **kwargs) -> human36m.Human36m:
  builder = human36m.Human36m(
    config='small', data_dir=data_dir, file_format='array_record', **kwargs
  )
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _records(builder, split: str) -> list[dict]:
  source = builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
  return [source[i] for i in range(len(source))]


def _poses(num_frames: int, num_joints: int = 32) -> np.ndarray:
  """(num_frames, num_joints, 3) camera mm, all within the fixture camera's 64 x 64 view."""
  rng = np.random.default_rng(num_frames)
  xy = rng.uniform(-800, 800, (num_frames, num_joints, 2))
  z = rng.uniform(3500, 4500, (num_frames, num_joints, 1))
  return np.concatenate([xy, z], axis=-1)


def _write_cdf(path: str, poses: np.ndarray):
  """Writes poses (N, J, 3) as the release does: variable Pose, one record of shape (N, J * 3)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  flat = poses.reshape(1, len(poses), -1)
  cdf = cdfwrite.CDF(path, cdf_spec={'Majority': 'Row_major'}, delete=True)
  cdf.write_var(
    {
      'Variable': 'Pose',
      'Data_Type': cdfwrite.CDF.CDF_DOUBLE,
      'Num_Elements': 1,
      'Rec_Vary': True,
      'Dim_Sizes': list(flat.shape[1:]),
    },
    var_data=flat,
  )
  cdf.close()


def _write_video(path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 50, (VIDEO_SIZE, VIDEO_SIZE))
  for i in range(VIDEO_FRAMES):
    writer.write(np.full((VIDEO_SIZE, VIDEO_SIZE, 3), i * BRIGHTNESS_STEP, np.uint8))
  writer.release()


def _write_official(
  manual_dir: str,
  sequences: dict[tuple[str, str], np.ndarray],
  videos: bool = True,
  cameras: bool = True,
):
  """An official-layout manual_dir: {(subject, 'Action N.camera'): poses (N, 32, 3) mm}."""
  for (subject, sequence), poses in sequences.items():
    _write_cdf(
      os.path.join(manual_dir, subject, 'MyPoseFeatures', 'D3_Positions_mono', f'{sequence}.cdf'),
      poses,
    )
    if videos:
      _write_video(os.path.join(manual_dir, subject, 'Videos', f'{sequence}.mp4'))
  if cameras:
    table = {}
    for subject, sequence in sequences:
      table.setdefault(subject, {})[sequence.rsplit('.', 1)[1]] = {
        'f': INTRINSICS[:2].tolist(),
        'c': INTRINSICS[2:].tolist(),
        'k': RADIAL,
        'p': TANGENTIAL,
      }
    with open(os.path.join(manual_dir, 'cameras.json'), 'w') as f:
      json.dump(table, f)


def test_official_layout_builds_strided_video_frames(tmp_path):
  manual_dir = str(tmp_path / 'manual')
  # 20 poses but a 12-frame video: frames 0, 5, 10 decode, frame 15 is an unreadable skip.
  poses = _poses(20)
  _write_official(manual_dir, {('S9', 'Directions 1.54138969'): poses})
  builder = _build(manual_dir, str(tmp_path / 'data'))
  assert list(builder.info.splits) == ['test']  # S9 is a test subject; no train split
  assert builder.report['test']['counts'] == {'written': 3, 'unreadable image': 1}
  records = _records(builder, 'test')
  assert [r['frame'] for r in records] == [0, 5, 10]
  for record in records:
    frame = int(record['frame'])
    assert record['image_name'].decode() == f'S9/Videos/Directions 1.54138969.mp4@{frame:06d}'
    assert (record['subject'], record['action'], record['camera']) == (
      b'S9',
      b'Directions',
      b'54138969',
    )
    np.testing.assert_allclose(record['intrinsics'], INTRINSICS)
    distortion = np.array([*RADIAL[:2], *TANGENTIAL, RADIAL[2]])
    np.testing.assert_allclose(record['distortion'], distortion, rtol=1e-6)
    pose = poses[frame, list(human36m.H36M32_TO_17)]
    np.testing.assert_allclose(record['eval_joints_3d'], pose, rtol=1e-6)
    np.testing.assert_array_equal(record['eval_mask'], 1)
    mpii_3d, _ = joints.MPII_FROM_H36M(pose, np.ones(17))
    np.testing.assert_allclose(record['joints_3d'], mpii_3d, rtol=1e-6)
    # 2D = OpenCV's projection of the 17 joints with the lens distortion, mapped to MPII-16 (the
    # thorax is then the midpoint of the projected shoulders, not the projection of the 3D one).
    fx, fy, cx, cy = INTRINSICS
    distorted, _ = cv2.projectPoints(
      pose.astype(np.float64),
      np.zeros(3),
      np.zeros(3),
      np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]),
      distortion,
    )
    projected, _ = joints.MPII_FROM_H36M(distorted[:, 0], np.ones(17))
    np.testing.assert_allclose(record['joints_2d'], projected, atol=1e-3)
    assert (
      np.abs(
        record['joints_2d']
        - joints.MPII_FROM_H36M(geometry.project(pose, INTRINSICS), np.ones(17))[0]
      ).max()
      > 0.1
    )  # distortion matters
    crop = features.decode_jpeg(record['image'])
    middle = crop[
      crop.shape[0] // 3 : -crop.shape[0] // 3, crop.shape[1] // 3 : -crop.shape[1] // 3
    ]
    assert abs(middle.mean() - frame * BRIGHTNESS_STEP) < 8, frame


def test_official_layout_missing_video(tmp_path):
  manual_dir = str(tmp_path / 'manual')
  _write_official(
    manual_dir, {('S1', 'Walking 1.54138969'): _poses(12), ('S1', 'Walking 1.55011271'): _poses(11)}
  )
  os.remove(os.path.join(manual_dir, 'S1', 'Videos', 'Walking 1.55011271.mp4'))
  with pytest.raises(base.MissingImagesError, match='Walking 1.55011271.mp4'):
    _build(manual_dir, str(tmp_path / 'data'))
  builder = _build(manual_dir, str(tmp_path / 'data2'), allow_missing=True)
  assert builder.report['train']['counts'] == {'written': 3, 'missing image': 3}


def test_official_layout_wrong_joint_count(tmp_path):
  manual_dir = str(tmp_path / 'manual')
  _write_official(manual_dir, {('S1', 'Eating.54138969'): _poses(6, num_joints=31)})
  with pytest.raises(base.AnnotationError, match=r'Eating\.54138969\.cdf.*\(1, 6, 93\)'):
    _build(manual_dir, str(tmp_path / 'data'))


def test_missing_camera(tmp_path):
  manual_dir = str(tmp_path / 'manual')
  _write_official(manual_dir, {('S11', 'Eating.60457274'): _poses(6)}, cameras=False)
  with pytest.raises(base.AnnotationError, match='neither cameras.pkl nor cameras.json'):
    _build(manual_dir, str(tmp_path / 'data'))
  with open(os.path.join(manual_dir, 'cameras.json'), 'w') as f:
    json.dump({'S11': {'54138969': {'f': [1, 1], 'c': [0, 0]}}}, f)
  with pytest.raises(base.AnnotationError, match='no camera 60457274 of subject S11'):
    _build(manual_dir, str(tmp_path / 'data'))


# ---- the real mmpose frames ------------------------------------------------------------------


@pytest.fixture(scope='module')
def mmpose_build(realdata, tmp_path_factory):
  """The 4 real frames built from a manual_dir of links: the npz, cameras.pkl, S1, S5, S7, S8.
  -> (builder, {image name: (part, S)}, data_dir)."""
  manual_dir = str(tmp_path_factory.mktemp('manual'))
  for name in ('test_h36m_body3d.npz', 'cameras.pkl', 'S1', 'S5', 'S7', 'S8'):
    os.symlink(os.path.join(realdata, name), os.path.join(manual_dir, name))
  data_dir = str(tmp_path_factory.mktemp('data'))
  builder = _build(manual_dir, data_dir)
  npz = np.load(os.path.join(realdata, 'test_h36m_body3d.npz'))
  return (
    builder,
    {str(n): (p, s) for n, p, s in zip(npz['imgname'], npz['part'], npz['S'])},
    data_dir,
  )


def test_mmpose_layout_matches_the_npz(mmpose_build):
  builder, entries, _ = mmpose_build
  with open(os.path.join(realdata_dir(), 'h36m', 'mmpose', 'cameras.pkl'), 'rb') as f:
    cameras = pickle.load(f)
  records = _records(builder, 'train')  # S1, S5, S7, S8 are all training subjects
  assert len(records) == 4 and list(builder.info.splits) == ['train']
  for record in records:
    name = record['image_name'].decode()
    part, pose = entries[name]
    subject = name.split('/')[0]
    assert record['subject'].decode() == subject
    assert int(record['frame']) == int(name[-10:-4]) - 1  # mmpose numbers frames from 1
    np.testing.assert_allclose(record['eval_joints_3d'], pose[:, :3] * 1000, rtol=1e-5)
    # The stored 2D labels (the distorted projection) vs mmpose's `part` (the release's 2D
    # labels): within 0.25 px. A pinhole projection is up to 3.4 px off.
    part_mpii, _ = joints.MPII_FROM_H36M(part[:, :2], np.ones(17))
    assert np.abs(record['joints_2d'] - part_mpii).max() < 0.25, name
    pinhole = geometry.project(record['eval_joints_3d'], record['intrinsics'])
    assert np.linalg.norm(pinhole - part[:, :2], axis=-1).max() > 1.0, name
    camera = cameras[subject, name.split('/')[1].rsplit('.', 1)[1]]
    np.testing.assert_allclose(
      record['distortion'],
      np.concatenate([camera['k'][:2, 0], camera['p'][:, 0], camera['k'][2:, 0]]),
      rtol=1e-6,
    )
    # The person is inside the crop: every joint maps into it.
    size = features.decode_jpeg(record['image']).shape[0]
    in_crop = geometry.transform_points(
      geometry.invert_affine(record['crop_to_image'].astype(np.float64)), record['joints_2d']
    )
    assert np.all((in_crop > 0) & (in_crop < size - 1)), name
  actions = sorted(r['action'].decode() for r in records)
  assert actions == ['Directions', 'Greeting', 'SittingDown', 'WalkDog']


def test_mmpose_oracle_reproduces_the_labels(mmpose_build):
  """A perfect prediction (the stored 2D labels, with the lens distortion, and the ground-truth
  depth targets) through the evaluation path: undistortion, lifting and the joint maps give back
  the 15 directly predicted joints; the 17-joint figures keep the interpolated spine and nose, the
  reference's legacy figure its orthographic projection and fixed skeleton size."""
  ref = datasets.DatasetRef('human36m/small', 'train', mmpose_build[2])
  r = oracle_predictions(ref, projected_2d=False)
  np.testing.assert_allclose(scoring.label_scale(r), 1.0, rtol=1e-5)
  results = scoring.score(r, ref, 64, None)
  assert results['mpjpe_15j'] < 0.01 and results['pa_mpjpe_15j'] < 0.01, results
  assert 3 < results['mpjpe'] < 15 and 20 < results['mpjpe_legacy'] < 40, results  # 6.7, 29.4
  assert set(results['per_action']) == {'Directions', 'Greeting', 'SittingDown', 'WalkDog'}


def test_mmpose_left_is_the_persons_left(mmpose_build):
  """cross(l_hip - r_hip, pelvis -> thorax) is the body's front if the labels are right; the nose
  must lie in front of the neck. Swapped left/right labels would flip that front. Two of the
  frames face away from the camera and two face it, so the test covers both headings (viewed: S1
  shows the actor's back with r_* on the image right, S7 faces us with r_* on the image left)."""
  builder, _, _ = mmpose_build
  pose = np.stack([r['eval_joints_3d'] for r in _records(builder, 'train')])
  front = np.cross(
    pose[:, H36M('l_hip')] - pose[:, H36M('r_hip')],
    pose[:, H36M('thorax')] - pose[:, H36M('pelvis')],
  )
  nose = pose[:, H36M('nose')] - pose[:, H36M('thorax')]
  assert np.all(np.sum(front * nose, -1) > 0)
  assert np.sum(front[:, 2] < 0) == 2  # two frames face the camera (front towards -z)

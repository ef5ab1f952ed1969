"""The MPI-INF-3DHP builder: training videos and test frames from tiny fixtures, real frames."""

from __future__ import annotations

import os
import pickle

from conftest import oracle_predictions
from conftest import realdata_dir
import cv2
import h5py
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax import metrics
from hpe_jax.data import datasets
from hpe_jax.data import features
from hpe_jax.data.builders import base
from hpe_jax.data.builders import mpi_inf_3dhp as m3
from hpe_jax.evaluation import scoring

_SIZE = (160, 120)  # video / image width, height
UNIV_SCALE = 0.95  # the test fixtures' univ_annot3 / annot3
_INTRINSICS = np.array([200.0, 210.0, 79.5, 59.5])
_FRAMES = 12


def _poses(rng, count: int) -> np.ndarray:
  """(count, 28, 3) camera mm: random joints within +-500 mm of a point 4 m ahead."""
  return rng.uniform(-500, 500, (count, 28, 3)) + np.array([0, 0, 4000.0])


def _calibration(cameras) -> str:
  lines = ['Skeletool Camera Calibration File V1.0']
  for camera in cameras:
    k = np.eye(4)
    k[[0, 1, 0, 1], [0, 1, 2, 2]] = _INTRINSICS
    lines += [
      f'name          {camera}',
      '  sensor      10 10',
      '  size        160 120',
      '  animated    0',
      '  intrinsic   ' + ' '.join(f'{v:g}' for v in k.ravel()),
      '  extrinsic   ' + ' '.join(f'{v:g}' for v in np.eye(4).ravel()),
    ]
  return '\n'.join(lines) + '\n'


def _brightness(frame: int) -> int:
  return 20 * frame % 250 + 5


def _write_train(
  manual_dir: str, rng, file_cameras=(0, 1, 2), videos=(0, 2), calibration_cameras=(0, 1, 2)
) -> dict[int, np.ndarray]:
  """S1/Seq1 with annot.mat, camera.calibration and videos; returns {camera: (F, 28, 3) mm}."""
  folder = os.path.join(manual_dir, 'S1', 'Seq1')
  os.makedirs(os.path.join(folder, 'imageSequence'))
  poses = {c: _poses(rng, _FRAMES) for c in file_cameras}
  cell = lambda rows: np.array([[r] for r in rows] + [[None]], dtype=object)[:-1]
  scipy.io.savemat(
    os.path.join(folder, 'annot.mat'),
    {
      'annot2': cell(
        [geometry.project(poses[c], _INTRINSICS).reshape(_FRAMES, 56) for c in file_cameras]
      ),
      'annot3': cell([poses[c].reshape(_FRAMES, 84) for c in file_cameras]),
      'univ_annot3': cell([poses[c].reshape(_FRAMES, 84) * 0.9 for c in file_cameras]),
      'cameras': np.array([file_cameras]),
      'frames': np.arange(_FRAMES)[:, None],
    },
  )
  with open(os.path.join(folder, 'camera.calibration'), 'w') as f:
    f.write(_calibration(calibration_cameras))
  for camera in videos:
    writer = cv2.VideoWriter(
      os.path.join(folder, 'imageSequence', f'video_{camera}.avi'),
      cv2.VideoWriter_fourcc(*'MJPG'),
      25,
      _SIZE,
    )
    for frame in range(_FRAMES):
      writer.write(np.full((_SIZE[1], _SIZE[0], 3), _brightness(frame), np.uint8))
    writer.release()
  return poses


def _write_test(manual_dir: str, rng, valid=(1, 0, 1, 1)) -> np.ndarray:
  """TS1 (annot_data.mat as HDF5, jpgs) and cameras_test.pkl; returns (N, 17, 3) annot3 mm."""
  folder = os.path.join(manual_dir, 'mpi_inf_3dhp_test_set', 'TS1')
  os.makedirs(os.path.join(folder, 'imageSequence'))
  poses = _poses(rng, len(valid))[:, joints.MPI_INF_3DHP_TEST_JOINTS]
  with h5py.File(os.path.join(folder, 'annot_data.mat'), 'w') as f:
    f['annot2'] = geometry.project(poses, _INTRINSICS)[:, None]
    f['annot3'] = poses[:, None]
    f['univ_annot3'] = poses[:, None] * 0.9
    f['valid_frame'] = np.array(valid, np.float64)
    f['activity_annotation'] = np.full(len(valid), 3.0)
  for i in range(len(valid)):
    cv2.imwrite(
      os.path.join(folder, 'imageSequence', f'img_{i + 1:06d}.jpg'),
      np.full((_SIZE[1], _SIZE[0], 3), _brightness(i), np.uint8),
    )
  cameras = {
    f'TS{n}': {'f': _INTRINSICS[:2, None], 'c': _INTRINSICS[2:, None]} for n in m3.TEST_SEQUENCES
  }
  with open(os.path.join(manual_dir, 'cameras_test.pkl'), 'wb') as f:
    pickle.dump(cameras, f)
  return poses


def _records(builder, split: str) -> list[dict]:
  source = builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
  return [
    {k: v.decode() if isinstance(v, bytes) and k != 'image' else v for k, v in source[i].items()}
    for i in range(len(source))
  ]


def _check_projection(record: dict):
  """joints_2d is the projection of joints_3d, except the derived thorax: the midpoint of the
  projected shoulders is not the projection of their 3D midpoint."""
  uv = geometry.project(record['joints_3d'].astype(np.float64), record['intrinsics'])
  direct = np.arange(16) != joints.MPII16.index('thorax')
  assert record['joints_mask'].all()
  np.testing.assert_allclose(uv[direct], record['joints_2d'][direct], atol=1e-3)


def test_build_train_and_test(tmp_path):
  manual_dir = str(tmp_path / 'manual')
  rng = np.random.default_rng(0)
  train_poses = _write_train(manual_dir, rng)
  test_poses = _write_test(manual_dir, rng)
  config = m3.MpiInf3dhpConfig(name='tiny', crop_size=64, frame_stride=5, cameras=(0, 2))
  builder = m3.MpiInf3dhp(
    config=config, data_dir=str(tmp_path / 'tfds'), file_format='array_record'
  )
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))

  train = _records(builder, 'train')
  assert [(r['camera'], int(r['frame'])) for r in train] == [
    (c, f) for c in ('0', '2') for f in (0, 5, 10)
  ]
  for record in train:
    camera, frame = int(record['camera']), int(record['frame'])
    assert record['image_name'] == f'S1/Seq1/imageSequence/video_{camera}.avi@{frame:06d}'
    assert record['subject'] == 'S1' and record['action'] == '' and record['has_3d']
    np.testing.assert_allclose(record['intrinsics'], _INTRINSICS)
    expected, mask = joints.MPII_FROM_3DHP(train_poses[camera][frame], np.ones(28))
    assert mask.all() and np.array_equal(record['joints_mask'], mask)
    np.testing.assert_allclose(record['joints_3d'], expected, rtol=1e-6)
    univ, eval_mask = joints.H36M_FROM_3DHP(train_poses[camera][frame] * 0.9, np.ones(28))
    np.testing.assert_allclose(record['eval_joints_3d'], univ, rtol=1e-6)
    assert np.array_equal(record['eval_mask'], eval_mask)
    assert eval_mask[joints.H36M17.index('nose')] == 0 and eval_mask.sum() == 16
    _check_projection(record)
    # The crop shows the requested frame: its brightness, within JPEG/MJPEG error.
    crop = features.decode_jpeg(record['image'])
    assert abs(np.median(crop[24:40, 24:40]) - _brightness(frame)) < 4, (camera, frame)

  test = _records(builder, 'test')
  assert [int(r['frame']) for r in test] == [0, 1, 2, 3]
  for record in test:
    frame = int(record['frame'])
    assert record['subject'] == 'TS1' and record['action'] == 'sit_on_chair'
    _check_projection(record)
    pose28 = np.zeros((28, 3))
    pose28[list(joints.MPI_INF_3DHP_TEST_JOINTS)] = test_poses[frame]
    np.testing.assert_allclose(
      record['joints_3d'], joints.MPII_FROM_3DHP(pose28, np.ones(28))[0], rtol=1e-6
    )
    assert record['eval_mask'].sum() == (0 if frame == 1 else 16)  # frame 1 is invalid
    crop = features.decode_jpeg(record['image'])
    assert abs(np.median(crop[24:40, 24:40]) - _brightness(frame)) < 4
  assert builder.report['test']['counts']['invalid frames (kept, excluded from 3D metrics)'] == 1
  assert builder.report['train']['counts']['written'] == 6


def test_missing_video_frames_are_counted(tmp_path):
  manual_dir = str(tmp_path / 'manual')
  _write_train(manual_dir, np.random.default_rng(1), videos=(0,))
  # Camera 2's video is absent; camera 0's video ends before frame 15 (stride 5 asks for it).
  path = os.path.join(manual_dir, 'S1', 'Seq1', 'annot.mat')
  contents = scipy.io.loadmat(path)
  contents['frames'] = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 11])[:, None]
  scipy.io.savemat(path, {k: v for k, v in contents.items() if not k.startswith('__')})
  config = m3.MpiInf3dhpConfig(name='tiny', crop_size=64, frame_stride=5, cameras=(0, 2))
  builder = m3.MpiInf3dhp(
    config=config, data_dir=str(tmp_path / 'tfds'), file_format='array_record', allow_missing=True
  )
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  counts = builder.report['train']['counts']
  assert counts == {'written': 2, 'missing image': 3, 'unreadable image': 1}, counts


def test_bad_input(tmp_path):
  manual_dir = str(tmp_path / 'manual')
  _write_train(manual_dir, np.random.default_rng(2), calibration_cameras=(0, 1))
  with pytest.raises(base.AnnotationError, match=r'camera\.calibration has no camera 2'):
    m3.read_sequence(manual_dir, 1, 1, (0, 2), 5)
  path = os.path.join(manual_dir, 'S1', 'Seq1', 'annot.mat')
  contents = scipy.io.loadmat(path)
  contents['annot2'][1, 0] = np.zeros((_FRAMES, 50))
  scipy.io.savemat(path, {k: v for k, v in contents.items() if not k.startswith('__')})
  with pytest.raises(base.AnnotationError, match=r'annot\.mat: annot2\{2\} has shape'):
    m3.read_sequence(manual_dir, 1, 1, (0, 1), 5)
  os.remove(path)
  with pytest.raises(base.AnnotationError, match='annot.mat'):
    m3.read_sequence(manual_dir, 1, 1, (0,), 5)


@pytest.fixture
def real() -> str:
  path = realdata_dir()
  if path is None or not os.path.isdir(os.path.join(path, 'mpi_inf_3dhp')):
    pytest.skip('realdata is absent')
  return os.path.join(path, 'mpi_inf_3dhp')


def _real(real: str, split: str):
  """The real npz rows as 28-joint arrays: names, cameras (N, 4), uv (N, 28, 2), xyz mm, mask."""
  data = np.load(os.path.join(real, f'test_3dhp_{split}.npz'))
  with open(os.path.join(real, f'cameras_{split}.pkl'), 'rb') as f:
    cameras = pickle.load(f)
  names = [str(n) for n in data['imgname']]
  intrinsics = np.stack([np.ravel([cameras[n.rsplit('_', 1)[0]][k] for k in 'fc']) for n in names])
  uv, xyz = np.zeros((len(names), 28, 2)), np.zeros((len(names), 28, 3))
  # mmpose's 17 joints are the test joints in TEST_JOINTS order; S is in metres.
  uv[:, joints.MPI_INF_3DHP_TEST_JOINTS], xyz[:, joints.MPI_INF_3DHP_TEST_JOINTS] = (
    data['part'][..., :2],
    data['S'][..., :3] * 1000,
  )
  mask = np.zeros((len(names), 28))
  mask[:, list(joints.MPI_INF_3DHP_TEST_JOINTS)] = 1
  return names, intrinsics, uv, xyz, mask


@pytest.mark.parametrize('split', ['train', 'test'])
def test_real_projection_and_anatomy(real, split):
  names, intrinsics, uv, xyz, mask = _real(real, split)
  sel = list(joints.MPI_INF_3DHP_TEST_JOINTS)
  error = np.linalg.norm(geometry.project(xyz[:, sel], intrinsics) - uv[:, sel], axis=-1)
  assert error.max() < 2.5, error.max()  # mmpose's own files: up to 2.14 px
  if split == 'test':  # the published cameras roughly agree with mmpose's per-sequence ones
    published = np.stack([m3.TEST_INTRINSICS[m3.TEST_CAMERA[int(n[2])]] for n in names])
    error = np.linalg.norm(geometry.project(xyz[:, sel], published) - uv[:, sel], axis=-1)
    assert error.max() < 10.0, error.max()  # TS2: 8 px (its c differs by ~5 px)
  pose, pose_mask = joints.H36M_FROM_3DHP(xyz, mask)
  assert pose_mask.sum(-1).tolist() == [16] * len(names)
  at = lambda name: pose[:, joints.H36M17.index(name)]
  # Pelvis is mid-hips, the spine lies between pelvis and thorax, the head above the thorax.
  np.testing.assert_allclose(at('pelvis'), (at('l_hip') + at('r_hip')) / 2, atol=1e-3)
  up = at('thorax') - at('pelvis')
  assert np.all(np.sum((at('spine') - at('pelvis')) * up, -1) > 0)
  assert np.all(np.sum((at('thorax') - at('spine')) * up, -1) > 0)
  assert np.all(np.sum((at('head') - at('thorax')) * up, -1) > 0)
  # Left is left: knees bend backwards, so the hinge cross(thigh, shin) points to the person's
  # left (a rotated thigh can turn it sideways: on S4 a 13 deg bend has it ~perpendicular, so
  # only clear bends are asserted); the left shoulder lies on the same side as the left hip.
  across = at('l_hip') - at('r_hip')
  across /= np.linalg.norm(across, axis=-1, keepdims=True)
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  for side in 'lr':
    thigh, shin = at(f'{side}_knee') - at(f'{side}_hip'), at(f'{side}_ankle') - at(f'{side}_knee')
    hinge = np.cross(unit(thigh), unit(shin))
    bent = np.linalg.norm(hinge, axis=-1) > np.sin(np.deg2rad(15))
    assert np.all(np.sum(hinge * across, -1)[bent] > 0.05), (split, side)
  assert np.all(np.sum((at('l_shoulder') - at('r_shoulder')) * across, -1) > 0)


@pytest.fixture(scope='module')
def real_test_build(tmp_path_factory):
  """TS1 and TS2 laid out as the release has them (annot_data.mat as HDF5 over every frame up to
  the real one, imageSequence/img_%06d.jpg, mmpose's cameras_test.pkl) and built ('small').
  realdata has no univ_annot3: the fixture's is annot3 scaled by UNIV_SCALE about the camera.
  -> (builder, {sequence: (frame, part (17, 2), annot3 (17, 3) mm)}, data_dir)."""
  path = realdata_dir()
  if path is None or not os.path.isdir(os.path.join(path, 'mpi_inf_3dhp')):
    pytest.skip('realdata is absent')
  real = os.path.join(path, 'mpi_inf_3dhp')
  data = np.load(os.path.join(real, 'test_3dhp_test.npz'))
  manual_dir = tmp_path_factory.mktemp('manual')
  expected = {}
  for name, part, pose in zip(data['imgname'], data['part'], data['S']):
    sequence, number = str(name)[:-4].split('_')  # 'TS1_002001.jpg': frame 2001, 1-based
    frame = int(number) - 1
    folder = manual_dir / 'mpi_inf_3dhp_test_set' / sequence
    (folder / 'imageSequence').mkdir(parents=True)
    os.symlink(os.path.join(real, str(name)), folder / 'imageSequence' / f'img_{number}.jpg')
    fields = {
      'annot2': np.zeros((frame + 1, 1, 17, 2)),
      'annot3': np.zeros((frame + 1, 1, 17, 3)),
      'valid_frame': np.zeros(frame + 1),
      'activity_annotation': np.ones(frame + 1),
    }
    fields['annot2'][frame, 0], fields['annot3'][frame, 0] = part[:, :2], pose[:, :3] * 1000
    fields['valid_frame'][frame] = 1
    fields['univ_annot3'] = fields['annot3'] * UNIV_SCALE
    with h5py.File(folder / 'annot_data.mat', 'w') as f:
      for key, value in fields.items():
        f[key] = value
    expected[sequence] = (frame, part[:, :2], pose[:, :3] * 1000)
  os.symlink(os.path.join(real, 'cameras_test.pkl'), manual_dir / 'cameras_test.pkl')
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  builder = m3.MpiInf3dhp(
    config='small', data_dir=data_dir, file_format='array_record', allow_missing=True
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder, expected, data_dir


def test_real_test_frames_build_from_the_release_layout(real_test_build):
  """The frames without an image are counted skips. The built crops contain the person and the
  labels agree with the npz."""
  builder, expected, _ = real_test_build
  counts = builder.report['test']['counts']
  assert counts['written'] == 2
  frames = sum(frame + 1 for frame, _, _ in expected.values())
  assert counts['missing image'] == counts[m3._INVALID] == frames - 2
  # TS2's frame shows the person at the image's left edge: one joint lies outside the image.
  assert counts['joints outside the image (masked)'] == 1
  for record in _records(builder, 'test'):
    frame, part, pose = expected[record['subject']]
    assert int(record['frame']) == frame and record['eval_mask'].sum() == 16
    xy, _ = joints.MPII_FROM_3DHP(_test_joints_28(part), _test_mask_28())
    inside = record['joints_mask'] > 0
    np.testing.assert_allclose(record['joints_2d'][inside], xy[inside], atol=1e-3)
    # The 3D labels projected through the stored camera land on the 2D labels.
    direct = (np.arange(16) != joints.MPII16.index('thorax')) & inside
    uv = geometry.project(record['joints_3d'][direct].astype(np.float64), record['intrinsics'])
    error = np.linalg.norm(uv - record['joints_2d'][direct], axis=-1)
    assert error.mean() < 1.0 and error.max() < 2.5, error
    # The crop holds the person: every joint inside it, on image content (not the black border).
    crop = features.decode_jpeg(record['image'])
    in_crop = geometry.transform_points(
      geometry.invert_affine(record['crop_to_image'].astype(np.float64)), record['joints_2d']
    )
    assert np.all((in_crop[inside] > 0) & (in_crop[inside] < crop.shape[0] - 1))
    for x, y in np.round(in_crop[inside]).astype(int):
      assert crop[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3].max() > 20, (x, y)


def _test_joints_28(points17: np.ndarray) -> np.ndarray:
  full = np.zeros((28, points17.shape[-1]))
  full[list(joints.MPI_INF_3DHP_TEST_JOINTS)] = points17
  return full


def _test_mask_28() -> np.ndarray:
  return _test_joints_28(np.ones((17, 1)))[:, 0]


@pytest.mark.parametrize('projected_2d', [True, False])
def test_real_test_frames_oracle_reproduces_the_scored_labels(real_test_build, projected_2d):
  """A perfect prediction (ground-truth depth targets; as 2D the 3D labels' projection, or the
  released 2D labels, 1-2 px off that projection) through the evaluation path gives back the
  scored univ_annot3 labels: lifted in annot3's geometry, then brought to the scored size."""
  ref = datasets.DatasetRef('mpi_inf_3dhp/small', 'test', real_test_build[2])
  r = oracle_predictions(ref, projected_2d=projected_2d)
  np.testing.assert_allclose(scoring.label_scale(r), UNIV_SCALE, rtol=1e-5)
  pred = scoring.lift(r, geometry.transform_points(r['input_to_image'], r['pred_xy']))
  gt = r['eval_joints_3d'] - r['eval_joints_3d'][:, :1]
  # The 15 directly predicted joints of each frame, less TS2's wrists: they lie outside its
  # image, so they have no 2D label and their 3D label is not stored either.
  _, labelled = joints.H36M_FROM_MPII_DIRECT(r['joints_3d'], r['joints_mask'])
  counted = labelled * r['eval_mask']
  error = np.linalg.norm(pred - gt, axis=-1)[counted > 0]
  assert len(error) == 2 * 15 - 2
  if projected_2d:
    assert error.max() < 1.0, error
  else:  # measured: 0.44 mm mean, 3.5 mm at worst
    assert error.mean() < 1.0 and error.max() < 5.0, error
  # Without the rescaling every joint carries the subject-height mismatch.
  assert metrics.mpjpe(pred / UNIV_SCALE, gt, mask=counted) > 10


# The study's fork (ECE740F21T01/pytorch-pose-hg-3d), restated in numpy from its code:
# lib/data_utils/mpii3d_utils.py read_test_data, datasets/mpii3d.py, utils/eval.py.
_FORK_TEST_TO_MPII = [10, 9, 8, 11, 12, 13, 14, 15, 1, 0, 4, 3, 2, 5, 6, 7]
_FORK_MPII_TO_H36M = [6, 2, 1, 0, 3, 4, 5, 7, 8, 9, 9, 13, 14, 15, 12, 11, 10]
_FORK_EDGES_3D = [
  [3, 2], [2, 1], [1, 0], [0, 4], [4, 5], [5, 6], [0, 7], [7, 8], [8, 10],
  [16, 15], [15, 14], [14, 8], [8, 11], [11, 12], [12, 13],
]  # fmt: skip


def _fork_mpjpe(preds_3d, annot2, annot3, width, height):
  """preds_3d (N, 16, 3): get_preds_3d's x / 64, y / 64, depth; annot2 (N, 17, 2) px and annot3
  (N, 17, 3) mm of the test frames -> (the fork's MPJPE, frames counted)."""
  total, count = 0.0, 0
  for pred, xy, xyz in zip(preds_3d, annot2, annot3):
    joints_2d = xy[_FORK_TEST_TO_MPII]
    inside = (joints_2d[:, 0] < width) & (joints_2d[:, 0] >= 0)
    inside &= (joints_2d[:, 1] < height) & (joints_2d[:, 1] >= 0)
    if inside.sum() < len(joints_2d):  # read_test_data leaves the frame out
      continue
    joints_3d = xyz[_FORK_TEST_TO_MPII]
    gt = (joints_3d - joints_3d[6]).astype(np.float32)[_FORK_MPII_TO_H36M]
    if gt.sum() ** 2 > 0:
      p = (pred - pred[6])[_FORK_MPII_TO_H36M]  # convert_eval_format
      p[7] = (p[0] + p[8]) / 2
      p[9] = (p[8] + p[10]) / 2
      bones = sum(((p[a] - p[b]) ** 2).sum() ** 0.5 for a, b in _FORK_EDGES_3D)
      p = p * 4000 / bones
      total += (((gt - p) ** 2).sum(axis=1) ** 0.5).mean()
      count += 1
  return total / count, count


def test_fork_protocol_mpjpe_equals_the_forks_code_on_real_frames(real_test_build):
  """mpjpe_fork scores annot3 in the fork's layout, on the frames its preprocessing keeps (TS2's
  frame has a joint outside its image: left out), as the fork's numpy code does."""
  builder, expected, data_dir = real_test_build
  ref = datasets.DatasetRef('mpi_inf_3dhp/small', 'test', data_dir)
  records = _records(builder, 'test')
  r = oracle_predictions(ref, projected_2d=False)
  rng = np.random.default_rng(0)
  r['pred_xy'] = r['pred_xy'] + rng.normal(0, 2, r['pred_xy'].shape)
  r['pred_depth'] = r['pred_depth'] + rng.normal(0, 0.05, r['pred_depth'].shape)
  results = scoring.score(r, ref, 64, None)
  sequences = [records[i]['subject'] for i in r['index']]
  assert sorted(sequences) == ['TS1', 'TS2']
  annot2 = np.stack([expected[s][1] for s in sequences])
  annot3 = np.stack([expected[s][2] for s in sequences])
  preds_3d = np.concatenate([r['pred_xy'] / 64, r['pred_depth'][..., None]], axis=-1)
  reference, counted = _fork_mpjpe(preds_3d, annot2, annot3, 2048, 2048)
  assert counted == results['num_examples_fork'] == 1
  assert results['mpjpe_fork'] == pytest.approx(reference, rel=1e-5)
  # Our figure scores other labels (univ_annot3, nose unlabelled, spine interpolated).
  assert abs(results['mpjpe_legacy'] - results['mpjpe_fork']) > 1

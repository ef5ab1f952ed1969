"""The motion files of hpe-analyze: TRC and C3D round trips, BVH forward kinematics through the
independent reader bvhio, and the one-line errors."""

import bvhio
import c3d
import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax import joints
from hpe_jax.analysis import motion_files
from hpe_jax.data.synthetic import body

FPS = 30.0


def _moving_body(frames: int, seed: int = 0) -> np.ndarray:
  """(frames, 17, 3) H36M17 joints of one rigid person moving between two random poses while
  turning a full circle and walking, in the files' y-up frame. body.py's frame (x the person's
  left, y up, z forward) is that frame for a person facing the camera: their left is the camera's
  right, their forward is towards the camera."""
  rng = np.random.default_rng(seed)
  lengths, scale = body.sample_lengths(rng)
  start, end = body.sample_angles(rng), body.sample_angles(rng)
  out = []
  for w in np.linspace(0.0, 1.0, frames):
    angles = {k: tuple((1 - w) * np.array(start[k]) + w * np.array(end[k])) for k in start}
    pose = body.forward_kinematics(lengths, angles, scale)
    turn = body.global_rotation(360.0 * w, 15.0 * np.sin(6 * w), 0.0)
    out.append(pose.transformed(turn, np.array([800.0 * w, 900.0, -3500.0])).joints)
  return np.array(out)


def _random_poses(frames: int, seed: int = 1) -> np.ndarray:
  """Independent random people in random orientations (lying, upside down) with 20 mm noise: bone
  lengths and the angles between a joint's child bones vary from frame to frame."""
  rng = np.random.default_rng(seed)
  poses = [
    body.sample_pose(rng).transformed(
      body.global_rotation(*rng.uniform(-180, 180, 3)), rng.normal(0, 500, 3)
    )
    for _ in range(frames)
  ]
  return np.array([p.joints for p in poses]) + rng.normal(0, 20, (frames, 17, 3))


def _mpii(h36m: np.ndarray) -> np.ndarray:
  return joints.MPII_FROM_H36M(h36m, np.ones(h36m.shape[:2]))[0].astype(np.float64)


def _with_gaps(points: np.ndarray) -> np.ndarray:
  points = points.copy()
  points[0, 0] = np.nan  # the root's position before its first measurement
  points[5, 3] = np.nan
  points[6, -1] = np.nan  # the last marker: the TRC row must keep its three empty cells
  points[7] = np.nan  # nothing measured
  points[8, 2, 1] = np.nan  # one coordinate missing: the whole joint is missing
  return points


def _normalised(names, points) -> np.ndarray:
  """The joints rebuilt from the root, the observed bone directions and the median lengths."""
  parents = [
    names.index(p) if p else -1
    for p in {joints.MPII16: joints.MPII16_PARENTS, joints.H36M17: joints.H36M17_PARENTS}[names]
  ]
  out = points.copy()
  order = sorted(range(len(names)), key=lambda j: len(_chain(parents, j)))
  for j in order[1:]:
    bone = points[:, j] - points[:, parents[j]]
    length = np.nanmedian(np.linalg.norm(bone, axis=1))
    out[:, j] = out[:, parents[j]] + length * bone / np.linalg.norm(bone, axis=1, keepdims=True)
  return out


def _chain(parents, j):
  return [j] if parents[j] < 0 else [j] + _chain(parents, parents[j])


def _bvhio_joints(path, names, frames) -> np.ndarray:
  """(len(frames), J, 3) world positions of the named joints by bvhio's forward kinematics."""
  root = bvhio.readAsHierarchy(str(path))
  by_name = {joint.Name: joint for joint, _, _ in root.layout()}
  out = []
  for frame in frames:
    root.loadPose(int(frame))
    out.append([list(by_name[name].PositionWorld) for name in names])
  return np.array(out)


def test_trc_round_trip_keeps_gaps_and_opensim_layout(tmp_path):
  points = _with_gaps(_moving_body(20))
  time_s = 4.0 + np.arange(20) / FPS  # a track that starts late
  path = tmp_path / 'track.trc'
  motion_files.write_trc(
    path, joints.H36M17, points, time_s, FPS, frame_numbers=121 + np.arange(20)
  )

  names, read, read_time = motion_files.read_trc(path)
  assert names == joints.H36M17
  np.testing.assert_allclose(read_time, time_s, atol=5e-7)
  missing = np.isnan(points).any(axis=2)
  np.testing.assert_array_equal(np.isnan(read).any(axis=2), missing)
  np.testing.assert_array_equal(np.isnan(read).all(axis=2), missing)
  np.testing.assert_allclose(read[~missing], points[~missing], atol=5e-4)  # 0.001 mm cells

  lines = path.read_text().split('\n')
  assert lines[0].split('\t')[:3] == ['PathFileType', '4', '(X/Y/Z)']
  keys = 'DataRate CameraRate NumFrames NumMarkers Units OrigDataRate OrigDataStartFrame'
  assert lines[1].split('\t') == keys.split() + ['OrigNumFrames']
  assert lines[2].split('\t') == ['30', '30', '20', '17', 'mm', '30', '121', '20']
  assert lines[4].split('\t')[2:5] == ['X1', 'Y1', 'Z1'] and lines[5] == ''
  # OpenSim's TRCFileAdapter tokenises on tabs, keeping empty cells but not a trailing one, and
  # wants 2 + 3 x markers cells in every row (empty ones are its missing markers).
  for line in lines[6:-1]:
    cells = line.split('\t')
    assert len(cells[:-1] if cells[-1] == '' else cells) == 2 + 3 * 17, line
  assert lines[6 + 7].split('\t')[:2] == ['128', '4.233333']
  assert lines[-1] == ''


def test_c3d_round_trip_marks_missing_points_invalid(tmp_path):
  points = _with_gaps(_moving_body(20))
  path = tmp_path / 'track.c3d'
  motion_files.write_c3d(path, joints.MPII16, _mpii(points), FPS, first_frame=121)
  expected = _mpii(points)

  with open(path, 'rb') as f, pytest.warns(UserWarning, match='No analog data'):
    reader = c3d.Reader(f)
    assert tuple(label.strip() for label in reader.point_labels) == joints.MPII16
    assert reader.point_rate == FPS and reader.first_frame == 121
    assert reader.get('POINT:UNITS').string_value.strip() == 'mm'
    read = np.array([p for _, p, _ in reader.read_frames()])
  missing = np.isnan(expected).any(axis=2)
  np.testing.assert_array_equal(read[..., 3] == -1, missing)
  assert (read[missing, :3] == 0).all()  # not the coordinates of an earlier frame
  np.testing.assert_array_equal(read[~missing, :3], expected[~missing].astype(np.float32))


def test_bvh_of_a_rigid_moving_body_reproduces_its_joints(tmp_path):
  points = _moving_body(40)
  path = tmp_path / 'track.bvh'
  info = motion_files.write_bvh(path, joints.H36M17, points, FPS)

  assert info['frames'] == 40 and info['held_frames'] == 0
  assert info['max_error_mm'] < 0.01  # rigid: the normalised joints are the joints
  # bvhio computes in float32: about 0.005 mm more at 3.5 m from the origin.
  fk = _bvhio_joints(path, joints.H36M17, range(40))
  assert np.linalg.norm(fk - points, axis=2).max() < motion_files.FK_TOLERANCE_MM


@pytest.mark.parametrize('names', [joints.H36M17, joints.MPII16])
def test_bvh_of_noisy_poses_reproduces_the_normalised_joints(tmp_path, names):
  # Random poses and a moving MPII-16 body (its thorax, mid-shoulders, moves with the spine): bone
  # lengths and the angles between the pelvis's or thorax's child bones vary from frame to frame.
  points = np.concatenate([_random_poses(60), _moving_body(20)])
  points = points if names == joints.H36M17 else _mpii(points)
  path = tmp_path / 'track.bvh'
  info = motion_files.write_bvh(path, names, points, FPS)

  assert info['frames'] == 80 and info['max_error_mm'] < motion_files.FK_TOLERANCE_MM
  fk = _bvhio_joints(path, names, range(80))
  error = np.linalg.norm(fk - _normalised(names, points), axis=2)
  assert error.max() < motion_files.FK_TOLERANCE_MM


def test_bvh_is_exact_at_gimbal_lock_and_with_folded_bones(tmp_path):
  # The root's Euler order locks with the body on its side (roll +-90 degrees); a bone turned
  # 180 degrees from rest has no shortest arc (a forearm folded onto its upper arm, an upper arm
  # across the chest, opposite its T-pose direction).
  rng = np.random.default_rng(2)
  lengths, scale = body.sample_lengths(rng)
  pose = body.forward_kinematics(lengths, body.sample_angles(rng), scale)
  points = np.array(
    [
      pose.transformed(body.global_rotation(30.0, pitch, roll), np.zeros(3)).joints
      for roll in (90.0, -90.0, 0.0)
      for pitch in (90.0, -90.0, 0.0)
    ]
  )
  names = joints.H36M17
  shoulder, elbow, wrist = (names.index(f'l_{n}') for n in ('shoulder', 'elbow', 'wrist'))
  folded = points.copy()
  across = points[:, names.index('r_shoulder')] - points[:, shoulder]
  across /= np.linalg.norm(across, axis=1, keepdims=True)
  folded[:, elbow] = points[:, shoulder] + 280.0 * across
  folded[:, wrist] = points[:, shoulder] + 40.0 * across
  points = np.concatenate([points, folded])
  path = tmp_path / 'track.bvh'
  assert motion_files.write_bvh(path, names, points, FPS)['max_error_mm'] < 0.01
  fk = _bvhio_joints(path, names, range(len(points)))
  error = np.linalg.norm(fk - _normalised(names, points), axis=2)
  assert error.max() < motion_files.FK_TOLERANCE_MM


def test_bvh_holds_rotations_over_gaps(tmp_path):
  points = _with_gaps(_moving_body(20))
  path = tmp_path / 'track.bvh'
  info = motion_files.write_bvh(path, joints.H36M17, points, FPS)
  assert info == {'frames': 20, 'held_frames': 5, 'max_error_mm': pytest.approx(0, abs=0.01)}

  complete = ~np.isnan(points).any(axis=(1, 2))
  fk = _bvhio_joints(path, joints.H36M17, range(20))
  assert np.linalg.norm(fk - points, axis=2)[complete].max() < motion_files.FK_TOLERANCE_MM
  # Frame 0 has no pelvis: the root takes its first measured position.
  np.testing.assert_allclose(fk[0, 0], points[1, 0], atol=1e-3)
  # Frame 5 has no r_ankle: the knee keeps its rotation from frame 4, relative to the thigh.
  root = bvhio.readAsBvh(str(path)).Root
  knee = next(joint for joint, _, _ in root.layout() if joint.Name == 'r_knee')
  rotations = [list(key.Rotation) for key in knee.Keyframes]
  assert rotations[5] == rotations[4] != rotations[3]


def test_bvh_hierarchy(tmp_path):
  path = tmp_path / 'track.bvh'
  points = _moving_body(3)
  motion_files.write_bvh(path, joints.H36M17, points, FPS)
  bvh = bvhio.readAsBvh(str(path))
  assert bvh.FrameCount == 3 and bvh.FrameTime == pytest.approx(1 / FPS)
  layout = {joint.Name: joint for joint, _, _ in bvh.Root.layout()}
  branches = {
    f'{parent}_to_{child}'
    for parent, children in (
      ('pelvis', ('r_hip', 'l_hip', 'spine')),
      ('thorax', ('nose', 'l_shoulder', 'r_shoulder')),
    )
    for child in children
  }
  assert set(layout) == set(joints.H36M17) | branches
  assert bvh.Root.Name == 'pelvis' and bvh.Root.Channels[:3] == [
    'Xposition',
    'Yposition',
    'Zposition',
  ]
  assert all(len(joint.Channels) == 3 for name, joint in layout.items() if name != 'pelvis')
  assert all(np.allclose(list(layout[name].Offset), 0) for name in branches)
  # T-pose along the median lengths (the body is rigid: any frame's).
  thigh = np.linalg.norm(points[0, 2] - points[0, 1])
  np.testing.assert_allclose(list(layout['r_knee'].Offset), [0, -thigh, 0], atol=1e-3)
  forearm = np.linalg.norm(points[0, 13] - points[0, 12])
  np.testing.assert_allclose(list(layout['l_wrist'].Offset), [forearm, 0, 0], atol=1e-3)
  leaves = {name for name, joint in layout.items() if not joint.Children}
  assert leaves == {'r_ankle', 'l_ankle', 'head', 'l_wrist', 'r_wrist'}
  assert all(np.linalg.norm(list(layout[name].EndSite)) > 0 for name in leaves)


def _raises(match, call, *args, **kwargs):
  with pytest.raises(motion_files.MotionFileError, match=match) as info:
    call(*args, **kwargs)
  assert isinstance(info.value, errors.HpeError) and isinstance(info.value, ValueError)
  assert '\n' not in str(info.value)
  return str(info.value)


def test_bad_input_is_one_line_error(tmp_path):
  points = _moving_body(4)
  time_s = np.arange(4) / FPS
  path = tmp_path / 'out'
  for write, extra in (
    (motion_files.write_trc, (time_s, FPS)),
    (motion_files.write_c3d, (FPS,)),
    (motion_files.write_bvh, (FPS,)),
  ):
    _raises(r'shape \(4, 17\)', write, path, joints.H36M17, points[..., 0], *extra)
    _raises('16 names', write, path, joints.MPII16, points, *extra)
    missing_dir = tmp_path / 'no' / 'track'
    assert str(missing_dir) in _raises(
      'cannot write', write, missing_dir, joints.H36M17, points, *extra
    )
  _raises('fps', motion_files.write_bvh, path, joints.H36M17, points, 0.0)
  _raises(r'time_s .* \(4,\)', motion_files.write_trc, path, joints.H36M17, points, time_s[:3], FPS)
  gappy = points.copy()
  gappy[np.arange(4), np.arange(4)] = np.nan
  _raises(
    'no frame of the track has all 17', motion_files.write_bvh, path, joints.H36M17, gappy, FPS
  )
  names = tuple(f'marker{i}' for i in range(17))
  _raises('MPII-16 or Human3.6M-17', motion_files.write_bvh, path, names, points, FPS)
  motion_files.write_trc(path, names, gappy, time_s, FPS)  # any names and gaps: fine for markers

"""Joint angles, the up direction and repetition counting (hpe_jax.analysis): known answers on
constructed poses and signals, and a plain numpy restatement on the synthetic clip's true joints."""

from __future__ import annotations

import math
import pathlib

from conftest import REPO
import numpy as np
import pytest

from hpe_jax import joints
from hpe_jax.analysis import angles
from hpe_jax.analysis import repetitions
from hpe_jax.analysis import up

J = {name: i for i, name in enumerate(joints.MPII16)}


def standing() -> np.ndarray:
  """(16, 3) a person facing the camera in its frame (x right, y down, z away), mm: straight
  limbs, arms hanging, upright. The person's left is the camera's right (+x)."""
  p = np.zeros((16, 3))
  p[J['thorax']] = (0, -500, 0)
  p[J['upper_neck']] = (0, -600, 0)
  p[J['head_top']] = (0, -800, 0)
  for side, x in (('r', -100.0), ('l', 100.0)):
    p[J[f'{side}_hip']] = (x, 0, 0)
    p[J[f'{side}_knee']] = (x, 450, 0)
    p[J[f'{side}_ankle']] = (x, 900, 0)
    p[J[f'{side}_shoulder']] = (1.5 * x, -480, 0)
    p[J[f'{side}_elbow']] = (1.5 * x, -200, 0)
    p[J[f'{side}_wrist']] = (1.5 * x, 50, 0)
  return p


def one(pose: np.ndarray, name: str, up_vector=up.CAMERA_UP) -> float:
  return float(angles.compute(pose[None], up_vector)[name][0])


def test_standing_straight_is_zero_everywhere():
  values = angles.compute(standing()[None], up.CAMERA_UP)
  assert set(values) == set(angles.NAMES)
  for name, value in values.items():
    assert abs(value[0]) < 1e-9, name


def test_right_angles_are_90_with_their_signs():
  forward, backward = np.array([0, 0, -1.0]), np.array([0, 0, 1.0])  # the person faces -z
  p = standing()
  p[J['r_ankle']] = p[J['r_knee']] + 450 * backward  # shin back: the knee bent 90
  p[J['l_knee']] = p[J['l_hip']] + 450 * forward  # thigh forward: hip flexed 90
  p[J['l_ankle']] = p[J['l_knee']] + (0, 450, 0)
  p[J['r_wrist']] = p[J['r_elbow']] + 250 * forward
  p[J['l_elbow']] = p[J['l_shoulder']] + (280, 0, 0)  # arm out sideways
  p[J['l_wrist']] = p[J['l_elbow']] + (250, 0, 0)
  assert one(p, 'knee_flexion_right') == pytest.approx(90.0, abs=1e-9)
  assert one(p, 'hip_flexion_left') == pytest.approx(90.0, abs=1e-9)
  assert one(p, 'knee_flexion_left') == pytest.approx(90.0, abs=1e-9)  # shin down, thigh forward
  assert one(p, 'elbow_flexion_right') == pytest.approx(90.0, abs=1e-9)
  assert one(p, 'shoulder_elevation_left') == pytest.approx(90.0, abs=1e-9)
  assert one(p, 'elbow_flexion_left') == pytest.approx(0.0, abs=1e-9)
  p[J['r_knee']] = p[J['r_hip']] + 450 * np.array([0, math.cos(0.5), math.sin(0.5)])
  assert one(p, 'hip_flexion_right') == pytest.approx(-math.degrees(0.5))  # thigh behind
  p[J['r_elbow']] = p[J['r_shoulder']] + (0, -280, 0)  # straight up
  assert one(p, 'shoulder_elevation_right') == pytest.approx(180.0, abs=1e-9)


def test_trunk_and_neck_against_their_references():
  p = standing()
  lean = math.radians(30)
  p[J['thorax']] = (0, -500 * math.cos(lean), -500 * math.sin(lean))  # forward
  p[J['upper_neck']] = p[J['thorax']] * 1.2
  p[J['head_top']] = p[J['thorax']] * 1.6
  assert one(p, 'trunk_flexion') == pytest.approx(30.0)
  assert one(p, 'trunk_lateral_lean') == pytest.approx(0.0, abs=1e-9)
  assert one(p, 'neck_flexion') == pytest.approx(0.0, abs=1e-9)  # in line with the trunk
  assert one(p, 'hip_flexion_left') == pytest.approx(30.0)  # bending forward flexes the hips
  p = standing()
  p[J['thorax']] = (-500 * math.sin(lean), -500 * math.cos(lean), 0)  # towards the right (-x)
  assert one(p, 'trunk_lateral_lean') == pytest.approx(30.0)
  assert one(p, 'trunk_flexion') == pytest.approx(0.0, abs=1e-9)
  p = standing()
  p[J['head_top']] = p[J['upper_neck']] + 200 * np.array([0, -math.cos(0.7), -math.sin(0.7)])
  assert one(p, 'neck_flexion') == pytest.approx(math.degrees(0.7))
  # Against a tilted up (a camera pitched by 10 degrees), the upright trunk leans by that much.
  tilted = np.array([0.0, -math.cos(math.radians(10)), math.sin(math.radians(10))])
  assert one(standing(), 'trunk_flexion', tilted) == pytest.approx(10.0)


def test_angles_are_scale_free_and_gaps_stay_gaps():
  p = standing()
  p[J['r_ankle']] = p[J['r_knee']] + (0, 300, 300)
  a = angles.compute(np.stack([p, 3.7 * p]), up.CAMERA_UP)
  for name, values in a.items():
    assert values[0] == pytest.approx(values[1]), name
  p[J['r_knee']] = np.nan
  a = angles.compute(p[None], up.CAMERA_UP)
  gapped = {n for n, v in a.items() if np.isnan(v[0])}
  assert gapped == {'knee_flexion_right', 'hip_flexion_right'}


def test_two_d_angles_are_the_image_plane_angles():
  p = standing()
  p[J['r_ankle']] = p[J['r_knee']] + (450, 0, 0)  # sideways in the image: 90 degrees
  p[J['thorax']] = (-500 * math.sin(0.3), -500 * math.cos(0.3), 0)
  a = angles.compute(p[None, :, :2])
  assert a['knee_flexion_right'][0] == pytest.approx(90.0)
  assert a['trunk_lateral_lean'][0] == pytest.approx(math.degrees(0.3))
  assert a['trunk_flexion'][0] == pytest.approx(math.degrees(0.3))  # unsigned, in the image
  assert np.all([v[0] >= 0 for v in a.values()])


def test_unknown_angle_names_the_known_ones():
  with pytest.raises(angles.UnknownAngleError, match='knee_flexion_left'):
    angles.lookup('knee')


def _numpy_angles(pose: np.ndarray, up_vector: np.ndarray) -> dict[str, float]:
  """The registry's definitions restated for one (16, 3) pose: arccos for unsigned angles,
  explicit projections onto the sagittal or frontal plane for signed ones."""

  def vec(a, b):
    return pose[J[b]] - pose[J[a]]

  def unsigned(u, v):
    return math.degrees(math.acos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))

  def signed(v, zero, up_axis, left, plane):
    up_axis = up_axis / np.linalg.norm(up_axis)
    left = left - (left @ up_axis) * up_axis
    left /= np.linalg.norm(left)
    forward = np.cross(left, up_axis)
    positive = forward if plane == 'sagittal' else -left
    normal = left if plane == 'sagittal' else forward
    projected = v - (v @ normal) * normal  # into the plane
    magnitude = unsigned(projected, zero)
    return magnitude if projected @ positive >= 0 else -magnitude

  trunk = vec('pelvis', 'thorax')
  hips, shoulders = vec('r_hip', 'l_hip'), vec('r_shoulder', 'l_shoulder')
  out = {}
  for side, s in (('left', 'l'), ('right', 'r')):
    out[f'knee_flexion_{side}'] = unsigned(
      vec(f'{s}_hip', f'{s}_knee'), vec(f'{s}_knee', f'{s}_ankle')
    )
    out[f'elbow_flexion_{side}'] = unsigned(
      vec(f'{s}_shoulder', f'{s}_elbow'), vec(f'{s}_elbow', f'{s}_wrist')
    )
    out[f'shoulder_elevation_{side}'] = unsigned(vec(f'{s}_shoulder', f'{s}_elbow'), -trunk)
    out[f'hip_flexion_{side}'] = signed(
      vec(f'{s}_hip', f'{s}_knee'), -trunk, trunk, hips, 'sagittal'
    )
  out['trunk_flexion'] = signed(trunk, up_vector, up_vector, hips, 'sagittal')
  out['trunk_lateral_lean'] = signed(trunk, up_vector, up_vector, hips, 'frontal')
  out['neck_flexion'] = signed(vec('upper_neck', 'head_top'), trunk, trunk, shoulders, 'sagittal')
  return out


def test_every_angle_of_the_synthetic_clip_equals_numpy(walking_clip_labels):
  poses = walking_clip_labels['joints_3d'].reshape(-1, 16, 3).astype(np.float64)
  tilted = np.array([0.1, -1.0, 0.2]) / np.linalg.norm([0.1, -1.0, 0.2])
  got = angles.compute(poses, tilted)
  for i, pose in enumerate(poses):
    expected = _numpy_angles(pose, tilted)
    for name in angles.NAMES:
      assert got[name][i] == pytest.approx(expected[name], abs=1e-6), (i, name)


@pytest.fixture(scope='module')
def walking_clip_labels(tmp_path_factory):
  from hpe_jax.data.synthetic import clip

  path = tmp_path_factory.mktemp('clip') / 'walk.mp4'
  return clip.write_clip(str(path), frames=24, width=64, height=48, people=2, seed=3)


def test_y_up_rotation_of_the_camera_up_flips_y_and_z():
  rotation = up.y_up_rotation(up.CAMERA_UP)
  np.testing.assert_allclose(rotation @ [1.0, 2.0, 3.0], [1.0, -2.0, -3.0], atol=1e-12)
  tilted = np.array([0.0, -math.cos(0.2), math.sin(0.2)])
  np.testing.assert_allclose(up.y_up_rotation(tilted) @ tilted, [0, 1, 0], atol=1e-12)
  np.testing.assert_allclose(np.linalg.det(up.y_up_rotation(tilted)), 1.0)


def test_place_recovers_a_flat_pose_exactly():
  rel = standing()  # z = 0: weak perspective is exact
  rel = rel - rel[J['pelvis']]
  pelvis = np.array([300.0, 200.0, 4000.0])
  focal, size = 500.0, (640, 480)
  absolute = rel + pelvis
  uv = focal * absolute[:, :2] / absolute[:, 2:] + (size[0] / 2 - 0.5, size[1] / 2 - 0.5)
  placed = up.place(uv[None], rel[None], size, focal)
  np.testing.assert_allclose(placed[0], absolute, atol=1e-6)


def test_floor_up_finds_a_tilted_ground_and_refuses_a_narrow_one():
  rng = np.random.default_rng(0)
  true_up = np.array([0.0, -math.cos(0.25), math.sin(0.25)])  # a camera pitched down 14 deg
  x_axis = np.array([1.0, 0.0, 0.0])
  z_axis = np.cross(x_axis, true_up)
  frames = 200
  ground = (
    rng.uniform(-1500, 1500, (frames, 1)) * x_axis
    + rng.uniform(-1000, 1000, (frames, 1)) * z_axis
    + np.array([0, 1500, 5000.0])
  )
  track = np.full((frames, 16, 3), np.nan)
  track[:, J['r_ankle']] = ground + rng.normal(0, 5, (frames, 3))
  track[:, J['l_ankle']] = ground + 300 * true_up  # the swing foot, higher
  track[:, J['pelvis']] = ground + 900 * true_up
  found, facts = up.floor_up([track])
  assert math.degrees(math.acos(found @ true_up)) < 1.0
  assert facts['camera_tilt_deg'] == pytest.approx(math.degrees(0.25), abs=1.0)
  narrow = track.copy()
  narrow[:, J['r_ankle']] = np.array([0, 1500, 5000.0]) + rng.normal(0, 20, (frames, 3))
  with pytest.raises(up.FloorError, match='--up=camera'):
    up.floor_up([narrow])


def squats(reps: int, fps=30.0, seconds_per_rep=2.0, noise=2.0, seed=0):
  """Knee flexion of `reps` squats: raised cosines from 5 to 100 degrees, 0.5 s pauses."""
  rng = np.random.default_rng(seed)
  period = int(seconds_per_rep * fps)
  pause = int(0.5 * fps)
  one_rep = 5 + 95 * (1 - np.cos(np.linspace(0, 2 * np.pi, period))) / 2
  signal = np.concatenate([np.full(pause, 5.0)] + [np.r_[one_rep, np.full(pause, 5.0)]] * reps)
  return np.arange(len(signal)) / fps, signal + rng.normal(0, noise, len(signal))


def test_counts_each_squat_with_its_timing():
  time_s, angle = squats(4)
  found, facts = repetitions.count(time_s, angle)
  assert len(found) == 4
  assert facts['rest'] == 'low'
  for i, rep in enumerate(found):
    start = 0.5 + i * 2.5  # the rep's true start, from standing back to standing in 2 s
    assert rep.start_s == pytest.approx(start, abs=0.25)
    assert rep.end_s == pytest.approx(start + 2.0, abs=0.25)
    assert rep.max_deg == pytest.approx(100, abs=8)
    assert rep.min_deg < 10


def test_still_people_and_noise_count_none():
  rng = np.random.default_rng(1)
  time_s = np.arange(300) / 30.0
  assert repetitions.count(time_s, 10 + rng.normal(0, 4, 300))[0] == []
  assert repetitions.count(time_s, np.full(300, 50.0))[0] == []
  assert repetitions.count(time_s, np.full(300, np.nan))[0] == []


def test_gaps_do_not_break_a_rep_and_an_unfinished_one_is_not_counted():
  time_s, angle = squats(3, noise=0.5)
  angle[100:110] = np.nan  # a gap inside the second rep
  assert len(repetitions.count(time_s, angle)[0]) == 3
  cut = int((0.5 + 2 * 2.5 + 1.0) * 30)  # ends at the third rep's bottom
  assert len(repetitions.count(time_s[:cut], angle[:cut])[0]) == 2


def test_a_movement_resting_high_counts_dips():
  time_s, angle = squats(2, noise=0.5)
  found, facts = repetitions.count(time_s, 180 - angle)
  assert len(found) == 2 and facts['rest'] == 'high'


def test_the_guide_defines_every_angle_as_the_registry_does():
  guide = pathlib.Path(REPO) / 'docs' / 'movement_analysis.md'
  table = guide.read_text()
  for angle in angles.ANGLES:
    assert f'`{angle.name}`' in table and f'| {angle.definition} |' in table, angle.name

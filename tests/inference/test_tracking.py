"""Person tracks and One-Euro smoothing (hpe_jax.inference.tracking): numpy only, no jax."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpe_jax.inference import tracking

FPS = 30.0
SIDE = 200.0  # a person box's larger side, pixels: the 2D filters' scale


# --- iou ---------------------------------------------------------------------------------------


def test_iou_hand_computed():
  a = np.array([[0, 0, 10, 10], [100, 100, 4, 2]])
  b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [50, 50, 10, 10], [101, 100, 4, 2]])
  got = tracking.iou(a, b)
  assert got.shape == (2, 4)
  # Identical: 1. Shifted half a width: intersection 5 x 10 = 50, union 100 + 100 - 50 = 150.
  # Disjoint: 0. Shifted 1 px of 4: intersection 3 x 2 = 6, union 8 + 8 - 6 = 10.
  want = np.array([[1.0, 50 / 150, 0.0, 0.0], [0.0, 0.0, 0.0, 6 / 10]])
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
  np.testing.assert_allclose(tracking.iou(b, a), want.T, rtol=0, atol=1e-15)
  # Boxes that only touch share no area; empty sets give empty matrices.
  assert tracking.iou([[0, 0, 10, 10]], [[10, 0, 10, 10]])[0, 0] == 0
  assert tracking.iou(np.zeros((0, 4)), b).shape == (0, 4)


# --- OneEuroParams -----------------------------------------------------------------------------


@pytest.mark.parametrize(
  'kwargs, flag',
  [
    ({'min_cutoff': 0.0}, '--smooth_min_cutoff=0.0 must be positive (Hz)'),
    ({'d_cutoff': -1.0}, '--smooth_d_cutoff=-1.0 must be positive (Hz)'),
    ({'min_cutoff': math.nan}, '--smooth_min_cutoff=nan must be positive (Hz)'),
    ({'beta': -0.1}, '--smooth_beta=-0.1 must be zero or positive'),
  ],
)
def test_params_validated_with_flag_names(kwargs, flag):
  with pytest.raises(ValueError) as error:
    tracking.OneEuroParams(**kwargs)
  assert flag in str(error.value)


def test_params_beta_zero_allowed():
  assert tracking.OneEuroParams(beta=0.0).beta == 0.0


# --- OneEuroFilter against the paper's pseudo-code ---------------------------------------------


class _PaperLowPass:
  """Casiez et al. 2012, Appendix A, Algorithm 1: LowPassFilter, for one scalar."""

  def __init__(self):
    self.firsttime = True
    self.hatxprev = None

  def filter(self, x, alpha):
    if self.firsttime:
      self.firsttime = False
      self.hatxprev = x
    hatx = alpha * x + (1 - alpha) * self.hatxprev
    self.hatxprev = hatx
    return hatx


class _PaperOneEuro:
  """Algorithm 1's OneEuroFilter for one scalar, its rate taken from the timestamps, and the
  speed divided by `scale` before beta (the module's one addition)."""

  def __init__(self, mincutoff, beta, dcutoff):
    self.mincutoff, self.beta, self.dcutoff = mincutoff, beta, dcutoff
    self.firsttime = True
    self.xfilt, self.dxfilt = _PaperLowPass(), _PaperLowPass()
    self.tprev = None

  @staticmethod
  def alpha(rate, cutoff):
    tau = 1.0 / (2 * math.pi * cutoff)
    te = 1.0 / rate
    return 1.0 / (1.0 + tau / te)

  def filter(self, x, t, scale):
    rate = 1.0 if self.tprev is None else 1.0 / (t - self.tprev)
    self.tprev = t
    if self.firsttime:
      self.firsttime = False
      dx = 0.0
    else:
      dx = (x - self.xfilt.hatxprev) * rate
    edx = self.dxfilt.filter(dx, self.alpha(rate, self.dcutoff))
    cutoff = self.mincutoff + self.beta * abs(edx) / scale
    return self.xfilt.filter(x, self.alpha(rate, cutoff))


def test_filter_matches_paper_pseudo_code():
  rng = np.random.default_rng(0)
  n = 60
  times = np.cumsum(rng.uniform(0.005, 0.08, n))  # irregular frame times
  signal = 50 + np.cumsum(rng.normal(0, 3, (n, 16, 2)), axis=0)  # a random walk, pixels
  scales = rng.uniform(50, 300, n)
  params = tracking.OneEuroParams(min_cutoff=0.7, beta=2.0, d_cutoff=1.3)

  ours = tracking.OneEuroFilter(params)
  got = np.stack([ours(t, x, s) for t, x, s in zip(times, signal, scales)])

  paper = [[_PaperOneEuro(0.7, 2.0, 1.3) for _ in range(2)] for _ in range(16)]
  want = np.zeros_like(signal)
  for i in range(n):
    for j in range(16):
      for k in range(2):
        want[i, j, k] = paper[j][k].filter(float(signal[i, j, k]), float(times[i]), scales[i])

  np.testing.assert_array_equal(got[0], signal[0])  # the first sample passes unchanged
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  assert np.abs(got - signal).max() > 1  # it filtered something


def test_filter_errors_and_dtype():
  f = tracking.OneEuroFilter()
  out = f(0.0, np.zeros((16, 2), np.float32))
  assert out.dtype == np.float32 and f.shape == (16, 2)
  with pytest.raises(ValueError, match='timestamps must increase'):
    f(0.0, np.zeros((16, 2)))
  with pytest.raises(ValueError, match='timestamps must increase'):
    f(-0.1, np.zeros((16, 2)))
  with pytest.raises(ValueError, match='shape changed'):
    f(0.1, np.zeros((16, 3)))
  with pytest.raises(ValueError, match='scale must be positive'):
    f(0.1, np.zeros((16, 2)), scale=0.0)
  with pytest.raises(ValueError, match='non-finite'):
    f(0.1, np.full((16, 2), np.nan))
  f(0.1, np.ones((16, 2)))  # the errors left it usable


# --- the defaults on synthetic 30 fps joints ---------------------------------------------------


def _smooth(params, signal, times, scale):
  f = tracking.OneEuroFilter(params)
  return np.stack([f(t, x, scale) for t, x in zip(times, signal)])


def test_defaults_halve_the_noise_of_a_still_joint():
  times = np.arange(150) / FPS
  rng = np.random.default_rng(1)
  # Noise of 2% of the box side (4 px on a 200 px person), about a pose network's jitter.
  raw = np.array([320.0, 240.0]) + rng.normal(0, 0.02 * SIDE, (len(times), 16, 2))
  smoothed = _smooth(tracking.OneEuroParams(), raw, times, SIDE)
  after = times >= 1.0
  # Each coordinate's std over time, averaged over the joints.
  ratio = smoothed[after].std(axis=0).mean() / raw[after].std(axis=0).mean()
  # Measured 0.34 (OneEuroParams' docstring); a plain 1 Hz low-pass (beta = 0) reaches 0.30.
  assert ratio <= 0.5, ratio


def test_defaults_lag_little_at_speed():
  times = np.arange(150) / FPS
  speed = 1.0  # box sides per second
  raw = np.broadcast_to((100 + speed * SIDE * times)[:, None, None], (len(times), 16, 2))
  params = tracking.OneEuroParams()
  lag = (raw - _smooth(params, raw, times, SIDE))[times >= 1.0] / SIDE  # box sides
  # A plain low-pass at min_cutoff trails a ramp by speed * tau = speed / (2 pi min_cutoff) in the
  # steady state: 0.16 box sides here. The speed term should cut that at least in half.
  plain_lag = speed / (2 * math.pi * params.min_cutoff)
  assert lag.max() < 0.5 * plain_lag, (lag.max(), plain_lag)
  # And the filter has settled where the algebra says: lag L = speed * tau(fc) with the derivative
  # taken from the filtered x, dx = speed + L / dt, so fc = min_cutoff + beta * (speed + L / dt).
  dt = 1 / FPS
  fc = params.min_cutoff + params.beta * speed
  for _ in range(100):  # fixed-point iteration; converges in a few steps
    fc = params.min_cutoff + params.beta * speed * (1 + 1 / (2 * math.pi * fc * dt))
  np.testing.assert_allclose(lag, speed / (2 * math.pi * fc), rtol=1e-3)  # 0.047 box sides
  # With beta = 0 the same ramp trails by the plain low-pass's lag, so the bound is not loose.
  plain = (raw - _smooth(tracking.OneEuroParams(beta=0.0), raw, times, SIDE))[times >= 1.0] / SIDE
  np.testing.assert_allclose(plain, plain_lag, rtol=1e-2)


# --- Tracker -----------------------------------------------------------------------------------


def _pose(rng, joints_3d=True):
  pose = {'joints_2d': rng.uniform(0, 500, (16, 2)), 'score': 0.9}
  if joints_3d:
    pose['joints_3d'] = rng.uniform(-1000, 1000, (16, 3))
  return pose


def test_two_people_walking_past_each_other_keep_their_ids():
  tracker = tracking.Tracker()
  rng = np.random.default_rng(2)
  for i in range(120):
    # A walks right, B walks left, 2 px a frame; they cross at frame 60, B 30 px lower.
    a = (100 + 2 * i, 100, 100, 200)
    b = (340 - 2 * i, 130, 100, 200)
    flip = i % 3 == 1  # the detector's order says nothing about who is who
    boxes = [b, a] if flip else [a, b]
    ids, _ = tracker.update(i / FPS, boxes, [_pose(rng), _pose(rng)])
    assert ids == ([1, 0] if flip else [0, 1]), i


def test_missing_person_keeps_id_within_max_missing_s_and_new_id_after():
  tracker = tracking.Tracker(max_missing_s=0.5)
  rng = np.random.default_rng(3)
  box, other = (100, 100, 100, 200), (400, 100, 100, 200)
  t = 0.0
  assert tracker.update(t, [box, other], [_pose(rng), _pose(rng)])[0] == [0, 1]
  # Person 0 gone for 0.4 s (12 frames), person 1 still there: person 0 keeps id 0.
  for _ in range(12):
    t += 1 / FPS
    assert tracker.update(t, [other], [_pose(rng)])[0] == [1]
  t += 1 / FPS
  assert tracker.update(t, [box, other], [_pose(rng), _pose(rng)])[0] == [0, 1]
  # Gone for 0.6 s with no one in view: both come back as new people, ids never reused.
  t += 0.6
  assert tracker.update(t, [box, other], [_pose(rng), _pose(rng)])[0] == [2, 3]


def test_third_person_gets_id_2_and_two_people_never_share_a_track():
  tracker = tracking.Tracker()
  rng = np.random.default_rng(4)
  a, b, c = (100, 100, 100, 200), (400, 100, 100, 200), (700, 100, 100, 200)
  assert tracker.update(0.0, [a, b], [_pose(rng), _pose(rng)])[0] == [0, 1]
  assert tracker.update(0.1, [c, b, a], [_pose(rng) for _ in range(3)])[0] == [2, 1, 0]
  # Two boxes on track 0's: one takes it, the other is a new person.
  ids, _ = tracker.update(0.2, [a, a], [_pose(rng), _pose(rng)])
  assert ids == [0, 3]


def test_matching_is_greedy_highest_iou_first():
  tracker = tracking.Tracker(min_iou=0.3)
  rng = np.random.default_rng(5)
  assert tracker.update(0.0, [(100, 100, 100, 100)], [_pose(rng)])[0] == [0]
  # Person 0 overlaps track 0 by IoU 0.6, person 1 by 0.82: person 1 continues it. A box below
  # min_iou (person 2, IoU 0.11) starts a new track rather than steal one.
  boxes = [(125, 100, 100, 100), (110, 100, 100, 100), (180, 100, 100, 100)]
  assert np.all(tracking.iou(boxes, [(100, 100, 100, 100)])[:, 0] - [0.6, 0.818, 0.111] < 1e-3)
  assert tracker.update(0.1, boxes, [_pose(rng) for _ in boxes])[0] == [1, 0, 2]


def test_smoothing_filters_each_track_on_its_own():
  params = tracking.OneEuroParams(min_cutoff=0.5, beta=3.0)
  tracker = tracking.Tracker(params)
  rng = np.random.default_rng(6)
  n = 40
  times = np.cumsum(rng.uniform(0.02, 0.05, n))
  people = []
  for p in range(2):
    x0 = 100 + 300 * p
    boxes = [(x0 + 3 * i, 100, 80 + i, 160 - i) for i in range(n)]  # larger side changes: h, w
    poses = [_pose(rng) for _ in range(n)]
    people.append((boxes, poses))
  got = {0: [], 1: []}
  for i, t in enumerate(times):
    order = [1, 0] if i % 2 else [0, 1]
    boxes = [people[p][0][i] for p in order]
    poses = [people[p][1][i] for p in order]
    before = [{k: np.copy(v) for k, v in pose.items()} for pose in poses]
    ids, out = tracker.update(t, boxes, poses)
    assert ids == order
    for pose, copy in zip(poses, before):  # the inputs are left alone
      for k in copy:
        np.testing.assert_array_equal(pose[k], copy[k])
    for track, pose in zip(ids, out):
      assert pose['score'] == 0.9
      got[track].append(pose)
  for p, (boxes, poses) in enumerate(people):
    f2, f3 = tracking.OneEuroFilter(params), tracking.OneEuroFilter(params)
    for i, t in enumerate(times):
      want_2d = f2(t, poses[i]['joints_2d'], max(boxes[i][2:]))
      want_3d = f3(t, poses[i]['joints_3d'], 1000.0)
      np.testing.assert_array_equal(got[p][i]['joints_2d'], want_2d)
      np.testing.assert_array_equal(got[p][i]['joints_3d'], want_3d)
  assert not np.allclose(got[0][-1]['joints_2d'], people[0][1][-1]['joints_2d'])


def test_without_smoothing_poses_come_back_unchanged():
  tracker = tracking.Tracker()
  rng = np.random.default_rng(7)
  for i in range(5):
    poses = [_pose(rng), _pose(rng, joints_3d=False)]
    copies = [{k: np.copy(v) for k, v in pose.items()} for pose in poses]
    _, out = tracker.update(i / FPS, [(0, 0, 50, 100), (300, 0, 50, 100)], poses)
    for pose, copy in zip(out, copies):
      assert pose.keys() == copy.keys()
      for k in copy:
        np.testing.assert_array_equal(pose[k], copy[k])


def test_2d_only_poses_are_smoothed():
  tracker = tracking.Tracker(tracking.OneEuroParams())
  rng = np.random.default_rng(8)
  f = tracking.OneEuroFilter(tracking.OneEuroParams())
  for i in range(10):
    pose = _pose(rng, joints_3d=False)
    _, (out,) = tracker.update(i / FPS, [(10, 20, 60, 120)], [pose])
    assert out.keys() == {'joints_2d', 'score'}
    np.testing.assert_array_equal(out['joints_2d'], f(i / FPS, pose['joints_2d'], 120.0))


def test_tracker_errors_leave_it_unchanged():
  tracker = tracking.Tracker(tracking.OneEuroParams())
  rng = np.random.default_rng(9)
  box = (100, 100, 100, 200)
  tracker.update(1.0, [box], [_pose(rng)])
  with pytest.raises(ValueError, match='timestamps must increase'):
    tracker.update(0.9, [box], [_pose(rng)])
  with pytest.raises(ValueError, match='timestamps must increase'):
    tracker.update(1.0, [box], [_pose(rng)])
  bad = _pose(rng)
  bad['joints_2d'] = np.zeros((17, 2))
  with pytest.raises(ValueError, match='shape changed'):
    tracker.update(1.1, [box], [bad])
  with pytest.raises(ValueError, match='2 boxes but 1 poses'):
    tracker.update(1.1, [box, box], [_pose(rng)])
  with pytest.raises(ValueError, match='positive'):
    tracker.update(1.1, [(0, 0, 0, 10)], [_pose(rng)])
  with pytest.raises(ValueError, match='min_iou'):
    tracking.Tracker(min_iou=0.0)
  assert tracker.update(1.1, [box], [_pose(rng)])[0] == [0]
  assert tracker.update(1.2, [], [])[0] == []

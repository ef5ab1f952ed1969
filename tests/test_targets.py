"""Tests of hpe_jax.targets against plain-numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax import targets


def _np_pixel(v):
  return int(np.floor(v + 0.5))


def _np_heatmaps(xy, mask, height, width, sigma):
  out = np.zeros((xy.shape[0], height, width, xy.shape[1]), np.float32)
  for b in range(xy.shape[0]):
    for j in range(xy.shape[1]):
      x, y = xy[b, j]
      if mask[b, j] == 0 or not (0 <= _np_pixel(x) < width and 0 <= _np_pixel(y) < height):
        continue
      for r in range(height):
        for c in range(width):
          out[b, r, c, j] = np.exp(-((c - x) ** 2 + (r - y) ** 2) / (2 * sigma**2))
  return out


def test_input_heatmap_round_trip_and_centres():
  xy = np.array([[1.5, 0.0], [253.7, 12.25]], np.float32)
  np.testing.assert_allclose(
    targets.heatmap_to_input(targets.input_to_heatmap(xy, 4), 4), xy, atol=1e-5
  )
  # The centre of input pixels 0..3 (1.5) is the centre of heatmap pixel 0; the image edges match.
  np.testing.assert_allclose(
    targets.input_to_heatmap(jnp.array([1.5, -0.5, 255.5]), 4.0), [0.0, -0.5, 63.5]
  )


def test_inside_heatmap():
  xy = jnp.array(
    [[[0.0, 0.0], [-0.5, 3.0], [-0.51, 3.0], [63.49, 63.0], [63.5, 0.0], [10.0, 70.0]]]
  )
  np.testing.assert_array_equal(targets.inside_heatmap(xy, 64), [[1, 1, 0, 1, 0, 0]])
  np.testing.assert_array_equal(targets.inside_heatmap(xy, (71, 64)), [[1, 1, 0, 1, 0, 1]])


def test_gaussian_heatmaps_match_numpy():
  rng = np.random.default_rng(0)
  height, width, sigma = 12, 10, 1.5
  xy = rng.uniform(-2, 13, (3, 5, 2)).astype(np.float32)
  xy[0, 0] = (4, 7)  # an integer position: peak exactly 1 there
  mask = (rng.uniform(size=(3, 5)) < 0.7).astype(np.float32)
  mask[0, 0] = 1
  mask[2] = 0  # a sample without any target
  xy[1, 1], mask[1, 1] = np.nan, 0  # a missing joint stored as NaN
  got = np.asarray(
    jax.jit(targets.gaussian_heatmaps, static_argnums=(2,))(xy, mask, (height, width), sigma)
  )
  want = _np_heatmaps(xy, mask, height, width, sigma)
  assert got.shape == (3, height, width, 5) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert got[0, 7, 4, 0] == 1.0 and got[0, ..., 0].max() == 1.0
  assert not got[2].any()
  assert np.any(want.reshape(-1, 5).max(0) == 0)  # some masked or outside joint was tested


def test_gaussian_heatmaps_square_size():
  xy = jnp.array([[[3.0, 5.0]]])
  maps = targets.gaussian_heatmaps(xy, jnp.ones((1, 1)), 8, 2.0)
  np.testing.assert_allclose(
    maps, _np_heatmaps(np.asarray(xy), np.ones((1, 1)), 8, 8, 2.0), atol=1e-6
  )


def test_gather_at_known_values():
  maps = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
  xy = np.array(
    [[[1.2, 2.4], [4.6, -3.0], [2.5, 3.49]], [[0.0, 0.0], [-9.0, 9.0], [3.0, 1.0]]], np.float32
  )
  # (x, y) -> pixel (row y, column x), clipped: (1, 2), (4, 0) from (5, -3), (3, 3); then
  # (0, 0), (0, 3) from (-9, 9), (3, 1).
  rows_cols = [[(2, 1), (0, 4), (3, 3)], [(0, 0), (3, 0), (1, 3)]]
  want = [[maps[b, r, c, j] for j, (r, c) in enumerate(rc)] for b, rc in enumerate(rows_cols)]
  np.testing.assert_array_equal(jax.jit(targets.gather_at)(maps, xy), want)


def test_heatmap_peaks_subpixel_beats_argmax():
  rng = np.random.default_rng(1)
  size = 32
  xy = rng.uniform(3, size - 4, (4, 6, 2)).astype(np.float32)
  maps = targets.gaussian_heatmaps(xy, jnp.ones((4, 6)), size, 2.0)
  peaks = jax.jit(targets.heatmap_peaks, static_argnums=1)
  coarse, value = peaks(maps, False)
  fine, _ = peaks(maps, True)
  np.testing.assert_array_equal(coarse, np.floor(xy + 0.5))
  np.testing.assert_allclose(value, np.asarray(maps).reshape(4, -1, 6).max(1))
  coarse_error = np.abs(np.asarray(coarse) - xy).mean()
  fine_error = np.abs(np.asarray(fine) - xy).mean()
  assert fine_error < 0.8 * coarse_error
  # Every shift is a quarter pixel towards the true position (or none at an exact tie).
  step = np.asarray(fine - coarse)
  assert set(np.unique(step)) <= {-0.25, 0.0, 0.25}
  assert np.all(step * (xy - coarse) >= 0)


@pytest.mark.parametrize(
  'x, y, right, left, down, up, want',
  [
    (0, 0, 0.5, 0.0, 0.2, 0.0, (0.0, 0.0)),  # corner: no shift on either axis
    (4, 0, 0.5, 0.3, 0.2, 0.0, (0.25, 0.0)),  # top row: x shifts, y does not
    (7, 3, 0.0, 0.3, 0.2, 0.4, (0.0, -0.25)),  # right column: y shifts, x does not
    (3, 2, 0.3, 0.5, 0.4, 0.2, (-0.25, 0.25)),
  ],
)
def test_heatmap_peaks_known_shifts(x, y, right, left, down, up, want):
  height, width = 6, 8
  maps = np.zeros((1, height, width, 1), np.float32)
  maps[0, y, x, 0] = 1.0
  for dx, dy, value in ((1, 0, right), (-1, 0, left), (0, 1, down), (0, -1, up)):
    if 0 <= x + dx < width and 0 <= y + dy < height:
      maps[0, y + dy, x + dx, 0] = value
  xy, peak = targets.heatmap_peaks(jnp.asarray(maps))
  np.testing.assert_allclose(xy[0, 0], np.array([x, y]) + want)
  assert peak[0, 0] == 1.0

"""Heatmap targets and read-outs on the device (jax.numpy, jit-able, batched).

Pixel convention (as in geometry.py): integer coordinates are pixel centres, so pixel i covers
[i - 0.5, i + 0.5) and a joint's pixel is floor(x + 0.5). Coordinates are (x, y); maps are
(B, H, W, J), x indexing W and y indexing H. A map size is an int (square) or (height, width).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _height_width(size) -> tuple[int, int]:
  return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def _pixel(xy: jax.Array) -> jax.Array:
  """(..., 2) coordinates -> (..., 2) int32 index of the pixel that contains them."""
  return jnp.floor(xy + 0.5).astype(jnp.int32)


def input_to_heatmap(xy: jax.Array, stride) -> jax.Array:
  """(..., 2) input-image pixels -> heatmap pixels, `stride` input pixels per heatmap pixel.

  Pixel centres map to pixel centres: input pixel (stride - 1) / 2 is heatmap pixel 0.
  """
  return (xy + 0.5) / stride - 0.5


def heatmap_to_input(xy: jax.Array, stride) -> jax.Array:
  """(..., 2) heatmap pixels -> input-image pixels: the inverse of `input_to_heatmap`."""
  return (xy + 0.5) * stride - 0.5


def inside_heatmap(xy_hm: jax.Array, size) -> jax.Array:
  """(B, J, 2) heatmap pixels -> (B, J) float32: 1 where the joint's pixel lies on the map."""
  height, width = _height_width(size)
  pixel = _pixel(xy_hm)
  inside = (
    (pixel[..., 0] >= 0) & (pixel[..., 0] < width) & (pixel[..., 1] >= 0) & (pixel[..., 1] < height)
  )
  return inside.astype(jnp.float32)


def gaussian_heatmaps(xy_hm: jax.Array, mask: jax.Array, size, sigma: float) -> jax.Array:
  """Renders the target heatmaps.

  Args:
    xy_hm: (B, J, 2) joints in heatmap pixels (sub-pixel positions are kept).
    mask: (B, J) 0 for joints without a target.
    size: map size, int or (height, width).
    sigma: Gaussian standard deviation in heatmap pixels.
  Returns:
    (B, H, W, J) float32 exp(-|p - xy|^2 / (2 sigma^2)), peak 1 at the joint; all zeros for a
    joint with mask 0 or outside the map.
  """
  height, width = _height_width(size)
  xy_hm = xy_hm.astype(jnp.float32)
  keep = (mask * inside_heatmap(xy_hm, (height, width))).astype(jnp.float32)
  xy_hm = jnp.where(keep[..., None] > 0, xy_hm, 0.0)  # a NaN for a missing joint stays out

  # The Gaussian is separable: an outer product of two 1-D profiles costs O(H + W) exps per joint.
  def profile(n, coord):  # (B, J) -> (B, n, J)
    return jnp.exp(
      -jnp.square(jnp.arange(n, dtype=jnp.float32)[:, None] - coord[:, None, :]) / (2.0 * sigma**2)
    )

  gx = profile(width, xy_hm[..., 0]) * keep[:, None, :]
  return profile(height, xy_hm[..., 1])[:, :, None, :] * gx[:, None, :, :]


def gather_at(maps: jax.Array, xy_hm: jax.Array) -> jax.Array:
  """(B, H, W, J) maps, (B, J, 2) heatmap pixels -> (B, J): channel j read at joint j's pixel.

  The pixel is clipped to the map, so joints outside it read the nearest border value (mask them).
  """
  batch, height, width, num_joints = maps.shape
  pixel = _pixel(xy_hm)
  x = jnp.clip(pixel[..., 0], 0, width - 1)
  y = jnp.clip(pixel[..., 1], 0, height - 1)
  return maps[jnp.arange(batch)[:, None], y, x, jnp.arange(num_joints)[None, :]]


def heatmap_peaks(heatmaps: jax.Array, subpixel: bool = True) -> tuple[jax.Array, jax.Array]:
  """Joint locations from heatmaps.

  Args:
    heatmaps: (B, H, W, J).
    subpixel: shift the argmax a quarter pixel towards the higher of its two neighbours on each
      axis (Newell et al. / Xiao et al.); an axis at the map border is not shifted.
  Returns:
    xy_hm (B, J, 2) float32 heatmap pixels, and the peak values (B, J) float32.
  """
  batch, height, width, num_joints = heatmaps.shape
  flat = heatmaps.reshape(batch, height * width, num_joints).astype(jnp.float32)

  def at(index):  # (B, J) flat indices -> (B, J) values of each joint's own channel
    return jnp.take_along_axis(flat, index[:, None, :], axis=1)[:, 0]

  index = jnp.argmax(flat, axis=1)
  peak = at(index)
  x, y = index % width, index // width
  xy = jnp.stack([x, y], axis=-1).astype(jnp.float32)
  if subpixel:

    def shift(coord, n, step):  # step: flat-index distance between neighbours on this axis
      interior = (coord > 0) & (coord < n - 1)
      # Clip so border peaks read valid (unused) neighbours instead of wrapping to another row.
      higher = at(jnp.clip(index + step, 0, height * width - 1))
      lower = at(jnp.clip(index - step, 0, height * width - 1))
      return jnp.where(interior, 0.25 * jnp.sign(higher - lower), 0.0)

    xy = xy + jnp.stack([shift(x, width, 1), shift(y, height, width)], axis=-1)
  return xy, peak

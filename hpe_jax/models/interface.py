"""What goes into every model and how its outputs are read, shared by training and inference.

Models take ImageNet-normalised images (`normalize_images`) and give heatmaps and, with depth,
a depth map or a depth vector (hpe_jax/models/__init__.py); `predicted_depth` reads the depth of
each joint from either.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax import targets

# torchvision's ImageNet statistics, on the 0-255 scale of the uint8 images.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def normalize_images(images: jax.Array, dtype) -> jax.Array:
  """(B, H, W, 3) uint8 RGB -> ImageNet-normalised `dtype` (done on the device: 4x less to ship)."""
  return ((images.astype(jnp.float32) - IMAGENET_MEAN) / IMAGENET_STD).astype(dtype)


def predicted_depth(outputs: dict, xy_hm: jax.Array) -> jax.Array | None:
  """(B, J) depth in crop units: read from the depth map (B, h, w, J) at `xy_hm` (B, J, 2)
  heatmap pixels, or the regressed vector (B, J); None for a model without depth."""
  if 'depth_map' in outputs:
    return targets.gather_at(outputs['depth_map'], xy_hm)
  return outputs.get('depth')

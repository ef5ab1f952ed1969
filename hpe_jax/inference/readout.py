"""From a model's outputs to joints: the flip test, the heatmap readout and the jit-compiled
predict step that training's evaluation, `hpe-evaluate` and `hpe-predict` all run."""

from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp

from hpe_jax import joints
from hpe_jax import targets
from hpe_jax.models import interface
from hpe_jax.models import xla_cpu


def unmirror_outputs(outputs: dict) -> dict:
  """The model's outputs on a mirrored image -> outputs for the original image: maps flipped
  back along x (pixel centres map onto pixel centres, so this is exact) and left/right joints
  swapped. Depth is unchanged by a mirror in x. Maps are (..., h, w, J), depth vectors (..., J)."""
  unmirrored = {}
  for key, value in outputs.items():
    if value.ndim >= 4:  # heatmaps (S, B, h, w, J) and depth maps (B, h, w, J)
      value = value[..., ::-1, :]
    unmirrored[key] = value[..., joints.MPII_FLIP]
  return unmirrored


def predict_step(
  model_def: nnx.GraphDef,
  model_state,
  images: jax.Array,
  *,
  dtype,
  flip_test: bool = False,
  subpixel: bool = True,
  reference_readout: bool = False,
) -> dict:
  """Inference: heatmap peaks as input-image pixels `pred_xy` (B, J, 2), their heatmap values
  `pred_peak` (B, J), and `pred_depth` (B, J) in crop units read at those peaks (models with
  depth).

  flip_test: also run the mirrored images and average both predictions (`unmirror_outputs`).
  subpixel: refine each peak by a quarter pixel towards its higher neighbour
  (targets.heatmap_peaks); False: the plain argmax.
  reference_readout: for models with depth, also `legacy_xy` (B, J, 2) and `legacy_depth`
  (B, J) as the reference reads them for its MPJPE (xingyizhou/pytorch-pose-hg-3d
  `train_3d.py` and `utils/eval.py` `get_preds_3d`): heatmaps and depth maps averaged with the
  mirrored image's (the flip test, always) and the integer argmax of each heatmap, the depth read
  at that pixel. `metrics.mpjpe_legacy` is scored from these whatever flip_test and subpixel say.
  """
  model = nnx.merge(model_def, model_state)
  outputs = model(interface.normalize_images(images, dtype))
  outputs = {k: v for k, v in outputs.items() if k in ('heatmaps', 'depth_map', 'depth')}
  outputs['heatmaps'] = outputs['heatmaps'][-1]
  reference_readout = reference_readout and ('depth_map' in outputs or 'depth' in outputs)
  flipped = None
  if flip_test or reference_readout:
    mirrored = model(interface.normalize_images(images[:, :, ::-1], dtype))
    mirrored = unmirror_outputs(
      {k: mirrored[k][-1] if k == 'heatmaps' else mirrored[k] for k in outputs}
    )
    flipped = jax.tree.map(lambda a, b: (a + b) / 2, outputs, mirrored)
  prediction = _read_joints(flipped if flip_test else outputs, images.shape[1], subpixel)
  if reference_readout:
    legacy = _read_joints(flipped, images.shape[1], subpixel=False)
    prediction['legacy_xy'], prediction['legacy_depth'] = legacy['pred_xy'], legacy['pred_depth']
  return prediction


def _read_joints(outputs: dict, image_size: int, subpixel: bool) -> dict:
  """Outputs (heatmaps (B, h, w, J), a depth map or vector) -> pred_xy (B, J, 2) input pixels,
  pred_peak (B, J) and, with depth, pred_depth (B, J) read at the peaks."""
  heatmaps = outputs['heatmaps']
  xy_hm, peak = targets.heatmap_peaks(heatmaps, subpixel=subpixel)
  prediction = {
    'pred_xy': targets.heatmap_to_input(xy_hm, image_size / heatmaps.shape[1]),
    'pred_peak': peak,
  }
  depth = interface.predicted_depth(outputs, xy_hm)
  if depth is not None:
    prediction['pred_depth'] = depth
  return prediction


def jit_predict(eval_model_def: nnx.GraphDef, mesh, dtype, **options):
  """predict_step compiled for `mesh` (images split along 'data', prediction replicated);
  `options`: predict_step's flip_test, subpixel and reference_readout."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(
    functools.partial(predict_step, eval_model_def, dtype=jnp.dtype(dtype), **options),
    out_shardings=replicated,
    compiler_options=xla_cpu.compiler_options(mesh),
  )

"""A trained model ready for inference: load it from a run's workdir and predict on images.

  from hpe_jax import inference
  model = inference.load('runs/finetune')
  result = model.predict(image)                  # (H, W, 3) uint8 RGB, the whole image
  result = model.predict(image, box=(x, y, w, h))  # a person box, COCO-style pixels

Predictions run jit-compiled on every local device, with the run's evaluation options (flip test,
sub-pixel readout) unless overridden.
"""

from __future__ import annotations

import dataclasses
import math

from flax import nnx
import jax
import ml_collections
import numpy as np

from hpe_jax import default_config
from hpe_jax import errors
from hpe_jax import models
from hpe_jax.inference import pose_model
from hpe_jax.inference import readout
from hpe_jax.storage import checkpoint
from hpe_jax.storage import workdir as workdir_lib


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (workdir/config.json), with today's defaults filled in for
  fields added since (so older runs still load).

  Raises:
    CheckpointError: `workdir` has no readable config.json.
  """
  try:
    config = workdir_lib.read_config(workdir)
  except workdir_lib.WorkdirError as e:
    raise checkpoint.CheckpointError(str(e)) from e
  if config is None:
    raise checkpoint.CheckpointError(
      f'{workdir} is not a training run: it has no config.json. Pass the --workdir of a run '
      'made by hpe-train (or by hpe-import-weights).'
    )
  return config


@dataclasses.dataclass
class Predictor(pose_model.PoseModel):
  """A trained run's model ready for inference; make one with `load`."""

  config: ml_collections.ConfigDict  # the run's; config.eval sets the readout
  step: int  # the training step of the loaded weights
  eval_model_def: nnx.GraphDef
  model_state: nnx.State  # replicated over `mesh`
  mesh: jax.sharding.Mesh
  batch_size: int  # images per device call, a multiple of the device count
  # Also the reference's readout for the legacy MPJPE (`readout.predict_step`): for scoring.
  reference_readout: bool = False

  def __post_init__(self):
    self.predict_fn = readout.jit_predict(
      self.eval_model_def,
      self.mesh,
      self.config.model.dtype,
      flip_test=self.config.eval.flip_test,
      subpixel=self.config.eval.subpixel,
      reference_readout=self.reference_readout,
    )
    self.sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec('data'))

  def with_readout(
    self, *, flip_test: bool, subpixel: bool, reference_readout: bool = False
  ) -> Predictor:
    """The same weights with another readout (compiled on first use)."""
    config = ml_collections.ConfigDict(self.config.to_dict())
    config.eval.flip_test, config.eval.subpixel = flip_test, subpixel
    return dataclasses.replace(self, config=config, reference_readout=reference_readout)

  @property
  def image_size(self) -> int:
    return self.config.data.image_size

  @property
  def has_depth(self) -> bool:
    return bool(self.config.model.depth)

  def run_network(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """`predict_inputs` (`pose_model.PoseModel`'s) in device calls of at most batch_size."""
    parts = []
    for start in range(0, len(inputs), self.batch_size):
      chunk = inputs[start : start + self.batch_size]
      padded_size = self.padded_size(len(chunk))
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], padded_size - len(chunk), 0)])
      images = jax.device_put(padded.astype(np.uint8), self.sharding)
      parts.append(
        jax.tree.map(
          lambda a, n=len(chunk): np.asarray(a)[:n], self.predict_fn(self.model_state, images)
        )
      )
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def padded_size(self, count: int) -> int:
    """The images of a device call of `count` <= batch_size: a power of two times the device
    count, at most batch_size. A few compiled shapes, and one image is not run as a whole batch."""
    devices = self.mesh.size
    size = devices * 2 ** max(0, math.ceil(math.log2(-(-count // devices))))
    return min(size, self.batch_size)


def load(
  workdir: str,
  *,
  step: int | None = None,
  flip_test: bool | None = None,
  subpixel: bool | None = None,
  batch_size: int | None = None,
) -> Predictor:
  """Loads the model of a training run.

  Args:
    workdir: the run's directory (config.json and checkpoints/).
    step: a saved step; None: the latest; 'best': the best by the run's train.keep_best.
    flip_test, subpixel: override the run's config.eval options.
    batch_size: images per device call (rounded up to a multiple of the device count); None:
      the run's train.batch_size.
  Raises:
    CheckpointError: no run or no checkpoint there, or weights that do not fit the model.
  """
  config = load_run_config(workdir)
  try:
    best = default_config.describe(config).keep_best
  except errors.ConfigError as e:
    raise checkpoint.CheckpointError(f'{workdir}/config.json: {e}') from None
  _, step = checkpoint.find_checkpoint(
    workdir,
    step,
    hint='Train the run (hpe-train) or convert weights into it (hpe-import-weights) first.',
    best=best,
  )
  for key, value in (('flip_test', flip_test), ('subpixel', subpixel)):
    if value is not None:
      config.eval[key] = value
  try:  # shapes only: initialising real weights only to overwrite them is slow on a CPU
    model = nnx.eval_shape(
      lambda: models.create_model(
        config.model, with_depth=config.model.depth, rngs=nnx.Rngs(config.seed)
      )
    )
  except ValueError as e:
    raise checkpoint.CheckpointError(f'{workdir}/config.json: {e}') from e
  model.eval()
  eval_model_def, model_state = nnx.split(model)
  loaded, fresh = checkpoint.graft(workdir, nnx.to_pure_dict(model_state), step=step)
  if fresh:
    raise checkpoint.CheckpointError(
      f'{workdir}: the checkpoint lacks {fresh}; it does not '
      'hold the model its config.json describes'
    )
  nnx.replace_by_pure_dict(model_state, loaded)
  return create(config, eval_model_def, model_state, step=step, batch_size=batch_size)


def create(
  config: ml_collections.ConfigDict,
  eval_model_def: nnx.GraphDef,
  model_state: nnx.State,
  *,
  step: int = 0,
  batch_size: int | None = None,
) -> Predictor:
  """A predictor of a model in evaluation mode (`nnx.split` of it after `model.eval()`), on every
  local device: what `load` returns for a run's weights, and the benchmarks use for fresh ones.

  batch_size: images per device call (rounded up to a multiple of the device count); None: the
  config's train.batch_size.
  """
  mesh = jax.make_mesh(
    (jax.local_device_count(),),
    ('data',),
    axis_types=(jax.sharding.AxisType.Auto,),
    devices=jax.local_devices(),
  )
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  devices = jax.local_device_count()
  return Predictor(
    config=config,
    step=step,
    eval_model_def=eval_model_def,
    model_state=jax.device_put(model_state, replicated),
    mesh=mesh,
    batch_size=-(-(batch_size or config.train.batch_size) // devices) * devices,
  )

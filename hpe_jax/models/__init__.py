"""The model zoo: `create_model(config.model, with_depth=..., rngs=...)`.

Every model maps normalised images (B, H, W, 3) to a dict of float32 outputs:
- 'heatmaps': (S, B, H/4, W/4, J), one per supervised output (S = 1 for ResNets, the number of
  stacks for the hourglass), the last one final;
- with depth, ResNets: 'depth_map' (B, H/4, W/4, J), joint j's depth read from channel j at its
  heatmap location; the hourglass: 'depth' (B, J), regressed.
A model built with depth has exactly the parameters of one without, plus some whose path contains
'depth', so a 2D checkpoint grafts onto it. BatchNorm follows `model.train()` / `model.eval()`
(or `nnx.view(model, use_running_average=True)`); models hold no RNG state.
"""

from __future__ import annotations

from flax import nnx
import jax.numpy as jnp
import ml_collections

from hpe_jax.errors import ConfigError
from hpe_jax.models import hourglass
from hpe_jax.models import resnet

NAMES = tuple(resnet.ARCHITECTURES) + ('hourglass',)
DTYPES = ('float32', 'bfloat16')
DEFAULT_IMAGE_SIZE = 256  # model.image_size, when the config has none


def size_multiple(name: str) -> int:
  """Input sizes model `name` takes are multiples of this (its total downsampling)."""
  return hourglass.SIZE_MULTIPLE if name == 'hourglass' else resnet.SIZE_MULTIPLE


def check_config(model_config: ml_collections.ConfigDict, num_joints: int = 16) -> int:
  """Raises ConfigError (a ValueError) naming the first bad field; -> the image size."""
  if model_config.name not in NAMES:
    raise ConfigError(f'model.name={model_config.name!r} is not one of {", ".join(NAMES)}')
  if model_config.dtype not in DTYPES:
    raise ConfigError(f'model.dtype={model_config.dtype!r} is not one of {", ".join(DTYPES)}')
  image_size = model_config.get('image_size', DEFAULT_IMAGE_SIZE)
  minimums = {
    'width': 1,
    'head_channels': 1,
    'num_upsample': 0,
    'num_stacks': 1,
    'hourglass_features': 2,
  }
  ints = {f'model.{field}': (model_config[field], low) for field, low in minimums.items()}
  ints.update({'model.image_size': (image_size, 1), 'num_joints': (num_joints, 1)})
  for field, (value, low) in ints.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ConfigError(f'{field}={value!r} must be an int >= {low}')
  if model_config.hourglass_features % 2:
    raise ConfigError(
      f'model.hourglass_features={model_config.hourglass_features} must be even '
      '(residual blocks halve it)'
    )
  multiple = size_multiple(model_config.name)
  if image_size % multiple:
    raise ConfigError(
      f'model.image_size={image_size} must be a multiple of {multiple} for '
      f'model.name={model_config.name!r}'
    )
  return image_size


def create_model(
  model_config: ml_collections.ConfigDict, *, num_joints: int = 16, with_depth: bool, rngs: nnx.Rngs
) -> nnx.Module:
  """Builds the model `model_config` describes (fields: see configs and `check_config`), in training
  mode. Computes in `model_config.dtype`; parameters are float32."""
  image_size = check_config(model_config, num_joints)
  dtype = jnp.dtype(model_config.dtype)
  if model_config.name == 'hourglass':
    return hourglass.StackedHourglass(
      num_stacks=model_config.num_stacks,
      features=model_config.hourglass_features,
      num_joints=num_joints,
      with_depth=with_depth,
      image_size=image_size,
      dtype=dtype,
      rngs=rngs,
    )
  return resnet.PoseResNet(
    model_config.name,
    width=model_config.width,
    head_channels=model_config.head_channels,
    num_upsample=model_config.num_upsample,
    num_joints=num_joints,
    with_depth=with_depth,
    dtype=dtype,
    rngs=rngs,
  )

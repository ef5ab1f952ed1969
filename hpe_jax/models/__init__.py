"""The model zoo: `create_model(config.model, with_depth=..., rngs=...)`, backbones by name.

Every model maps normalised images (B, H, W, 3) to a dict of float32 outputs:
- 'heatmaps': (S, B, H/4, W/4, J), one per supervised output (S = 1 for ResNets, the number of
  stacks for the hourglass), the last one final;
- with depth, ResNets: 'depth_map' (B, H/4, W/4, J), joint j's depth read from channel j at its
  heatmap location; the hourglass: 'depth' (B, J), regressed.
A model built with depth has exactly the parameters of one without, plus some whose path contains
'depth', so a 2D checkpoint grafts onto it. BatchNorm follows `model.train()` / `model.eval()`
(or `nnx.view(model, use_running_average=True)`); models hold no RNG state.

A new backbone is a module here (its network, and SIZE_MULTIPLE: the input sizes it takes are
multiples of it) and one `Backbone` entry in BACKBONES below, under its model.name; its test goes
in tests/models/test_models.py. Everything else finds it by name: config validation, training,
inference, the benchmarks and the study. Its constructor takes the model config fields the entry
lists (new fields get a default in default_config.py) plus num_joints, with_depth, dtype and rngs,
and returns the outputs above. Optional: a multiply-adds count (the study's cost table scales by
it; 0 without), and a PyTorch peer in tools/lib/torch_peer.py's PEERS (tools/compare_peer.py).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Callable
from typing import Mapping
from typing import NamedTuple

from flax import nnx
import jax.numpy as jnp
import ml_collections

from hpe_jax.errors import ConfigError
from hpe_jax.models import hourglass
from hpe_jax.models import resnet

DTYPES = ('float32', 'bfloat16')
DEFAULT_IMAGE_SIZE = 256  # model.image_size, when the config has none


class Field(NamedTuple):
  """A model config field that a backbone's constructor takes: an int of at least `minimum`."""

  name: str
  minimum: int


@dataclasses.dataclass(frozen=True)
class Backbone:
  """What the code that builds, checks or measures a model needs to know of its backbone."""

  module: types.ModuleType  # defines it, and SIZE_MULTIPLE
  # (**arguments, num_joints=, with_depth=, dtype=, rngs=) -> the model, in training mode
  constructor: Callable[..., nnx.Module]
  fields: Mapping[str, Field]  # constructor keyword -> the model config field it takes
  # Constraints beyond `fields`' minimums: (model config) -> None, raising ConfigError.
  check: Callable[[ml_collections.ConfigDict], None] | None = None
  # (image_size=, **arguments, with_depth=) -> multiply-adds of one image's forward pass.
  multiply_adds: Callable[..., int] | None = None

  @property
  def size_multiple(self) -> int:
    """Input sizes it takes are multiples of this (its total downsampling)."""
    return self.module.SIZE_MULTIPLE


def _resnet(name: str) -> Backbone:
  return Backbone(
    module=resnet,
    constructor=functools.partial(resnet.PoseResNet, name),
    fields={
      'width': Field('width', 1),
      'head_channels': Field('head_channels', 1),
      'num_upsample': Field('num_upsample', 0),
    },
    multiply_adds=functools.partial(resnet.multiply_adds, name),
  )


BACKBONES = {
  **{name: _resnet(name) for name in resnet.ARCHITECTURES},
  'hourglass': Backbone(
    module=hourglass,
    constructor=hourglass.StackedHourglass,
    fields={
      'num_stacks': Field('num_stacks', 1),
      'features': Field('hourglass_features', 2),
      'image_size': Field('image_size', 1),
    },
    check=hourglass.check_config,
  ),
}
NAMES = tuple(BACKBONES)


def size_multiple(name: str) -> int:
  """Input sizes model `name` takes are multiples of this (its total downsampling)."""
  return BACKBONES[name].size_multiple


def _field_value(model_config: ml_collections.ConfigDict, field: str) -> int:
  if field == 'image_size':  # the one field a hand-made model config may lack
    return model_config.get('image_size', DEFAULT_IMAGE_SIZE)
  return model_config[field]


def check_config(model_config: ml_collections.ConfigDict, num_joints: int = 16) -> int:
  """Raises ConfigError (a ValueError) naming the first bad field; -> the image size.

  Checks every backbone's fields, whichever model.name is: a config stays valid when only its
  model.name changes (on a command line, in a study).
  """
  if model_config.name not in BACKBONES:
    raise ConfigError(f'model.name={model_config.name!r} is not one of {", ".join(NAMES)}')
  if model_config.dtype not in DTYPES:
    raise ConfigError(f'model.dtype={model_config.dtype!r} is not one of {", ".join(DTYPES)}')
  image_size = _field_value(model_config, 'image_size')
  ints = {
    f'model.{field.name}': (_field_value(model_config, field.name), field.minimum)
    for backbone in BACKBONES.values()
    for field in backbone.fields.values()
  }
  ints.update({'model.image_size': (image_size, 1), 'num_joints': (num_joints, 1)})
  for field, (value, low) in ints.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ConfigError(f'{field}={value!r} must be an int >= {low}')
  # Once each: entries may share a check, as the ResNets share their fields.
  for check in dict.fromkeys(backbone.check for backbone in BACKBONES.values() if backbone.check):
    check(model_config)
  multiple = size_multiple(model_config.name)
  if image_size % multiple:
    raise ConfigError(
      f'model.image_size={image_size} must be a multiple of {multiple} for '
      f'model.name={model_config.name!r}'
    )
  return image_size


def arguments(model_config: ml_collections.ConfigDict) -> dict:
  """The config's values of its backbone's fields, by constructor keyword: what the model is,
  besides num_joints, depth and dtype."""
  return {
    keyword: _field_value(model_config, field.name)
    for keyword, field in BACKBONES[model_config.name].fields.items()
  }


def create_model(
  model_config: ml_collections.ConfigDict, *, num_joints: int = 16, with_depth: bool, rngs: nnx.Rngs
) -> nnx.Module:
  """Builds the model `model_config` describes (fields: see configs and `check_config`), in training
  mode. Computes in `model_config.dtype`; parameters are float32."""
  check_config(model_config, num_joints)
  return BACKBONES[model_config.name].constructor(
    **arguments(model_config),
    num_joints=num_joints,
    with_depth=with_depth,
    dtype=jnp.dtype(model_config.dtype),
    rngs=rngs,
  )


def multiply_adds(model_config: ml_collections.ConfigDict, *, with_depth: bool = True) -> int:
  """Multiply-adds of one image's forward pass through the model's convolutions (16 joints, at
  model.image_size); 0 for a backbone that has no count."""
  count = BACKBONES[model_config.name].multiply_adds
  if count is None:
    return 0
  image_size = _field_value(model_config, 'image_size')
  return count(**{'image_size': image_size, **arguments(model_config)}, with_depth=with_depth)

"""A study config: its fields and their checks, which turn it into the study's axes."""

from __future__ import annotations

import dataclasses

import ml_collections

from hpe_jax import default_config
from hpe_jax import errors
from hpe_jax import models

# The fields of a study config, each with an example value for error messages.
FIELDS = {
  'pretraining': "('2d', 'none')",
  'backbones': "('resnet18', 'resnet50')",
  'datasets_2d': "('synthetic_humans',)",
  'datasets_3d': "('synthetic_humans', 'synthetic_humans/overhead')",
  'seeds': '(0, 1)',
  'steps_3d': '(500, 1000)',
  'pretrain_steps': '2000',
  'eval_datasets': "('human36m:test',)",
  'overrides': "{'model': {'width': 16}, 'train': {'batch_size': 16}}",
  'recipe': "'budgets' or 'paper'",
  'train_sizes': "(('mpii', 22246), ('human36m', 35832))",
  'imagenet': "'runs/imagenet/{backbone}.npz'",
  'published': "(('2d', 'resnet50', 'mpii', 'human36m', 'mpjpe_legacy', 64.5),)",
}
PRETRAINING_MODES = ('2d', 'none')
# How a study trains its runs. budgets: the quick configs at steps_3d (and pretrain_steps), the lr
# dropped after 80% of them; paper: the reference's recipe of every stage (configs/*.py:paper:
# pre-training; fine-tuning or 3D-only training in two stages), each run's steps from the
# train_sizes of its datasets by the reference's epoch rule (default_config.reference_schedule).
RECIPES = ('budgets', 'paper')
# Config fields that every run's command sets from the study's axes; `overrides` may not.
AXIS_FIELDS = (
  'seed',
  'init_from',
  'model.name',
  'data.train_2d',
  'data.train_3d',
  'data.eval',
  'train.num_steps',
  'train.lr_drop_steps',
)
# Fields the paper recipe also sets for each run.
PAPER_FIELDS = ('train.eval_every', 'model.init', 'init_step')


class StudyError(errors.HpeError, ValueError):
  """A study cannot go on as asked; the message names the field or run, and the fix."""


@dataclasses.dataclass(frozen=True)
class Axes:
  """A checked study config (see FIELDS); overrides are ('config.field', flag value) pairs."""

  pretraining: tuple[str, ...]
  backbones: tuple[str, ...]
  datasets_2d: tuple[str, ...]
  datasets_3d: tuple[str, ...]
  seeds: tuple[int, ...]
  steps_3d: tuple[int, ...]
  pretrain_steps: int
  eval_datasets: tuple[str, ...]
  overrides: tuple[tuple[str, str], ...]
  recipe: str = 'budgets'
  train_sizes: tuple[tuple[str, int], ...] = ()  # (dataset entry, training samples), paper
  imagenet: str = ''  # model.init of runs that start from ImageNet weights, '{backbone}' filled
  # (pretraining, backbone, dataset_2d, dataset_3d, metric, value): figures the paper publishes
  published: tuple[tuple[str, str, str, str, str, float], ...] = ()

  def train_size(self, dataset: str) -> int:
    return dict(self.train_sizes)[dataset]


def _items(
  config: ml_collections.ConfigDict, field: str, kind: type, *, required: bool = True
) -> tuple:
  """A tuple field (a bare value counts as a 1-tuple) whose items are distinct `kind`s."""
  value = config.get(field, ())
  items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
  if required and not items:
    raise StudyError(f'study field {field} is empty; set it, e.g. {field} = {FIELDS[field]}')
  for item in items:
    if isinstance(item, bool) or not isinstance(item, kind):
      raise StudyError(
        f'study field {field}={value!r}: each item must be a {kind.__name__}, '
        f'e.g. {field} = {FIELDS[field]}'
      )
  if len(set(items)) < len(items):
    raise StudyError(f'study field {field}={value!r} lists an item twice; list each once')
  return items


def flag_value(value) -> str:
  """A config value as `--config.field=` parses it back ([1, 2] -> '(1, 2)')."""
  return str(tuple(value) if isinstance(value, list) else value)


def check_config(config: ml_collections.ConfigDict) -> Axes:
  """Checks a study config's fields (see FIELDS) -> its axes; raises StudyError naming the field
  and the fix."""
  unknown = sorted(set(config.keys()) - set(FIELDS))
  if unknown:
    raise StudyError(
      f'unknown study field(s) {", ".join(unknown)}; a study config has {", ".join(FIELDS)}'
    )
  pretraining = _items(config, 'pretraining', str)
  for mode in pretraining:
    if mode not in PRETRAINING_MODES:
      raise StudyError(
        f"study field pretraining has {mode!r}: use '2d' (pre-train on 2D data, "
        "then fine-tune) and/or 'none' (3D-only training)"
      )
  backbones = _items(config, 'backbones', str)
  for name in backbones:
    if name not in models.NAMES:
      raise StudyError(
        f'study field backbones has {name!r}, which is not a model.name; use '
        f'{", ".join(models.NAMES)}'
      )
  with_2d = '2d' in pretraining
  datasets_2d = _items(config, 'datasets_2d', str, required=with_2d)
  datasets_3d = _items(config, 'datasets_3d', str)
  for name in datasets_3d:
    if ',' in name:
      raise StudyError(
        f'study field datasets_3d has {name!r}, several sources in one entry; a '
        'cell is evaluated on its own training dataset: list one dataset per entry'
      )
  seeds = _items(config, 'seeds', int)
  recipe = config.get('recipe', 'budgets')
  if recipe not in RECIPES:
    raise StudyError(f'study field recipe={recipe!r}: use {FIELDS["recipe"]}')
  paper = recipe == 'paper'
  steps_3d = _items(config, 'steps_3d', int, required=not paper)
  pretrain_steps = config.get('pretrain_steps', 0)
  if paper and (steps_3d or pretrain_steps):
    raise StudyError(
      "study field recipe='paper' sets every run's steps from train_sizes by the reference's "
      'epochs: remove steps_3d and pretrain_steps'
    )
  if not paper and config.get('train_sizes'):
    raise StudyError(
      "study field train_sizes counts epochs for recipe='paper' only; add recipe = 'paper' "
      'or remove train_sizes (a budgets study trains steps_3d)'
    )
  train_sizes = _train_sizes(config, (*datasets_2d, *datasets_3d) if paper else ())
  for field, values in (
    ('steps_3d', steps_3d),
    ('pretrain_steps', (pretrain_steps,) if with_2d and not paper else ()),
  ):
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
      raise StudyError(
        f'study field {field}={config.get(field)!r} must hold positive ints, e.g. '
        f'{field} = {FIELDS[field]}'
      )
  eval_datasets = _items(config, 'eval_datasets', str, required=False)
  overrides = default_config.flatten(config.get('overrides', {}))
  known = default_config.flatten(default_config.base_config().to_dict())
  imagenet = config.get('imagenet', '')
  if not isinstance(imagenet, str) or (imagenet and '{backbone}' not in imagenet):
    raise StudyError(
      f'study field imagenet={imagenet!r}: give a path with {{backbone}} in it, e.g. '
      f'imagenet = {FIELDS["imagenet"]}, or leave it out'
    )
  published = _published(config, pretraining, backbones, datasets_2d, datasets_3d)
  for key in overrides:
    if key in AXIS_FIELDS or (paper and key in PAPER_FIELDS) or (imagenet and key == 'model.init'):
      raise StudyError(
        f'study field overrides sets {key}, which the study sets for each run '
        'from its axes; remove it from overrides'
      )
    if key not in known:
      raise StudyError(
        f'study field overrides sets {key}, which is not a config field (see '
        'hpe_jax/default_config.py); nest fields as '
        f'overrides = {FIELDS["overrides"]}'
      )
  return Axes(
    pretraining,
    backbones,
    datasets_2d,
    datasets_3d,
    seeds,
    steps_3d,
    pretrain_steps if with_2d and not paper else 0,
    eval_datasets,
    tuple((k, flag_value(v)) for k, v in overrides.items()),
    recipe,
    train_sizes,
    imagenet,
    published,
  )


def _train_sizes(config: ml_collections.ConfigDict, needed: tuple[str, ...]) -> tuple:
  """train_sizes as (dataset entry, count) pairs; every `needed` entry must have a positive
  int."""
  value = config.get('train_sizes', {})
  sizes = dict(value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value)
  for name in needed:
    count = sizes.get(name)
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
      raise StudyError(
        f"study field train_sizes has no positive count for {name!r}; recipe='paper' counts "
        "each run's epochs on its datasets' training samples, e.g. "
        f'train_sizes = {FIELDS["train_sizes"]}'
      )
  return tuple((name, sizes[name]) for name in needed)


def _published(config, pretraining, backbones, datasets_2d, datasets_3d) -> tuple:
  """published as checked 6-tuples naming cells of the study."""
  entries = tuple(tuple(entry) for entry in config.get('published', ()))
  for entry in entries:
    ok = len(entry) == 6 and isinstance(entry[5], (int, float)) and not isinstance(entry[5], bool)
    mode, backbone, dataset_2d, dataset_3d = entry[:4] if ok else ('',) * 4
    ok = ok and mode in pretraining and backbone in backbones and dataset_3d in datasets_3d
    ok = ok and (dataset_2d in datasets_2d if mode == '2d' else dataset_2d == '')
    if not ok:
      raise StudyError(
        f'study field published has {entry!r}: give (pretraining, backbone, dataset_2d '
        "('' for 'none'), dataset_3d, metric, value) of a cell of the study, e.g. "
        f'published = {FIELDS["published"]}'
      )
  return tuple(entry[:5] + (float(entry[5]),) for entry in entries)

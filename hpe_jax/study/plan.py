"""The plan of a study: its training runs, its cells, and their commands.

Every combination of pretraining mode, backbone, 2D dataset (2D-pretrained cells only), 3D
dataset X, seed and (recipe 'budgets') 3D step budget is a cell: configs/finetune.py started from
a configs/pretrain.py run (one per backbone, 2D dataset and seed, shared by its cells), or
configs/scratch3d.py. With recipe 'paper' every run follows the reference's recipe: pre-training
`pretrain.py:paper`, and each cell's 3D training in two stages (`finetune.py:paper,stage=2` then
`stage=3`, or `scratch3d.py:paper,stage=2` then `stage=3`), steps counted in the reference's
epochs of the train_sizes. Each cell is evaluated on its own X and on every other dataset of the
study.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

import ml_collections

from hpe_jax import default_config
from hpe_jax import models
from hpe_jax.data import datasets
from hpe_jax.study import spec

# Share of a run's steps after which its learning rate drops, as in the configs' quick presets.
LR_DROP_FRACTION = 0.8
CONFIGS_DIR = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'configs'
)
DATA_DIR_FIELD = 'data.data_dir'


def _display_path(path: str) -> str:
  """A path relative to the working directory when it lies below it (shorter commands)."""
  relative = os.path.relpath(path)
  return path if relative.startswith('..') else relative


def _slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9.-]+', '_', text).strip('_')


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a study."""

  workdir: str
  config_file: str  # configs/*.py
  flags: tuple[tuple[str, str], ...]  # (config field, value) pairs of its --config.* flags
  backbone: str
  num_steps: int
  description: str  # for progress lines
  batch_size: int  # images per step
  # Multiply-adds of its model's forward pass per image (models.multiply_adds; 0 where not
  # counted): with batch_size, what one step costs.
  multiply_adds: int
  # Where its datasets are built ('': the configs' default). Not in its identity: the same data
  # elsewhere makes the same run.
  data_dir: str = ''
  after: str = ''  # the workdir of the run it starts from (init_from), trained first
  recipe_stage: str = ''  # '2' or '3' for the stages of a recipe 'paper' cell

  @property
  def images(self) -> int:
    return self.num_steps * self.batch_size

  def train_command(self, python: str = 'python') -> list[str]:
    data_dir = [f'--config.{DATA_DIR_FIELD}={self.data_dir}'] if self.data_dir else []
    return (
      [python, '-m', 'hpe_jax.commands.train', f'--config={self.config_file}']
      + [f'--workdir={self.workdir}']
      + [f'--config.{k}={v}' for k, v in self.flags]
      + data_dir
    )

  def identity(self) -> dict:
    """What must not change between invocations of a study for its runs to be reused."""
    flags = [f'{k}={os.path.abspath(v) if k == "init_from" else v}' for k, v in self.flags]
    return {'config': os.path.basename(self.config_file), 'flags': flags}


def comparable_identity(identity: dict) -> dict:
  """A recorded identity without the data dir, which studies recorded before it was a flag."""
  flags = [flag for flag in identity.get('flags', ()) if not flag.startswith(DATA_DIR_FIELD + '=')]
  return {**identity, 'flags': flags}


@dataclasses.dataclass(frozen=True)
class Cell:
  """One combination of the study's axes: a run and the datasets it is evaluated on."""

  pretraining: str  # '2d' or 'none'
  backbone: str
  dataset_2d: str  # '' for 3D-only cells
  dataset_3d: str  # X, as the study names it
  seed: int
  steps: int  # 3D training steps, over every stage
  run: Run  # the last (or only) stage: the trained model
  pretrain: Run | None
  evals: tuple[str, ...]  # resolved 'name:split' datasets, X's own evaluation split first
  label: str  # 'resnet18 2d-pretrained on X, seed 0'
  earlier: tuple[Run, ...] = ()  # its stages before `run`, in order (recipe 'paper': stage 2)

  @property
  def stages(self) -> tuple[Run, ...]:
    """Its own runs, in training order; the last one is `run`."""
    return (*self.earlier, self.run)

  def eval_command(self, datasets: list[str], python: str = 'python') -> list[str]:
    data_dir = [f'--data_dir={self.run.data_dir}'] if self.run.data_dir else []
    return (
      [python, '-m', 'hpe_jax.commands.evaluate', f'--workdir={self.run.workdir}']
      + [f'--dataset={name}' for name in datasets]
      + data_dir
    )


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything a study runs, in dependency order."""

  name: str  # 'study_small'
  flag: str  # 'configs/study_small.py[:arg]'
  config: ml_collections.ConfigDict
  axes: spec.Axes
  study_dir: str
  data_dir: str  # every run's and evaluation's ('': the configs' default)
  pretrains: tuple[Run, ...]
  cells: tuple[Cell, ...]
  columns: tuple[str, ...]  # every evaluation dataset, resolved 'name:split'

  @property
  def report_dir(self) -> str:
    return os.path.join(self.study_dir, 'report')

  @property
  def runs(self) -> tuple[Run, ...]:
    """Every training run, in dependency order."""
    return (*self.pretrains, *(run for cell in self.cells for run in cell.stages))


def _resolve_datasets(
  axes: spec.Axes, data_dir: str, plan_only: bool
) -> tuple[dict[str, str], tuple[str, ...]]:
  """Checks that every dataset exists (building the synthetic ones on first use, unless
  `plan_only`) and resolves the evaluation datasets -> ({X: its own evaluation split}, all
  evaluation columns)."""

  def resolve(name: str, role: str, field: str) -> str:
    try:
      return str(datasets.resolve(name, role, data_dir, plan_only=plan_only))
    except datasets.DatasetError as e:
      raise spec.StudyError(f'study field {field} has {name!r}: {e}') from e

  for entry in axes.datasets_2d:
    for name in default_config.parse_list(entry):
      resolve(name, '2d', 'datasets_2d')
  own = {}
  for name in axes.datasets_3d:
    resolve(name, '3d', 'datasets_3d')
    own[name] = resolve(name.partition(':')[0], 'eval', 'datasets_3d')
  extra = [resolve(name, 'eval', 'eval_datasets') for name in axes.eval_datasets]
  return own, tuple(dict.fromkeys([*own.values(), *extra]))


def _lr_drop(steps: int) -> str:
  return f'({max(1, round(LR_DROP_FRACTION * steps))},)'


def _config_file(name: str) -> str:
  return _display_path(os.path.join(CONFIGS_DIR, name))


@functools.cache
def _config_model(config_flag: str) -> ml_collections.ConfigDict:
  """The config of 'file.py[:arg]' in configs/ (its batch size and model: what a step costs)."""
  name, _, arg = config_flag.partition(':')
  return default_config.load_config(os.path.join(CONFIGS_DIR, name), arg or None)


def _make_run(config_flag: str, overrides: tuple, **fields) -> Run:
  """A Run of configs/`config_flag`; its batch size and compute from that config, the
  overrides and its model.name flag."""
  config = _config_model(config_flag)
  given = dict(overrides)
  value = lambda field: int(given.get(field, config[field.split('.')[0]][field.split('.')[1]]))
  model = ml_collections.ConfigDict(config.model.to_dict())
  model.name = fields['backbone']
  model.image_size = value('data.image_size')
  for field in models.BACKBONES[model.name].fields.values():
    if field.name != 'image_size':
      model[field.name] = value(f'model.{field.name}')
  return Run(
    config_file=_config_file(config_flag),
    batch_size=value('train.batch_size'),
    multiply_adds=models.multiply_adds(model),
    **fields,
  )


def _schedule_flags(schedule: dict) -> tuple[tuple[str, str], ...]:
  """default_config.reference_schedule's fields as flags."""
  return tuple((f'train.{key}', spec.flag_value(value)) for key, value in schedule.items())


def _imagenet_flags(axes: spec.Axes, backbone: str) -> tuple[tuple[str, str], ...]:
  """model.init of a run that starts from ImageNet weights, if the study names them."""
  return (('model.init', axes.imagenet.format(backbone=backbone)),) if axes.imagenet else ()


def _pretrain_runs(
  axes: spec.Axes, study_dir: str, data_dir: str, overrides: tuple
) -> dict[tuple[str, str, int], Run]:
  """The pre-training runs by (backbone, 2D dataset, seed)."""
  runs = {}
  paper = axes.recipe == 'paper'
  for seed in axes.seeds:
    for backbone in axes.backbones:
      for dataset_2d in axes.datasets_2d if '2d' in axes.pretraining else ():
        first_source = default_config.parse_list(dataset_2d)[0]
        if paper:
          schedule = default_config.reference_schedule('pretrain', axes.train_size(dataset_2d))
          steps, tag = schedule['num_steps'], 'paper'
          recipe = _schedule_flags(schedule) + _imagenet_flags(axes, backbone)
        else:
          steps = axes.pretrain_steps
          tag = f'{steps}steps'
          recipe = (('train.num_steps', str(steps)), ('train.lr_drop_steps', _lr_drop(steps)))
          recipe += _imagenet_flags(axes, backbone)
        runs[backbone, dataset_2d, seed] = _make_run(
          'pretrain.py:paper' if paper else 'pretrain.py',
          overrides,
          workdir=os.path.join(
            study_dir, 'pretrain', f'{backbone}__{_slug(dataset_2d)}__{tag}__seed{seed}'
          ),
          flags=(
            ('model.name', backbone),
            ('data.train_2d', dataset_2d),
            ('data.eval', first_source.partition(':')[0]),  # its held-out split
            *recipe,
            ('seed', str(seed)),
            *overrides,
          ),
          backbone=backbone,
          num_steps=steps,
          description=f'{backbone} on {dataset_2d}, seed {seed}, {steps} steps',
          data_dir=data_dir,
        )
  return runs


def _paper_stages(
  axes: spec.Axes,
  cell_dir: str,
  pretrain: Run | None,
  backbone: str,
  common: tuple,
  data_dir: str,
  overrides: tuple,
  label: str,
) -> tuple[Run, Run]:
  """A cell's two stages by the reference's recipe: fine-tuning from `pretrain`, or (None) the
  3D-only training from ImageNet weights; stage 3 starts from stage 2's newest checkpoint
  (fine-tuning) or its best (3D-only), as the configs' :paper,stage=3 say."""
  dataset_3d = dict(common)['data.train_3d']
  if pretrain:
    config, num_2d = 'finetune.py', axes.train_size(dict(common)['data.train_2d'])
  else:
    config, num_2d = 'scratch3d.py', 0
  stages, start = [], pretrain.workdir if pretrain else ''
  for stage in ('2', '3'):
    schedule = default_config.reference_schedule(stage, num_2d, axes.train_size(dataset_3d))
    start_flags = (('init_from', start),) if start else _imagenet_flags(axes, backbone)
    stages.append(
      _make_run(
        f'{config}:paper,stage={stage}',
        overrides,
        workdir=f'{cell_dir}__stage{stage}',
        flags=(*common[:2], *start_flags, *common[2:], *_schedule_flags(schedule)),
        backbone=backbone,
        num_steps=schedule['num_steps'],
        description=f'{label}, stage {stage}, {schedule["num_steps"]} steps',
        data_dir=data_dir,
        after=start,
        recipe_stage=stage,
      )
    )
    start = stages[-1].workdir
  return tuple(stages)


def _cells(
  axes: spec.Axes,
  study_dir: str,
  data_dir: str,
  overrides: tuple,
  pretrains: dict,
  own_eval: dict[str, str],
  columns: tuple[str, ...],
) -> list[Cell]:
  """Every combination of the axes, in the order they run."""
  variants = [('2d', name) for name in axes.datasets_2d if '2d' in axes.pretraining]
  variants += [('none', '')] if 'none' in axes.pretraining else []
  paper = axes.recipe == 'paper'
  cells = []
  for seed in axes.seeds:
    for backbone in axes.backbones:
      for dataset_3d in axes.datasets_3d:
        for steps in (0,) if paper else axes.steps_3d:
          budget = () if paper else (
            ('train.num_steps', str(steps)),
            ('train.lr_drop_steps', _lr_drop(steps)),
          )  # fmt: skip
          common = (
            ('data.train_3d', dataset_3d),
            ('data.eval', dataset_3d.partition(':')[0]),
            *budget,
            ('seed', str(seed)),
            *overrides,
          )
          evals = tuple(dict.fromkeys([own_eval[dataset_3d], *columns]))
          for pretraining, dataset_2d in variants:
            pretrain = pretrains.get((backbone, dataset_2d, seed))
            if pretrain:
              mode = '2d-pretrained' + (f' ({dataset_2d})' if len(axes.datasets_2d) > 1 else '')
              stage_tag = 'paper' if paper else axes.pretrain_steps
              tag = f'pre2d-{_slug(dataset_2d)}-{stage_tag}'
              start = (('data.train_2d', dataset_2d), ('init_from', pretrain.workdir))
            else:
              mode, tag, start = '3d-only', '3donly', ()
              start += () if paper else _imagenet_flags(axes, backbone)
            label = f'{backbone} {mode} on {dataset_3d}, seed {seed}'
            workdir = os.path.join(
              study_dir,
              'cells',
              f'{backbone}__{tag}__{_slug(dataset_3d)}__'
              f'{"paper" if paper else f"{steps}steps"}__seed{seed}',
            )
            if paper:
              stage_common = (('model.name', backbone), *start[:1], *common)
              *earlier, run = _paper_stages(
                axes, workdir, pretrain, backbone, stage_common, data_dir, overrides, label
              )
              steps_total = sum(r.num_steps for r in (*earlier, run))
            else:
              earlier, steps_total = (), steps
              run = _make_run(
                'finetune.py' if pretrain else 'scratch3d.py',
                overrides,
                workdir=workdir,
                flags=(('model.name', backbone), *start, *common),
                backbone=backbone,
                num_steps=steps,
                description=f'{label}, {steps} steps',
                data_dir=data_dir,
                after=pretrain.workdir if pretrain else '',
              )
            cells.append(
              Cell(
                pretraining,
                backbone,
                dataset_2d,
                dataset_3d,
                seed,
                steps_total,
                run,
                pretrain,
                evals,
                label,
                tuple(earlier),
              )
            )
  return cells


def plan_study(
  flag: str, study_dir: str | None = None, *, data_dir: str = '', plan_only: bool = False
) -> Plan:
  """Loads a study config ('path[:arg]'), checks it and its datasets -> the plan.

  Args:
    flag: the study config, 'path[:arg]'.
    study_dir: where the runs and the report go (default runs/<config name>[_<arg>]).
    data_dir: where every run's datasets are built; '' takes the study's overrides'
      data.data_dir, else the configs' default ($HPE_DATA_DIR or ~/tensorflow_datasets).
    plan_only: resolve dataset names without building any (nothing is written).
  """
  path, _, arg = flag.partition(':')
  try:
    config = default_config.load_config(path, arg or None)
  except (FileNotFoundError, default_config.ConfigError) as e:
    raise spec.StudyError(f'--study={flag}: {e}') from e
  axes = spec.check_config(config)
  study_dir = study_dir or default_config.default_workdir(flag)
  overrides = tuple((k, v) for k, v in axes.overrides if k != DATA_DIR_FIELD)
  data_dir = data_dir or dict(axes.overrides).get(DATA_DIR_FIELD, '')
  own_eval, columns = _resolve_datasets(axes, data_dir, plan_only)
  pretrains = _pretrain_runs(axes, study_dir, data_dir, overrides)
  cells = _cells(axes, study_dir, data_dir, overrides, pretrains, own_eval, columns)
  return Plan(
    os.path.basename(default_config.default_workdir(flag)),
    flag,
    config,
    axes,
    study_dir,
    data_dir,
    tuple(pretrains.values()),
    tuple(cells),
    columns,
  )

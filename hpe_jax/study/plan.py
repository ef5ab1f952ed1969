"""The plan of a study: its training runs, its cells, and their commands.

Every combination of pretraining mode, backbone, 2D dataset (2D-pretrained cells only), 3D
dataset X, seed and 3D step budget is a cell: configs/finetune.py started from a
configs/pretrain.py run (one per backbone, 2D dataset and seed, shared by its cells), or
configs/scratch3d.py. Each cell is evaluated on its own X and on every other dataset of the study.
"""

from __future__ import annotations

import dataclasses
import os
import re

import ml_collections

from hpe_jax import default_config
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
  # Where its datasets are built ('': the configs' default). Not in its identity: the same data
  # elsewhere makes the same run.
  data_dir: str = ''

  def train_command(self, python: str = 'python') -> list[str]:
    data_dir = [f'--config.{DATA_DIR_FIELD}={self.data_dir}'] if self.data_dir else []
    return (
      [python, '-m', 'hpe_jax.main', f'--config={self.config_file}', f'--workdir={self.workdir}']
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
  steps: int
  run: Run
  pretrain: Run | None
  evals: tuple[str, ...]  # resolved 'name:split' datasets, X's own evaluation split first
  label: str  # 'resnet18 2d-pretrained on X, seed 0'

  def eval_command(self, datasets: list[str], python: str = 'python') -> list[str]:
    data_dir = [f'--data_dir={self.run.data_dir}'] if self.run.data_dir else []
    return (
      [python, '-m', 'hpe_jax.evaluate', f'--workdir={self.run.workdir}']
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


def _pretrain_runs(
  axes: spec.Axes, study_dir: str, data_dir: str, overrides: tuple
) -> dict[tuple[str, str, int], Run]:
  """The pre-training runs by (backbone, 2D dataset, seed)."""
  runs = {}
  steps = axes.pretrain_steps
  for seed in axes.seeds:
    for backbone in axes.backbones:
      for dataset_2d in axes.datasets_2d if '2d' in axes.pretraining else ():
        first_source = default_config.parse_list(dataset_2d)[0]
        runs[backbone, dataset_2d, seed] = Run(
          workdir=os.path.join(
            study_dir, 'pretrain', f'{backbone}__{_slug(dataset_2d)}__{steps}steps__seed{seed}'
          ),
          config_file=_config_file('pretrain.py'),
          flags=(
            ('model.name', backbone),
            ('data.train_2d', dataset_2d),
            ('data.eval', first_source.partition(':')[0]),  # its held-out split
            ('train.num_steps', str(steps)),
            ('train.lr_drop_steps', _lr_drop(steps)),
            ('seed', str(seed)),
            *overrides,
          ),
          backbone=backbone,
          num_steps=steps,
          description=f'{backbone} on {dataset_2d}, seed {seed}, {steps} steps',
          data_dir=data_dir,
        )
  return runs


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
  cells = []
  for seed in axes.seeds:
    for backbone in axes.backbones:
      for dataset_3d in axes.datasets_3d:
        for steps in axes.steps_3d:
          common = (
            ('data.train_3d', dataset_3d),
            ('data.eval', dataset_3d.partition(':')[0]),
            ('train.num_steps', str(steps)),
            ('train.lr_drop_steps', _lr_drop(steps)),
            ('seed', str(seed)),
            *overrides,
          )
          evals = tuple(dict.fromkeys([own_eval[dataset_3d], *columns]))
          for pretraining, dataset_2d in variants:
            pretrain = pretrains.get((backbone, dataset_2d, seed))
            if pretrain:
              mode = '2d-pretrained' + (f' ({dataset_2d})' if len(axes.datasets_2d) > 1 else '')
              tag = f'pre2d-{_slug(dataset_2d)}-{axes.pretrain_steps}'
              flags = (
                ('model.name', backbone),
                ('data.train_2d', dataset_2d),
                ('init_from', pretrain.workdir),
                *common,
              )
            else:
              mode, tag, flags = '3d-only', '3donly', (('model.name', backbone), *common)
            label = f'{backbone} {mode} on {dataset_3d}, seed {seed}'
            run = Run(
              workdir=os.path.join(
                study_dir,
                'cells',
                f'{backbone}__{tag}__{_slug(dataset_3d)}__{steps}steps__seed{seed}',
              ),
              config_file=_config_file('finetune.py' if pretrain else 'scratch3d.py'),
              flags=flags,
              backbone=backbone,
              num_steps=steps,
              description=f'{label}, {steps} steps',
              data_dir=data_dir,
            )
            cells.append(
              Cell(
                pretraining,
                backbone,
                dataset_2d,
                dataset_3d,
                seed,
                steps,
                run,
                pretrain,
                evals,
                label,
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

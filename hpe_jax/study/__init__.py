"""Studies: 2D pre-training vs 3D-only training across backbones, datasets, seeds and budgets.

  hpe-study --study=configs/study_small.py [--study_dir=runs/study_small] \
      [--data_dir=DIR] [--print_commands] [--report_only] [--quiet] [--launcher=slurm ...]

A study config's `get_config(arg)` lists the axes (spec.FIELDS). Every combination of them is a
cell (plan.py): a fine-tuning run started from a shared pre-training run, or a 3D-only run, then
evaluated by hpe-evaluate on its own 3D dataset and on every other dataset of the study.
Everything runs as the `python -m ...` commands that --print_commands shows, here one after the
other (runner.py) or as Slurm jobs (slurm.py); a re-run skips what is finished and resumes what
was interrupted (status.py, processes.py). The report (results table, generalisation matrix,
plots: results.py, plots.py) goes to <study_dir>/report/.

The names below load their module on first use: a cluster job that runs one process of a study
imports processes.py only, not JAX.
"""

import importlib

# name -> the module of hpe_jax.study that defines it
_EXPORTS = {
  'Cell': 'plan',
  'Plan': 'plan',
  'Run': 'plan',
  'plan_study': 'plan',
  'METRICS': 'results',
  'collect': 'results',
  'csv_columns': 'results',
  'write_report': 'results',
  'pending_commands': 'runner',
  'pending_processes': 'runner',
  'run': 'runner',
  'FIELDS': 'spec',
  'Axes': 'spec',
  'StudyError': 'spec',
  'check_config': 'spec',
  'is_trained': 'status',
  'missing_evals': 'status',
  'CACHE_ENV': 'processes',
  'LOG_FILE': 'processes',
  'TIME_FILE': 'processes',
  'ProcessError': 'processes',
  'read_time': 'processes',
  'Launcher': 'slurm',
  'Options': 'slurm_options',
  'SlurmError': 'slurm_options',
  'launch': 'slurm',
}


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  return getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)


def __dir__() -> list[str]:
  return sorted([*globals(), *_EXPORTS])

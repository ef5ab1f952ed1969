"""The small built-in study, on the embedded synthetic data: 2D pre-training vs 3D-only training.

Two backbones (ResNet-18 and -34 at a quarter of their width, 96 px inputs), two 3D datasets
(the synthetic people seen from near eye level, and `synthetic_humans/overhead`, cameras looking
down from 30-60 degrees, which makes the generalisation matrix meaningful), two 3D step budgets,
one seed: 16 cells and 2 pre-training runs (its time and results: docs/studies.md):
  hpe-study --study=configs/study_small.py   # report in runs/study_small/report/
  hpe-study --study=configs/study_small.py --print_commands   # the commands instead
  hpe-study --study=configs/study_small.py --data_dir=DIR   # datasets built in DIR
"""

import ml_collections

from hpe_jax import default_config


def get_config(arg=None):
  if arg:
    raise default_config.ConfigError(f'configs/study_small.py takes no arg (got {arg!r})')
  c = ml_collections.ConfigDict()
  c.pretraining = ('2d', 'none')
  c.backbones = ('resnet18', 'resnet34')
  c.datasets_2d = ('synthetic_humans',)
  c.datasets_3d = ('synthetic_humans', 'synthetic_humans/overhead')
  c.eval_datasets = ()  # the generalisation matrix already crosses the two datasets_3d
  c.seeds = (0,)
  c.steps_3d = (200, 800)
  c.pretrain_steps = 2000
  c.overrides = dict(
    model=dict(width=16, head_channels=32),
    data=dict(image_size=96),
    train=dict(batch_size=16, log_every=50, checkpoint_every=500),
  )
  return c

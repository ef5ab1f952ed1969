"""The 3D-only baseline: the fine-tune model trained from scratch on 3D data alone.

It answers the study's question "does 2D pre-training help?" against configs/finetune.py:
  python -m hpe_jax.main --config=configs/scratch3d.py
  python -m hpe_jax.main --config=configs/scratch3d.py:paper --workdir=runs/scratch3d_paper
"""

import os

from hpe_jax import default_config


def get_config(arg=None):
  c = default_config.load_config(os.path.join(os.path.dirname(__file__), 'finetune.py'), arg)
  c.init_from = ''
  c.data.train_2d = ''
  c.train.geometric_weight = 0.0  # it only applies to 2D samples
  return c

"""The 3D-only baseline: the fine-tune model trained without 2D pre-training, on 3D data alone.

It answers the study's question "does 2D pre-training help?" against configs/finetune.py:
  python -m hpe_jax.main --config=configs/scratch3d.py
  python -m hpe_jax.main --config=configs/scratch3d.py:paper \
      --config.model.init=runs/imagenet/resnet50.npz   # workdir runs/scratch3d_paper
With :paper it starts from ImageNet weights, as the reference's every run does, so that it
differs from the pre-trained model by the 2D pre-training alone, and follows the fine-tune's
schedule (60 reference epochs of 1,391 steps, drop after 45): as many steps as the fine-tuning
it replaces, every sample of a batch of 32 a Human3.6M frame.
"""

import os

from hpe_jax import default_config


def get_config(arg=None):
  c = default_config.load_config(os.path.join(os.path.dirname(__file__), 'finetune.py'), arg)
  c.init_from = ''
  c.data.train_2d = ''
  c.train.geometric_weight = 0.0  # it only applies to 2D samples
  return c

"""Stage 1: 2D pre-training on heatmaps only.

Quick preset on the embedded synthetic data (minutes on a 2-core CPU):
  hpe-train --config=configs/pretrain.py
The reference recipe (ResNet-50 from ImageNet weights, 256 px, batch 32, MPII, 140 epochs of
696 steps, drops at 90 and 120; docs/paper.md):
  hpe-train --config=configs/pretrain.py:paper \
      --config.model.init=runs/imagenet/resnet50.npz   # workdir runs/pretrain_paper
"""

from hpe_jax import default_config


def get_config(arg=None):
  args = default_config.parse_arg(arg, paper=False)
  c = default_config.base_config()
  if args.paper:
    # An epoch is MPII's 22,246 training people: ceil(22,246 / 32) = 696 steps.
    c.model.init = default_config.IMAGENET
    c.data.train_2d = 'mpii'
    c.data.eval = 'mpii'
    c.train.update(default_config.reference_schedule('pretrain', default_config.MPII_TRAIN_PEOPLE))
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    return c
  default_config.quick_preset(c)
  c.train.num_steps = 600
  c.train.lr_drop_steps = (480,)
  return c

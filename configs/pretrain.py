"""Stage 1: 2D pre-training on heatmaps only.

Quick preset on the embedded synthetic data (minutes on a 2-core CPU):
  python -m hpe_jax.main --config=configs/pretrain.py
The reference recipe (ResNet-50, 256 px, batch 32, MPII, 140 epochs, drops at 90 and 120):
  python -m hpe_jax.main --config=configs/pretrain.py:paper --workdir=runs/pretrain_paper
"""

from hpe_jax import default_config

# MPII training people in the reference's split; epochs are counted on it.
MPII_TRAIN_SIZE = 22246


def get_config(arg=None):
  args = default_config.parse_arg(arg, paper=False)
  c = default_config.base_config()
  if args.paper:
    steps_per_epoch = MPII_TRAIN_SIZE // 32
    c.data.train_2d = 'mpii'
    c.data.eval = 'mpii'
    c.train.num_steps = 140 * steps_per_epoch
    c.train.lr_drop_steps = (90 * steps_per_epoch, 120 * steps_per_epoch)
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    c.train.eval_every = 10 * steps_per_epoch
    return c
  default_config.quick_preset(c)
  c.train.num_steps = 2000
  c.train.lr_drop_steps = (1600,)
  return c


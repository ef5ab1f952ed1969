"""Stage 2: fusion fine-tuning from a 2D checkpoint on batches that mix 2D and 3D samples.

3D samples get the heatmap and depth losses (weight 0.1), 2D samples the heatmap and geometric
losses (weight 0.01). Quick preset, after configs/pretrain.py:
  hpe-train --config=configs/finetune.py
The reference runs it as two stages, stage 2 without the geometric loss and stage 3 with it at a
10x lower learning rate, each starting from the one before (default workdirs chain them):
  hpe-train --config=configs/pretrain.py:paper \
      --config.model.init=runs/imagenet/resnet50.npz                 # runs/pretrain_paper
  hpe-train --config=configs/finetune.py:paper,stage=2  # runs/finetune_paper_stage_2
  hpe-train --config=configs/finetune.py:paper,stage=3  # runs/finetune_paper_stage_3
"""

from hpe_jax import default_config


def get_config(arg=None):
  args = default_config.parse_arg(arg, paper=False, stage='fusion')
  if args.stage not in ('fusion', '2', '3'):
    raise default_config.ConfigError(f"finetune stage={args.stage!r}: use 'fusion', '2' or '3'")
  c = default_config.base_config()
  c.model.depth = True
  c.init_from = 'runs/pretrain_paper' if args.paper else 'runs/pretrain'
  if args.stage == '3':
    c.init_from = 'runs/finetune_paper_stage_2' if args.paper else 'runs/finetune_stage_2'
  c.train.depth_weight = 0.1
  c.train.geometric_weight = 0.0 if args.stage == '2' else 0.01
  c.train.lr = 1e-4 if args.stage == '3' else 1e-3
  if args.paper:
    # The reference's Fusion3D epoch: all 22,246 MPII people plus as many Human3.6M frames (its
    # nImages3D = min(len(3D), nImages2D * ratio3D), ratio 1), in batches of 32 with the last
    # partial one kept: ceil(44,492 / 32) = 1,391 steps. Stage 2: 60 epochs = 83,460 steps, the
    # drop after epoch 45 (step 62,595); stage 3: 10 epochs = 13,910 steps. Each epoch sees new
    # Human3.6M frames: the 3D stream runs through one shuffled pass of the whole set before the
    # next pass starts with a new order.
    c.data.train_2d = 'mpii'
    c.data.train_3d = 'human36m'
    c.data.eval = 'human36m'
    c.data.augment.rotate_3d = False
    c.train.update(
      default_config.reference_schedule(
        '3' if args.stage == '3' else '2',
        default_config.MPII_TRAIN_PEOPLE,
        default_config.H36M_TRAIN_FRAMES,
      )
    )
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    return c
  default_config.quick_preset(c)
  c.data.train_3d = 'synthetic_humans'
  c.train.num_steps = 2600
  c.train.lr_drop_steps = (2000,)
  return c

"""The 3D-only baseline: the fine-tune's model trained without 2D pre-training, on 3D data alone.

It answers the study's question "does 2D pre-training help?" against configs/finetune.py.
Quick preset (one stage, after nothing):
  hpe-train --config=configs/scratch3d.py
The study's "3D exclusive training" (ECE740F21T01/pytorch-pose-hg-3d, readme "3D Exclusive
Training - Stages 2 and 3"), from ImageNet weights as the reference's every run:
  hpe-train --config=configs/scratch3d.py:paper,stage=2 \
      --config.model.init=runs/imagenet/resnet50.npz           # runs/scratch3d_paper_stage_2
  hpe-train --config=configs/scratch3d.py:paper,stage=3  # runs/scratch3d_paper_stage_3
- stage 2 (`--dataset H36M --ratio_3d 0 --weight_3d 1.0 --num_epoch 60 --lr_step 45`): batches of
  32 Human3.6M frames, depth weight 1.0, 60 epochs of its 35,832 training frames (1,120 steps
  each; default_config.H36M_TRAIN_FRAMES), the lr x0.1 after epoch 45; evaluated every 5
  epochs, and the best checkpoint kept by 2D accuracy (`pck:max`), as the fork keeps its
  model_best.pth by its `acc` (a 2D heatmap accuracy; higher is better);
- stage 3 (`--weight_3d 0.1 --load_model .../model_best.pth --num_epoch 10 --lr 1e-4`): from
  stage 2's best checkpoint (init_step=best), depth weight 0.1, lr 1e-4, 10 epochs.
`:paper` alone is stage 2 (workdir runs/scratch3d_paper: start stage 3 from it with
--config.init_from=runs/scratch3d_paper); `:stage=2` / `:stage=3` without paper chain the quick
preset the same way (runs/scratch3d_stage_2 -> runs/scratch3d_stage_3).
"""

import os

from hpe_jax import default_config


def get_config(arg=None):
  args = default_config.parse_arg(arg, paper=False, stage='')
  if args.stage not in ('', '2', '3'):
    raise default_config.ConfigError(f"scratch3d stage={args.stage!r}: use '2' or '3'")
  c = default_config.load_config(
    os.path.join(os.path.dirname(__file__), 'finetune.py'), 'paper' if args.paper else None
  )
  c.init_from = ''
  c.data.train_2d = ''
  c.train.geometric_weight = 0.0  # it only applies to 2D samples
  if args.stage == '2' or (args.paper and not args.stage):
    c.train.depth_weight = 1.0
  elif args.stage == '3':
    c.init_from = 'runs/scratch3d_paper_stage_2' if args.paper else 'runs/scratch3d_stage_2'
    c.init_step = default_config.BEST
    c.train.lr = 1e-4
  if args.paper:  # the fine-tune's model, data and logging, without its 2D data
    c.model.init = default_config.IMAGENET  # where nothing is grafted (stage 2)
    c.train.update(
      default_config.reference_schedule(
        args.stage or '2', num_2d=0, num_3d=default_config.H36M_TRAIN_FRAMES
      )
    )
    c.train.keep_best = 'pck:max'
  elif args.stage:
    c.train.keep_best = 'pck:max'
  return c

"""What a study costs to train: images per run and GPU-hours at a rate of ResNet-50 at 256 px,
other models scaled by their multiply-adds (resnet.multiply_adds). Evaluation is not counted."""

from __future__ import annotations

import collections

from hpe_jax.models import resnet
from hpe_jax.study import plan as plan_lib

# Training images/s of ResNet-50 with the deconvolution head at 256 px on one GPU when none is
# given: an assumption (an H100-class GPU at ~45 TFLOP/s on ~44 GFLOP per trained image), until
# BENCHMARKS.md has a measured figure.
ASSUMED_IMAGES_PER_S = 1000.0
REFERENCE_MULTIPLY_ADDS = resnet.multiply_adds('resnet50', 256)


def gpu_hours(run: plan_lib.Run, images_per_s: float) -> float | None:
  """Hours of one GPU to train `run` at `images_per_s` for ResNet-50 at 256 px; None for a model
  whose compute is not counted."""
  if not run.multiply_adds:
    return None
  return run.images * run.multiply_adds / REFERENCE_MULTIPLY_ADDS / images_per_s / 3600


def _kinds(plan: plan_lib.Plan) -> dict[str, tuple[str, str]]:
  """{run workdir: (what it trains, its 2D dataset or '-')}."""
  kinds = {
    run.workdir: ('pre-training', dict(run.flags)['data.train_2d']) for run in plan.pretrains
  }
  for cell in plan.cells:
    kind = '3D-only' if cell.pretraining == 'none' else 'fine-tuning'
    for run in cell.stages:
      stage = f', stage {run.recipe_stage}' if run.recipe_stage else ''
      kinds[run.workdir] = (kind + stage, cell.dataset_2d or '-')
  return kinds


def plan_table(plan: plan_lib.Plan, images_per_s: float | None) -> list[str]:
  """The study's training runs grouped by kind, backbone and length: a Markdown table (runs,
  steps and images per run, GPU-hours) and its total, as lines. `images_per_s`: None for
  ASSUMED_IMAGES_PER_S, said in the caption."""
  rate = images_per_s or ASSUMED_IMAGES_PER_S
  groups, kinds = collections.defaultdict(list), _kinds(plan)
  for run in plan.runs:
    groups[(*kinds[run.workdir], run.backbone, run.num_steps, run.images)].append(run)
  rows, total_hours, counted = [], 0.0, True
  for (kind, dataset_2d, backbone, steps, images), runs in groups.items():
    hours = [gpu_hours(run, rate) for run in runs]
    counted &= None not in hours
    group_hours = sum(h for h in hours if h is not None)
    total_hours += group_hours
    rows.append(
      f'| {kind} | {dataset_2d} | {backbone} | {len(runs)} | {steps:,} | {images:,} | '
      + (f'{group_hours:,.1f} |' if None not in hours else 'n/a |')
    )
  source = (
    f'--images_per_s={rate:g}'
    if images_per_s
    else f'an assumed {rate:g} (no GPU figure in BENCHMARKS.md yet; give --images_per_s)'
  )
  images = sum(run.images for run in plan.runs)
  return [
    f'Plan of study {plan.name}: {len(plan.runs)} training runs, {len(plan.cells)} cells '
    f'evaluated on {len(plan.columns)} datasets; GPU-hours at {source} training images/s for '
    'ResNet-50 at 256 px, other models scaled by their multiply-adds, evaluation not counted.',
    '',
    '| runs of | 2D data | backbone | runs | steps per run | images per run | GPU-hours |',
    '|---|---|---|---|---|---|---|',
    *rows,
    f'| all | | | {len(plan.runs)} | | {images:,} in all | '
    + (f'{total_hours:,.1f} |' if counted else f'{total_hours:,.1f} + n/a |'),
  ]

"""A study's report from its finished runs: results.{md,csv} (one row per cell),
generalisation.{md,csv} (every cell on every evaluation dataset), and the plots of plots.py."""

from __future__ import annotations

import collections
import csv
import datetime
import json
import os

from flax import nnx
import jax
import numpy as np

from hpe_jax import default_config
from hpe_jax import inference
from hpe_jax import models
from hpe_jax import progress
from hpe_jax.evaluation import trained_run
from hpe_jax.study import plan as plan_lib
from hpe_jax.study import plots
from hpe_jax.study import processes
from hpe_jax.study import status

# What the report shows of each evaluation (keys of hpe-evaluate's json files): the
# legacy and fork figures are the ones the paper and its fork publish.
METRICS = ('mpjpe', 'pa_mpjpe', 'pck', 'mpjpe_legacy', 'mpjpe_fork')
# The report's plots and what each shows.
PLOTS = {
  'compute.png': 'MPJPE on own X against training images seen (2D pre-training included), one '
  'line per backbone, 2D data and seed through its 3D budgets.',
  'backbone.png': 'MPJPE on own X against parameters at the largest 3D budget.',
  'generalisation.png': 'the matrix of generalisation.md.',
}
DAMAGED_SUFFIX = '.damaged'  # a damaged record set aside (set_aside_damaged)


def count_params(workdir: str, cache: dict) -> int:
  """Parameters (not batch statistics) of a run's model, built abstractly from its config.json
  (no computation, no device)."""
  config = inference.load_run_config(workdir)
  key = json.dumps(config.model.to_dict(), sort_keys=True)
  if key not in cache:
    model = nnx.eval_shape(
      lambda: models.create_model(config.model, with_depth=config.model.depth, rngs=nnx.Rngs(0))
    )
    cache[key] = sum(
      int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))
    )
  return cache[key]


def _run_config(workdir: str) -> dict:
  with open(os.path.join(workdir, 'config.json')) as f:
    return json.load(f)


def _time_record(directory: str) -> dict:
  """processes.read_time, {} for a damaged record (set_aside_damaged says which)."""
  try:
    return processes.read_time(directory)
  except ValueError:
    return {}


def _read_result(path: str) -> dict | None:
  """An evaluation's results (hpe-evaluate's json file); None if missing or damaged."""
  try:
    value = _load_json(path)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def _load_json(path: str):
  with open(path) as f:
    return json.load(f)


def _damage(path: str) -> str:
  """What is wrong with the JSON record at `path` ('' if it is a JSON object, or absent)."""
  try:
    value = _load_json(path)
  except FileNotFoundError:
    return ''
  except UnicodeDecodeError:
    return 'not text'
  except ValueError as e:  # json.JSONDecodeError
    return f'not JSON, half written? {e}'
  return '' if isinstance(value, dict) else f'a JSON {type(value).__name__}, not an object'


def damaged_files(plan: plan_lib.Plan) -> list[tuple[str, str, str]]:
  """The study's damaged records (a half-written evaluation, a time record that is not JSON)
  -> [(path, what is wrong, what setting it aside means)]."""
  found = []
  records = {plan.study_dir: "the study's time record starts again"}
  for run in plan.runs:
    records[run.workdir] = (
      "the run's time record starts again, and its flags are no longer checked against the study's"
    )
  for directory, meaning in records.items():
    path = os.path.join(directory, processes.TIME_FILE)
    if damage := _damage(path):
      found.append((path, damage, meaning))
  for cell in plan.cells:
    for dataset, path in status.result_files(cell, cell.evals).items():
      if damage := _damage(path):
        found.append((path, damage, f'the evaluation on {dataset} runs again'))
  return found


def set_aside_damaged(plan: plan_lib.Plan, log) -> list[str]:
  """Renames each of the study's damaged records (damaged_files) to <name>.damaged, so that what
  made it is redone (an evaluation) or starts again (a time record), with one line to `log`
  each -> the paths set aside."""
  paths = []
  for path, damage, meaning in damaged_files(plan):
    os.replace(path, path + DAMAGED_SUFFIX)
    name = os.path.basename(path) + DAMAGED_SUFFIX
    log(f'{path} is damaged ({damage}): set aside as {name}; {meaning}.')
    paths.append(path)
  return paths


def _seconds(workdir: str) -> float:
  record = _time_record(workdir)
  return record.get('train_s', 0.0) + record.get('eval_s', 0.0)


def metric_column(metric: str, dataset: str) -> str:
  return f'{metric}@{dataset}'


def collect(plan: plan_lib.Plan) -> list[dict]:
  """One row per trained cell (the results.csv columns); metrics of missing evaluations are
  None."""
  rows, params_cache = [], {}
  for cell in plan.cells:
    if not status.is_trained(cell.run):
      continue
    workdir = cell.run.workdir
    batch_size = _run_config(workdir)['train']['batch_size']
    images_3d = sum(
      _run_config(run.workdir)['train']['batch_size'] * run.num_steps for run in cell.stages
    )
    wall_s = sum(_seconds(run.workdir) for run in cell.stages)
    pretrain_images = pretrain_seconds = 0
    if cell.pretrain:
      pretrain_config = _run_config(cell.pretrain.workdir)['train']
      pretrain_images = pretrain_config['num_steps'] * pretrain_config['batch_size']
      pretrain_seconds = _seconds(cell.pretrain.workdir)
    row = {
      'pretraining': cell.pretraining,
      'backbone': cell.backbone,
      'params': count_params(workdir, params_cache),
      'dataset_2d': cell.dataset_2d,
      'dataset_3d': cell.dataset_3d,
      'seed': cell.seed,
      'steps': cell.steps,
      # What cells are compared at: the same steps (budgets), or the same recipe (paper),
      # whose cells' steps follow their datasets' sizes.
      'budget': cell.steps if plan.axes.recipe == 'budgets' else 'paper recipe',
      'pretrain_steps': cell.pretrain.num_steps if cell.pretrain else 0,
      'batch_size': batch_size,
      'images_3d': images_3d,
      'images_total': images_3d + pretrain_images,
      'wall_s': wall_s,
      'wall_total_s': wall_s + pretrain_seconds,
      'device_kind': _time_record(workdir).get('device_kind', 'cpu'),
    }
    results = {}
    for dataset in cell.evals:
      result = _read_result(trained_run.result_path(workdir, dataset))
      if result is not None:
        results[dataset] = result
    own = results.get(cell.evals[0], {})
    row.update({metric: own.get(metric) for metric in METRICS})
    row['mpjpe_mean_pose'] = own.get('mpjpe_mean_pose')  # predicting the training mean pose
    for dataset in plan.columns:
      row.update(
        {metric_column(metric, dataset): results.get(dataset, {}).get(metric) for metric in METRICS}
      )
    row['workdir'] = workdir
    row['label'] = cell.label
    row['own_eval'] = cell.evals[0]
    row['published'] = {
      metric: value
      for mode, backbone, dataset_2d, dataset_3d, metric, value in plan.axes.published
      if (mode, backbone, dataset_2d, dataset_3d)
      == (cell.pretraining, cell.backbone, cell.dataset_2d, cell.dataset_3d)
    }
    rows.append(row)
  return rows


def csv_columns(plan: plan_lib.Plan) -> list[str]:
  """The columns of results.csv."""
  return [
    'pretraining',
    'backbone',
    'params',
    'dataset_2d',
    'dataset_3d',
    'seed',
    'steps',
    'pretrain_steps',
    'batch_size',
    'images_3d',
    'images_total',
    'wall_s',
    'wall_total_s',
    'device_kind',
    *METRICS,
    'mpjpe_mean_pose',
    *(metric_column(m, d) for d in plan.columns for m in METRICS),
    'workdir',
  ]


def _write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows({k: ('' if v is None else v) for k, v in row.items()} for row in rows)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in rows]) + '\n'


def _mm(value) -> str:
  return '' if value is None else f'{value:.1f}'


def _percent(value) -> str:
  return '' if value is None else f'{100 * value:.1f}'


def _count(value: float) -> str:
  for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if value >= scale:
      return f'{value / scale:.3g}{unit}'
  return str(int(value))


def largest_budget_rows(rows: list[dict]) -> list[dict]:
  """The rows at the largest 3D step budget, or every row of a recipe study (the
  generalisation matrix's rows)."""
  largest = max((row['budget'] for row in rows), default=0)
  return [row for row in rows if row['budget'] == largest]


def _comparison(rows: list[dict]) -> list[list[str]]:
  """2D-pretrained vs 3D-only MPJPE at equal 3D steps, averaged over seeds."""
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for row in rows:
    groups[row['backbone'], row['dataset_3d'], row['budget']][
      row['pretraining'], row['dataset_2d']
    ].append(row)
  table = []
  for (backbone, dataset_3d, budget), modes in groups.items():
    scratch_rows = modes.get(('none', ''), [])
    scratch = progress.mean(r['mpjpe'] for r in scratch_rows)
    pretrained_groups = [(key[1], group) for key, group in modes.items() if key[0] == '2d']
    for dataset_2d, group in pretrained_groups or [('', [])]:
      pretrained = progress.mean(r['mpjpe'] for r in group)
      gain = f'{scratch - pretrained:+.1f}' if None not in (scratch, pretrained) else ''
      every = group + scratch_rows
      table.append(
        [
          backbone,
          dataset_3d,
          str(budget),
          dataset_2d or '-',
          _mm(progress.mean(r['mpjpe_mean_pose'] for r in every)),
          _mm(scratch),
          _mm(pretrained),
          gain,
          str(len({r['seed'] for r in every})),
          _count(every[0]['images_3d']),
          _count(group[0]['images_total']) if group else '',
        ]
      )
  return table


def write_report(plan: plan_lib.Plan) -> list[str]:
  """Writes <study_dir>/report/: results.{md,csv}, generalisation.{md,csv}, and the PLOTS once a
  cell has been evaluated on its own X (a plot of an earlier report that is not drawn again is
  removed) -> the paths written."""
  os.makedirs(plan.report_dir, exist_ok=True)
  rows = collect(plan)
  path = lambda name: os.path.join(plan.report_dir, name)
  plotted = list(PLOTS) if any(row['mpjpe'] is not None for row in rows) else []
  _write_csv(path('results.csv'), csv_columns(plan), rows)
  matrix_rows = largest_budget_rows(rows)
  matrix = [[row[metric_column('mpjpe', d)] for d in plan.columns] for row in matrix_rows]
  labels = [row['label'] for row in matrix_rows]
  with open(path('generalisation.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['cell', *plan.columns])
    writer.writerows(
      [label, *('' if v is None else v for v in values)] for label, values in zip(labels, matrix)
    )
  with open(path('generalisation.md'), 'w') as f:
    f.write(_generalisation_markdown(plan, matrix_rows, matrix))
  if plotted:
    plots.plot_compute(rows, plan.axes.datasets_3d, path('compute.png'))
    plots.plot_backbone(matrix_rows, plan.axes.datasets_3d, path('backbone.png'))
    plots.plot_generalisation(labels, plan.columns, matrix, path('generalisation.png'))
  for name in set(PLOTS) - set(plotted):
    if os.path.isfile(path(name)):
      os.remove(path(name))  # a stale picture beside a report that no longer shows it
  with open(path('results.md'), 'w') as f:
    f.write(_results_markdown(plan, rows, plotted))
  names = ['results.md', 'results.csv', 'generalisation.md', 'generalisation.csv', *plotted]
  return [path(name) for name in names]


def _time_summary(plan: plan_lib.Plan) -> str:
  """How long the study took, from the time records."""
  read = _time_record
  study = read(plan.study_dir)
  parts = {
    'pre-training': sum(read(r.workdir).get('train_s', 0.0) for r in plan.pretrains),
    '3D stages': sum(read(r.workdir).get('train_s', 0.0) for c in plan.cells for r in c.stages),
    'evaluation': sum(read(c.run.workdir).get('eval_s', 0.0) for c in plan.cells),
  }
  kinds = sorted({read(r.workdir).get('device_kind') for r in plan.runs} - {None})
  if not study and not any(parts.values()):
    return 'nothing has run yet.'
  ran_here = (
    f'{progress.duration(study.get("seconds", 0.0))} of wall time over '
    f'{study.get("invocations", 0)} invocation(s) of hpe-study that ran something '
    "(dataset builds, compilation, training and evaluation). Of that, the runs' processes: "
  )
  # Cluster jobs (slurm.py) add to their runs' records only.
  as_jobs = "the runs' processes, run as cluster jobs: "
  return (
    (ran_here if study else as_jobs)
    + ', '.join(f'{name} {progress.duration(s)}' for name, s in parts.items())
    + f'. Device: {", ".join(kinds) or "none recorded"}.'
  )


def _results_markdown(plan: plan_lib.Plan, rows: list[dict], plotted: list[str]) -> str:
  """results.md; `plotted`: the names of the PLOTS drawn, which it shows."""
  pending = [
    c.run.description for c in plan.cells if not status.is_trained(c.run) or status.missing_evals(c)
  ]
  data_dir = f' --data_dir={plan.data_dir}' if plan.data_dir else ''
  lines = [
    f'# Study {plan.name}: 2D pre-training vs 3D-only training',
    '',
    f'`hpe-study --study={plan.flag} --study_dir={plan.study_dir}{data_dir}` '
    f'({datetime.datetime.now():%Y-%m-%d %H:%M}): {len(plan.cells) - len(pending)} of '
    f'{len(plan.cells)} cells finished.',
    '',
    f'Time: {_time_summary(plan)}',
    '',
  ]
  if len(pending) == len(plan.cells):
    lines += [
      'No cell has finished yet (trained and evaluated): run the study, or wait for its jobs, '
      'then write this report again (`--report_only`).',
      '',
    ]
  if pending:
    lines += ['Not finished: ' + '; '.join(pending) + '.', '']
  lines += [
    '## 2D pre-training vs 3D-only at equal 3D budgets',
    '',
    'MPJPE in mm (lower is better) on the test split of the 3D training dataset, mean '
    'over seeds. 3D budget: the 3D steps, or the recipe every cell follows. '
    'Mean pose: predicting the mean training pose for every person. '
    'Gain = 3D-only minus 2D-pretrained (positive: pre-training helps). '
    'Images: training images seen in the 3D stage, and in total with the 2D '
    'pre-training (the fair compute comparison; a 3D-only cell sees its 3D images only).',
    '',
    _markdown_table(
      [
        'backbone',
        '3D data',
        '3D budget',
        '2D data',
        'mean pose',
        '3D-only',
        '2D-pretrained',
        'gain',
        'seeds',
        'images 3D stage',
        'images total (2D-pretrained)',
      ],
      _comparison(rows),
    ),
    '## All cells',
    '',
    "Own X: the test split of the cell's 3D training dataset. PCK@0.2 (torso) in %. "
    "Wall time of the cell's processes (training and evaluation), and in total with its "
    'pre-training run. Every metric of every evaluation is in results.csv.',
    '',
  ]
  others = list(plan.columns)
  header = [
    'pretraining',
    'backbone',
    'params',
    '2D data',
    '3D data (X)',
    'seed',
    '3D steps',
    'images 3D / total',
    'wall / total',
    'MPJPE',
    'PA-MPJPE',
    'PCK',
    *(f'MPJPE on {name}' for name in others),
  ]
  table = [
    [
      row['pretraining'],
      row['backbone'],
      _count(row['params']),
      row['dataset_2d'] or '-',
      row['dataset_3d'],
      str(row['seed']),
      str(row['steps']),
      f'{_count(row["images_3d"])} / {_count(row["images_total"])}',
      f'{progress.duration(row["wall_s"])} / {progress.duration(row["wall_total_s"])}',
      _mm(row['mpjpe']),
      _mm(row['pa_mpjpe']),
      _percent(row['pck']),
      *(_mm(row[metric_column('mpjpe', name)]) for name in others),
    ]
    for row in rows
  ]
  lines += [_markdown_table(header, table), *_published_markdown(rows)]
  lines += [
    '## Plots',
    '',
    *(f'- {name}: {PLOTS[name]}' for name in plotted),
    *(['No plots yet: they are drawn once a cell has been evaluated.'] if not plotted else []),
    '',
    *(line for name in plotted for line in (f'![{name[: -len(".png")]}]({name})', '')),
    '## Study config',
    '',
    '```python',
    *(f'{key} = {value!r}' for key, value in default_config.flatten(plan.config).items()),
    '```',
    '',
  ]
  return '\n'.join(lines)


def _published_markdown(rows: list[dict]) -> list[str]:
  """The paper's published figures (the study config's `published`) beside ours, as lines."""
  table = [
    [row['label'], f'{metric} on {row["own_eval"]}', _mm(value), _mm(row.get(metric))]
    for row in rows
    for metric, value in row['published'].items()
  ]
  if not table:
    return []
  return [
    '## Beside the published figures',
    '',
    "mm; the paper's `mpjpe_legacy` is the reference's readout and protocol (docs/paper.md, "
    '"Which figure to compare with which published number"), on its own validation images.',
    '',
    _markdown_table(['cell', 'metric', 'published', 'ours'], table),
  ]


def _generalisation_markdown(plan: plan_lib.Plan, rows: list[dict], matrix: list[list]) -> str:
  budget = plots.budget_label(rows[0]['budget'] if rows else 0)
  table = [
    [
      row['label'],
      *(
        f'**{_mm(v)}**' if name == row['own_eval'] and v is not None else _mm(v)
        for name, v in zip(plan.columns, values)
      ),
    ]
    for row, values in zip(rows, matrix)
  ]
  return '\n'.join(
    [
      f'# Study {plan.name}: cross-dataset generalisation',
      '',
      f'MPJPE in mm (lower is better) of every cell at the largest 3D budget ({budget}, '
      "rows) on every evaluation dataset (columns); bold: the cell's own 3D training dataset.",
      '',
      _markdown_table(['cell', *plan.columns], table),
    ]
  )

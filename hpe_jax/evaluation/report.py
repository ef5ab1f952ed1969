"""Evaluation results as Markdown tables (what `hpe-evaluate` prints and saves)."""

from __future__ import annotations

import math

from hpe_jax import progress

# Display order and labels; a metric absent from the results is left out.
METRICS = {
  'pckh': 'PCKh@0.5',
  'pck': 'PCK@0.2 (torso)',
  'mpjpe': 'MPJPE (P1), mm',
  'pa_mpjpe': 'PA-MPJPE (P2), mm',
  'mpjpe_15j': 'MPJPE, 15 predicted joints, mm',
  'pa_mpjpe_15j': 'PA-MPJPE, 15 predicted joints, mm',
  'mpjpe_legacy': "MPJPE, the reference's legacy figure, mm",
  'mpjpe_fork': "MPJPE, the study fork's figure (its labels and frames), mm",
  'pck3d_150': '3DPCK@150 mm',
  'auc_3d': 'AUC 0-150 mm',
  'mpjpe_visible': 'MPJPE of visible joints, mm',
  'mpjpe_occluded': 'MPJPE of occluded joints, mm',
}
PER_ACTION_METRICS = ('mpjpe', 'pa_mpjpe', 'mpjpe_legacy', 'pck3d_150', 'auc_3d')
READOUT_METRICS = ('pckh', 'pck', 'mpjpe', 'pa_mpjpe', 'mpjpe_legacy', 'pck3d_150')


def _cell(value) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '-'
  return f'{value:.4g}' if isinstance(value, float) else str(value)


def markdown(title: str, results: dict) -> str:
  """`title` as a heading, then metric | model | mean-pose baseline rows, the readout ablation
  and the per-action table where the results have them."""
  lines = [f'## {title}', '', '| metric | model | mean pose |', '|---|---|---|']
  for key, label in METRICS.items():
    if key in results:
      lines.append(
        f'| {label} | {_cell(results[key])} | {_cell(results.get(key + "_mean_pose"))} |'
      )
  lines += [
    '',
    f'{results.get("num_examples", 0)} examples, {_cell(results.get("images_per_s"))} images/s.',
  ]
  if 'readout' in results:
    readouts = results['readout']
    keys = [k for k in READOUT_METRICS if any(k in r for r in readouts.values())]
    lines += [
      '',
      '| readout | ' + ' | '.join(METRICS[k] for k in keys) + ' |',
      '|---' * (len(keys) + 1) + '|',
    ]
    lines += [
      f'| {name} | ' + ' | '.join(_cell(r.get(k)) for k in keys) + ' |'
      for name, r in readouts.items()
    ]
  if 'per_action' in results:
    table = results['per_action']
    keys = [k for k in PER_ACTION_METRICS if any(k in row for row in table.values())]
    lines += [
      '',
      '| action | examples | ' + ' | '.join(METRICS[k] for k in keys) + ' |',
      '|---' * (len(keys) + 2) + '|',
    ]
    for action, row in table.items():
      lines.append(
        f'| {action} | {row["num_examples"]} | '
        + ' | '.join(_cell(row.get(k)) for k in keys)
        + ' |'
      )
    # Human3.6M papers average over actions; the first table averages over frames.
    lines.append(
      '| mean over actions | '
      + str(sum(r['num_examples'] for r in table.values()))
      + ' | '
      + ' | '.join(_cell(progress.mean(r.get(k) for r in table.values())) for k in keys)
      + ' |'
    )
  return '\n'.join(lines) + '\n'

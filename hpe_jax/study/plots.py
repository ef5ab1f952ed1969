"""The PNG plots of a study's report, drawn from its results rows (results.collect): matplotlib's
object API on the Agg canvas (no pyplot, no display)."""

from __future__ import annotations

import collections

from matplotlib import ticker
from matplotlib.figure import Figure
import numpy as np

from hpe_jax import progress

MODE_NAMES = {'2d': '2D-pretrained', 'none': '3D-only'}
MODE_LINES = {'2d': '-', 'none': '--'}
MODE_COLORS = {'2d': 'C0', 'none': 'C3'}
MARKERS = 'o^sDvP*X'  # one per backbone
ACCURACY_LABEL = 'MPJPE on its own X (mm), lower is better'


def _count_label(value: float, _=None) -> str:
  """A count as a short tick label: 20, 1.5k, 40k, 3.2M, 1G."""
  for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if value >= scale:
      return f'{value / scale:.3g}{unit}'
  return f'{value:.3g}'


def _log_count_axis(axis) -> None:
  """Plain count labels on a log axis at 1-2-5 steps of each decade (more where it spans less
  than one, only the decades where it spans several), no labels at minor ticks.

  Matplotlib's log formatter labels minor ticks too ('3x10^3', '4x10^3') on an axis spanning
  about a decade, where they overlap.
  """
  low, high = axis.get_view_interval()
  decades = np.log10(high / low) if 0 < low < high else 1.0
  subs = (
    (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
  )
  axis.set_major_locator(ticker.LogLocator(subs=subs))
  axis.set_major_formatter(ticker.FuncFormatter(_count_label))
  axis.set_minor_formatter(ticker.NullFormatter())


def _subplots(count: int, width: float = 5.5, height: float = 4.2):
  figure = Figure(figsize=(width * count, height), layout='constrained')
  return figure, figure.subplots(1, count, squeeze=False)[0]


def _markers(rows: list[dict]) -> dict[str, str]:
  backbones = list(dict.fromkeys(row['backbone'] for row in rows))
  return {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(backbones)}


def _mean_pose_line(ax, rows: list[dict]) -> None:
  """A dotted line at the MPJPE of predicting the training mean pose (the floor of usefulness)."""
  value = progress.mean(row['mpjpe_mean_pose'] for row in rows)
  if value is not None:
    ax.axhline(value, color='gray', linestyle=':', label='mean training pose')


def _series_label(row: dict, several_2d: bool) -> str:
  label = f'{row["backbone"]} {MODE_NAMES[row["pretraining"]]}'
  return label + (f' ({row["dataset_2d"]})' if several_2d and row['dataset_2d'] else '')


def plot_compute(rows: list[dict], datasets_3d, path: str) -> Figure:
  """MPJPE on own X against total training images (log x), one panel per X; a line joins the
  budgets of one backbone, 2D dataset and seed. Saves it to `path` -> the figure."""
  figure, axes = _subplots(len(datasets_3d))
  markers = _markers(rows)
  several_2d = len({row['dataset_2d'] for row in rows} - {''}) > 1
  for ax, dataset in zip(axes, datasets_3d):
    lines, labelled = collections.defaultdict(list), set()
    for row in rows:
      if row['dataset_3d'] == dataset and row['mpjpe'] is not None:
        lines[row['pretraining'], row['backbone'], row['dataset_2d'], row['seed']].append(row)
    for (pretraining, backbone, _, _), group in lines.items():
      group.sort(key=lambda row: row['steps'])
      label = _series_label(group[0], several_2d)
      ax.plot(
        [row['images_total'] for row in group],
        [row['mpjpe'] for row in group],
        color=MODE_COLORS[pretraining],
        linestyle=MODE_LINES[pretraining],
        marker=markers[backbone],
        label=None if label in labelled else label,
      )
      labelled.add(label)
    _mean_pose_line(ax, [row for row in rows if row['dataset_3d'] == dataset])
    ax.set_xscale('log')
    _log_count_axis(ax.xaxis)
    ax.set_xlabel('training images seen, 2D pre-training included (log scale)')
    ax.set_ylabel(ACCURACY_LABEL)
    ax.set_title(f'X = {dataset}')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize='small')
  figure.savefig(path, dpi=110)
  return figure


def budget_label(budget: int | str) -> str:
  """A cell's 3D budget for titles: '800 3D steps', or the recipe it follows."""
  return f'{budget} 3D steps' if isinstance(budget, int) else budget


def plot_backbone(rows: list[dict], datasets_3d, path: str) -> Figure:
  """MPJPE on own X against parameters (mean over seeds), one panel per X, one series per
  pretraining mode (and 2D dataset). `rows`: those of one 3D budget (the report gives its
  largest, results.largest_budget_rows). Saves it to `path` -> the figure."""
  figure, axes = _subplots(len(datasets_3d))
  several_2d = len({row['dataset_2d'] for row in rows} - {''}) > 1
  for ax, dataset in zip(axes, datasets_3d):
    series = collections.defaultdict(lambda: collections.defaultdict(list))
    for row in rows:
      if row['dataset_3d'] == dataset and row['mpjpe'] is not None:
        series[row['pretraining'], row['dataset_2d']][row['params'], row['backbone']].append(
          row['mpjpe']
        )
    for (pretraining, dataset_2d), points in series.items():
      points = sorted(points.items())
      params = [p for (p, _), _ in points]
      means = [float(np.mean(values)) for _, values in points]
      ax.plot(
        params,
        means,
        color=MODE_COLORS[pretraining],
        linestyle=MODE_LINES[pretraining],
        marker='o',
        label=_series_label(
          {'backbone': '', 'pretraining': pretraining, 'dataset_2d': dataset_2d}, several_2d
        ).strip(),
      )
      for (p, backbone), mean in zip((key for key, _ in points), means):
        ax.annotate(
          backbone, (p, mean), textcoords='offset points', xytext=(4, 4), fontsize='small'
        )
    _mean_pose_line(ax, [row for row in rows if row['dataset_3d'] == dataset])
    ax.set_xscale('log')
    _log_count_axis(ax.xaxis)
    ax.set_xlabel('backbone size (parameters, log scale)')
    ax.set_ylabel(ACCURACY_LABEL)
    ax.set_title(f'X = {dataset}, {budget_label(rows[0]["budget"] if rows else 0)}')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize='small')
  figure.savefig(path, dpi=110)
  return figure


def plot_generalisation(labels: list[str], columns, matrix: list[list], path: str) -> None:
  """The generalisation matrix as a heatmap with its values written in the cells."""
  values = np.array([[np.nan if v is None else v for v in row] for row in matrix], float)
  values = values.reshape(len(labels), len(columns))
  label_width = 0.07 * max((len(label) for label in labels), default=10)
  figure = Figure(
    figsize=(label_width + 1.8 * len(columns) + 2, 1.5 + 0.45 * len(labels)), layout='constrained'
  )
  ax = figure.subplots()
  image = ax.imshow(values, cmap='YlOrRd', aspect='auto')
  finite = values[np.isfinite(values)]
  low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
  for (i, j), value in np.ndenumerate(values):
    if np.isfinite(value):
      dark = (value - low) / max(high - low, 1e-9) > 0.6
      ax.text(j, i, f'{value:.1f}', ha='center', va='center', color='white' if dark else 'black')
  ax.set_xticks(range(len(columns)), labels=list(columns), rotation=20, ha='right')
  ax.set_yticks(range(len(labels)), labels=labels)
  ax.set_xlabel('evaluated on')
  ax.set_title('MPJPE (mm) across datasets, lower is better')
  figure.colorbar(image, ax=ax, label='MPJPE (mm)')
  figure.savefig(path, dpi=110)

"""The human-readable outputs of `hpe-analyze`: summary.md, angles.png and report.html, written
from plain data (the runner's summary dict and per-track angle series).

  from hpe_jax.analysis import report
  text = report.summary_markdown(summary)                 # GitHub-style Markdown tables
  report.plot_angles('angles.png', tracks, reps, 'knee_flexion_left')
  report.write_html('report.html', summary, text, 'angles.png', video='clip_2d.mp4')

report.html is one self-contained file: inline CSS, the plot and (up to EMBED_VIDEO_MAX_BYTES)
the video as data: URIs, so it can be mailed or copied alone. A bigger video is linked relative
to the report, with a note saying so.
"""

from __future__ import annotations

import base64
import html
import math
import mimetypes
import os
from typing import Iterable
from urllib import parse

from matplotlib import collections as mpl_collections
from matplotlib import lines as mpl_lines
from matplotlib import patches as mpl_patches
from matplotlib.figure import Figure
import numpy as np

from hpe_jax import errors
from hpe_jax import files
from hpe_jax.analysis import angles as angles_lib
from hpe_jax.inference import outputs

# Videos up to this size are embedded in report.html; a data: URI adds a third, and browsers
# hold the whole page in memory.
EMBED_VIDEO_MAX_BYTES = 64 * 2**20
PLOT_DPI = 100
PLOT_WIDTH_IN = 12.0
PANEL_HEIGHT_IN = 2.2
# Series longer than twice this are drawn as a per-bucket min/max envelope with this many time
# buckets (about the axes' width in pixels at PLOT_DPI): the same picture, far fewer vertices.
PLOT_BUCKETS = 1100
# Line styles of the angles sharing a panel, in registry order (left solid, right dashed).
_STYLES = ('-', '--')
_SHADE_ALPHA = 0.12
# Bytes of video base64-encoded per write: a multiple of 3, so the pieces join without padding.
_ENCODE_CHUNK = 3 * 2**20


class ReportError(errors.HpeError):
  """A report file cannot be written, or a file it embeds read; the message names it."""


# ---------------------------------------------------------------------------------------------
# Formatting shared by summary.md and report.html.


def _number(value, digits: int) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return '-'
  return f'{value:.{digits}f}'


def _title(summary: dict) -> str:
  name = summary.get('video') or summary.get('source') or 'video'
  return f'Movement analysis: {os.path.basename(name)}'


def _header_items(summary: dict) -> list[tuple[str, str]]:
  """(label, text) lines describing the run, absent fields left out."""
  items = []
  for key in ('source', 'video'):
    if summary.get(key):
      items.append((key, str(summary[key])))
  frames = summary.get('frames')
  if frames is not None:
    text = f'{frames} frames'
    if summary.get('fps'):
      text += f' at {summary["fps"]:.4g} fps'
    if summary.get('duration_s') is not None:
      text += f' ({_number(summary["duration_s"], 2)} s)'
    items.append(('clip', text))
  if summary.get('angles_from'):
    source = {'3d': '3D joints', '2d': '2D image joints'}.get(summary['angles_from'])
    items.append(('angles from', source or str(summary['angles_from'])))
  if (summary.get('up') or {}).get('method'):
    items.append(('up direction', str(summary['up']['method'])))
  if summary.get('min_score') is not None:
    items.append(('joint score threshold', f'{summary["min_score"]:g}'))
  skipped = summary.get('skipped_tracks') or []
  if skipped:
    items.append(
      (
        'skipped tracks',
        '; '.join(
          f'track {t["track"]} ({t["frames"]} frames: {t["reason"]})'
          if t.get('reason')
          else f'track {t["track"]} ({t["frames"]} frames)'
          for t in skipped
        ),
      )
    )
  return items


def _notes(summary: dict) -> list[str]:
  """The caveats to read before the numbers: how up was chosen, and the runner's note."""
  notes = []
  up = summary.get('up') or {}
  if up.get('note'):
    notes.append(f'Up direction ({up.get("method", "?")}): {up["note"]}')
  if summary.get('note'):
    notes.append(str(summary['note']))
  return notes


_ANGLE_HEADERS = ('angle', 'min (°)', 'max (°)', 'mean (°)', 'frames measured')
_REP_HEADERS = ('#', 'start (s)', 'end (s)', 'duration (s)', 'min (°)', 'max (°)')


def _track_heading(track: dict) -> str:
  text = f'Track {track["track"]}: {track["frames"]} frames'
  if track.get('first_s') is not None and track.get('last_s') is not None:
    text += f', {_number(track["first_s"], 2)}-{_number(track["last_s"], 2)} s'
  return text


def _angle_rows(track: dict) -> list[tuple[str, ...]]:
  return [
    (
      name,
      _number(stats.get('min'), 1),
      _number(stats.get('max'), 1),
      _number(stats.get('mean'), 1),
      f'{stats.get("frames_measured", 0)} / {track["frames"]}',
    )
    for name, stats in track.get('angles', {}).items()
  ]


def _rep_tracks(summary: dict) -> list[tuple[str, list[tuple[str, ...]]]]:
  """Per track with repetitions: (heading, table rows)."""
  result = []
  for track, counted in ((summary.get('repetitions') or {}).get('tracks') or {}).items():
    count = counted.get('count', len(counted.get('repetitions', [])))
    heading = f'Track {track}: {count} repetition{"" if count == 1 else "s"}'
    # None where the movement was too small to set them.
    thresholds = {k: v for k, v in (counted.get('thresholds') or {}).items() if v is not None}
    if thresholds:
      heading += ' (thresholds: ' + ', '.join(
        f'{key.removesuffix("_deg")} {_number(value, 1)}°'
        if key.endswith('_deg')
        else f'{key} {value}'
        for key, value in thresholds.items()
      )
      heading += ')'
    rows = [
      (
        str(i),
        _number(rep.get('start_s'), 2),
        _number(rep.get('end_s'), 2),
        _number(rep.get('duration_s'), 2),
        _number(rep.get('min_deg'), 1),
        _number(rep.get('max_deg'), 1),
      )
      for i, rep in enumerate(counted.get('repetitions', []), 1)
    ]
    result.append((heading, rows))
  return result


# ---------------------------------------------------------------------------------------------
# summary.md


def _markdown_table(headers: Iterable[str], rows: list[tuple[str, ...]]) -> list[str]:
  """A GitHub table, columns padded to equal widths so it reads in a terminal too; the first
  column left-aligned, the numbers right-aligned."""
  headers = tuple(headers)
  widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

  def line(cells):
    padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
    return '| ' + ' | '.join(padded) + ' |'

  rule = '| ' + ' | '.join('-' * w if i == 0 else '-' * (w - 1) + ':' for i, w in enumerate(widths))
  return [line(headers), rule + ' |', *(line(r) for r in rows)]


def summary_markdown(summary: dict) -> str:
  """summary.md: header lines, per track a table of every angle's min, max and mean (degrees)
  and frames measured, and the repetitions if counted. Unmeasured values read '-'."""
  out = [f'# {_title(summary)}']
  items = _header_items(summary)
  if items:
    out += ['', *(f'- {label}: {text}' for label, text in items)]
  for note in _notes(summary):
    out += ['', f'> {note}']
  for track in summary.get('tracks') or []:
    out += ['', f'## {_track_heading(track)}', '']
    out += _markdown_table(_ANGLE_HEADERS, _angle_rows(track))
  repetitions = summary.get('repetitions')
  if repetitions:
    out += ['', f'## Repetitions of {repetitions.get("angle", "?")}']
    for heading, rows in _rep_tracks(summary):
      out += ['', heading]
      if rows:
        out += [''] + _markdown_table(_REP_HEADERS, rows)
  return '\n'.join(out) + '\n'


# ---------------------------------------------------------------------------------------------
# angles.png


def _with_breaks(time_s: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """A NaN inserted wherever frames are missing (a step over 1.5 median steps): a track that
  left the picture shows a gap, not a straight line across."""
  if len(time_s) < 3:
    return time_s, values
  steps = np.diff(time_s)
  at = np.nonzero(steps > 1.5 * np.median(steps))[0] + 1
  return np.insert(time_s, at, np.nan), np.insert(values, at, np.nan)


def _envelope(
  time_s: np.ndarray, values: np.ndarray, start: float, stop: float, buckets: int
) -> tuple[np.ndarray, np.ndarray]:
  """The series as its min and max per time bucket over [start, stop], drawn as one vertical
  stroke per bucket: every spike stays visible; an empty or unmeasured bucket is a gap."""
  index = np.clip(((time_s - start) / (stop - start) * buckets).astype(np.int64), 0, buckets - 1)
  low = np.full(buckets, np.nan)
  high = np.full(buckets, np.nan)
  np.fmin.at(low, index, values)  # fmin/fmax skip NaN unless both sides are
  np.fmax.at(high, index, values)
  centres = start + (np.arange(buckets) + 0.5) * (stop - start) / buckets
  return np.repeat(centres, 2), np.stack([low, high], axis=1).reshape(-1)


def _drawn(time_s, values, start, stop) -> tuple[np.ndarray, np.ndarray]:
  time_s = np.asarray(time_s, np.float64)
  values = np.asarray(values, np.float64)
  if len(time_s) > 2 * PLOT_BUCKETS and stop > start:
    return _envelope(time_s, values, start, stop, PLOT_BUCKETS)
  return _with_breaks(time_s, values)


def _spans(repetitions) -> list[list[tuple[float, float]]]:
  """Each repetition's rectangle over the full axes height (x: data, y: axes fraction)."""
  return [[(r.start_s, 0), (r.start_s, 1), (r.end_s, 1), (r.end_s, 0)] for r in repetitions]


def _save_atomically(path: str, write) -> None:
  """Runs write(temporary path), then renames it to `path`; an OS error becomes ReportError."""
  try:
    files.replace_atomically(path, write)
  except OSError as e:
    raise ReportError(outputs.cannot_write(path, e)) from None


def plot_angles(
  path: str, tracks: dict, repetitions: dict | None = None, rep_angle: str | None = None
) -> None:
  """angles.png: one panel per angles.GROUPS entry, the angles over time (s) in degrees.

  Args:
    path: the PNG to write.
    tracks: track id -> {'time_s': (T,) seconds, 'angles': {name: (T,) degrees, NaN unmeasured}}.
      One colour per track; in a panel the registry's first angle (left) is solid, the second
      (right) dashed. Unmeasured frames and missing frames are gaps. Series longer than
      2 * PLOT_BUCKETS frames are drawn as a min/max envelope per time bucket.
    repetitions: track id -> the Repetitions counted on `rep_angle`: each shaded over all panels
      in the track's colour, and its start and end marked with lines in rep_angle's panel.
    rep_angle: the angle the repetitions were counted on.

  Raises:
    ReportError: the file cannot be written.
  """
  groups = angles_lib.GROUPS
  height = PANEL_HEIGHT_IN * len(groups)
  figure = Figure(figsize=(PLOT_WIDTH_IN, height), dpi=PLOT_DPI)
  axes = figure.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
  # Fixed margins (inches) rather than constrained layout, which would double the drawing time.
  figure.subplots_adjust(
    left=0.8 / PLOT_WIDTH_IN,
    right=1 - 0.15 / PLOT_WIDTH_IN,
    top=1 - 0.4 / height,
    bottom=0.5 / height,
    hspace=0.1,
  )
  times = [np.asarray(t['time_s'], np.float64) for t in tracks.values() if len(t['time_s'])]
  start = min((float(np.nanmin(t)) for t in times), default=0.0)
  stop = max((float(np.nanmax(t)) for t in times), default=1.0)
  stop = stop if stop > start else start + 1.0
  colours = {str(track): f'C{i % 10}' for i, track in enumerate(tracks)}
  rep_group = angles_lib.BY_NAME[rep_angle].group if rep_angle in angles_lib.BY_NAME else None
  for ax, group in zip(axes, groups):
    names = [a.name for a in angles_lib.ANGLES if a.group == group]
    measured = False
    for track, series in tracks.items():
      for name, style in zip(names, _STYLES):
        if name not in series['angles']:
          continue
        x, y = _drawn(series['time_s'], series['angles'][name], start, stop)
        measured |= bool(np.isfinite(y).any())
        ax.plot(x, y, style, color=colours[str(track)], linewidth=1.0)
    for track, reps in (repetitions or {}).items():
      if not reps:
        continue
      colour = colours.get(str(track), 'grey')
      # One collection per track and panel: hundreds of repetitions cost one draw call.
      ax.add_collection(
        mpl_collections.PolyCollection(
          _spans(reps),
          transform=ax.get_xaxis_transform(),
          facecolor=colour,
          edgecolor='none',
          alpha=_SHADE_ALPHA,
        ),
        autolim=False,
      )
      if group == rep_group:
        edges = [r.start_s for r in reps] + [r.end_s for r in reps]
        ax.vlines(edges, 0, 1, transform=ax.get_xaxis_transform(), colors=colour, linewidth=0.6)
    if not measured:
      ax.text(0.5, 0.5, 'not measured', transform=ax.transAxes, ha='center', color='grey')
    handles = [mpl_lines.Line2D([], [], color='0.3', linestyle=s) for s in _STYLES[: len(names)]]
    labels = list(names)
    if group == rep_group and repetitions:
      handles.append(mpl_patches.Patch(color='0.3', alpha=0.3))
      labels.append(f'repetitions of {rep_angle}')
    ax.legend(handles, labels, loc='upper right', fontsize='small', framealpha=0.8)
    ax.set_ylabel(f'{group} (°)')
    ax.grid(True, alpha=0.3)
  axes[-1].set_xlim(start, stop)
  axes[-1].set_xlabel('time (s)')
  if tracks:
    figure.legend(
      [mpl_lines.Line2D([], [], color=colours[str(t)]) for t in tracks],
      [f'track {t}' for t in tracks],
      loc='upper center',
      ncols=min(len(tracks), 10),
      frameon=False,
    )
  _save_atomically(path, lambda temporary: figure.savefig(temporary, dpi=PLOT_DPI, format='png'))


# ---------------------------------------------------------------------------------------------
# report.html

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1250px; margin: 1.5em auto;
  padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
h3 { font-size: 1em; margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; }
th { background: #f2f2f2; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
dl.run { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.run dt { font-weight: 600; } dl.run dd { margin: 0; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
video { display: block; width: 100%; max-width: 960px; max-height: 70vh; background: #000; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
"""


def _html_table(headers: Iterable[str], rows: list[tuple[str, ...]], numbers: bool = True) -> str:
  """A table; with `numbers`, the columns after the first right-aligned."""
  head = ''.join(f'<th>{html.escape(h)}</th>' for h in headers)
  body = ''.join(
    '<tr>'
    + ''.join(
      f'<td class="n">{html.escape(c)}</td>' if i and numbers else f'<td>{html.escape(c)}</td>'
      for i, c in enumerate(row)
    )
    + '</tr>'
    for row in rows
  )
  return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _data_uri(path: str, mime: str) -> str:
  with open(path, 'rb') as f:
    return f'data:{mime};base64,' + base64.b64encode(f.read()).decode('ascii')


def _video_parts(report_path: str, video: str | None) -> list:
  """The video section as text pieces and, where its base64 goes, ('embed', video path): the
  encoded video is streamed into the file rather than held as one string."""
  e = html.escape
  if video is None:
    return [
      '<p class="note">No video: this report was made without the predicted overlay video.</p>'
    ]
  if not os.path.isfile(video):
    return [f'<p class="note">The video {e(video)} was not found when the report was written.</p>']
  size = os.path.getsize(video)
  if size <= EMBED_VIDEO_MAX_BYTES:
    mime = mimetypes.guess_type(video)[0] or 'video/mp4'
    return [
      f'<video controls preload="metadata" title="{e(os.path.basename(video))}" '
      f'src="data:{mime};base64,',
      ('embed', video),
      '"></video>',
    ]
  relative = os.path.relpath(os.path.abspath(video), os.path.dirname(os.path.abspath(report_path)))
  href = parse.quote(relative.replace(os.sep, '/'))
  return [
    f'<p class="note">The video ({size / 2**20:.0f} MiB) is not embedded: it is larger than the '
    f'{EMBED_VIDEO_MAX_BYTES / 2**20:.0f} MiB embedding limit. Open it here: '
    f'<a href="{e(href)}">{e(relative)}</a> (a link relative to this report, so keep the two '
    'files where they are).</p>'
  ]


def _html_parts(summary: dict, markdown: str, plot_png: str | None, video_parts: list) -> list:
  e = html.escape
  title = _title(summary)
  parts = [
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    f'<title>{e(title)}</title><style>{_CSS}</style></head><body>',
    f'<h1>{e(title)}</h1>',
    '<dl class="run">'
    + ''.join(f'<dt>{e(label)}</dt><dd>{e(text)}</dd>' for label, text in _header_items(summary))
    + '</dl>',
  ]
  parts += [f'<p class="note">{e(note)}</p>' for note in _notes(summary)]
  parts.append('<h2>Video</h2>')
  parts += video_parts
  parts.append('<h2>Angles over time</h2>')
  if plot_png:
    parts.append(
      f'<img class="plot" alt="joint angles over time" src="{_data_uri(plot_png, "image/png")}">'
    )
  else:
    parts.append('<p class="note">No plot.</p>')
  parts.append('<h2>Angles per track</h2>')
  for track in summary.get('tracks') or []:
    parts.append(f'<h3>{e(_track_heading(track))}</h3>')
    parts.append(_html_table(_ANGLE_HEADERS, _angle_rows(track)))
  repetitions = summary.get('repetitions')
  if repetitions:
    parts.append(f'<h2>Repetitions of {e(str(repetitions.get("angle", "?")))}</h2>')
    for heading, rows in _rep_tracks(summary):
      parts.append(f'<h3>{e(heading)}</h3>')
      if rows:
        parts.append(_html_table(_REP_HEADERS, rows))
  parts.append('<h2>Angle definitions</h2>')
  parts.append(
    _html_table(
      ('angle', 'panel', 'definition'),
      [(a.name, a.group, a.definition) for a in angles_lib.ANGLES],
      numbers=False,
    )
  )
  parts.append(
    f'<details><summary>summary.md</summary><pre>{e(markdown)}</pre></details></body></html>\n'
  )
  return parts


def write_html(
  path: str, summary: dict, markdown: str, plot_png: str | None, video: str | None = None
) -> None:
  """report.html: one self-contained page (no external files or network) with the run's
  header, the video, the plot, the angle and repetition tables, the angle definitions and
  summary.md's text.

  Args:
    path: the HTML file to write (atomically).
    summary: the runner's summary dict (summary.json).
    markdown: summary_markdown(summary), shown verbatim in a fold for copying.
    plot_png: angles.png, embedded; None leaves a note.
    video: the overlay video (H.264 MP4): embedded up to EMBED_VIDEO_MAX_BYTES, else linked
      relative to `path` with a note; None leaves a note.

  Raises:
    ReportError: a file cannot be read or the report cannot be written.
  """
  try:
    parts = _html_parts(summary, markdown, plot_png, _video_parts(path, video))
  except OSError as e:
    raise ReportError(f'cannot read {e.filename} for the report ({e.strerror or e})') from None

  def write(temporary: str) -> None:
    with open(temporary, 'w', encoding='utf-8') as f:
      for part in parts:
        if isinstance(part, str):
          f.write(part)
          continue
        with open(part[1], 'rb') as video_file:
          while chunk := video_file.read(_ENCODE_CHUNK):
            f.write(base64.b64encode(chunk).decode('ascii'))

  _save_atomically(path, write)

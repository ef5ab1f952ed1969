"""Analysing a predicted video (what `hpe-analyze` and `hpe-predict VIDEO --analyze` do; the
command's module doc describes the files).

  result = analyze_run.analyze('predictions/squat.jsonl', up='camera', reps='knee_flexion_left')

The frames file (`<stem>.jsonl`) and its header (`<stem>.json` beside it, written by
hpe-predict) are read into one dense series per track, from its first frame to its last;
joints scoring below `min_score` and frames the track is absent from are NaN, and every value
computed from them stays NaN: gaps are reported, never filled.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Callable

import numpy as np

from hpe_jax import errors
from hpe_jax import joints
from hpe_jax.analysis import angles as angles_lib
from hpe_jax.analysis import motion_files
from hpe_jax.analysis import repetitions
from hpe_jax.analysis import report
from hpe_jax.analysis import up as up_lib
from hpe_jax.inference import outputs
from hpe_jax.inference import visualize

# A track seen in fewer frames is skipped (stated in the summary): too short for a movement.
MIN_TRACK_FRAMES = 10
SKELETONS = {'mpii16': joints.MPII16, 'h36m17': joints.H36M17}
UPS = ('camera', 'floor')
NO_DEPTH_NOTE = (
  'the run predicted 2D joints only (no depth): the angles are as seen in the image plane, '
  'unsigned, and equal the 3D ones only for movement parallel to it; no motion files'
)


class AnalysisError(errors.HpeError, ValueError):
  """A frames file or an option cannot be analysed; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class Track:
  """One person's frames, dense from its first frame to its last.

  Attributes:
    track: the tracker's number.
    frames: (T,) video frame indices, consecutive.
    present: (T,) whether the track was predicted in each frame.
    time_s: (T,) seconds.
    joints_2d: (T, 16, 2) pixels; joints_3d: (T, 16, 3) mm, camera axes, pelvis at 0, or None
      (2D-only run). NaN where absent or scoring below the threshold.
  """

  track: int
  frames: np.ndarray
  present: np.ndarray
  time_s: np.ndarray
  joints_2d: np.ndarray
  joints_3d: np.ndarray | None


def header_path(jsonl: str) -> str:
  return os.path.splitext(jsonl)[0] + '.json'


def default_out_dir(jsonl: str) -> str:
  return os.path.splitext(jsonl)[0] + '_analysis'


def _not_ours(path: str, line: int, why: str) -> AnalysisError:
  return AnalysisError(
    f'{path}:{line}: {why}: not a frames file of hpe-predict (one {{"frame", "time_s", '
    '"people"} per line); give the <video>.jsonl that hpe-predict wrote for a video'
  )


def read_header(jsonl: str) -> dict:
  """The frames file's header (<stem>.json beside it), or {} if there is none."""
  path = header_path(jsonl)
  if not os.path.isfile(path):
    return {}
  try:
    with open(path) as f:
      header = json.load(f)
  except (OSError, ValueError) as e:
    raise AnalysisError(
      f'{path}: cannot be read as JSON ({e}): it is the header hpe-predict '
      'writes beside the .jsonl; predict the video again'
    ) from None
  if not isinstance(header, dict):
    raise AnalysisError(f'{path}: not a header of hpe-predict (a JSON object)')
  return header


def read_tracks(jsonl: str, min_score: float) -> tuple[list[Track], int]:
  """Every track of a frames file and the number of frame lines.

  Raises:
    AnalysisError: no such file, a line that is not ours, or no person in any frame.
  """
  if not os.path.isfile(jsonl):
    raise AnalysisError(f'{jsonl}: no such file: give the <video>.jsonl that hpe-predict wrote')
  people: dict[int, list] = {}
  times: dict[int, float] = {}
  lines = 0
  with open(jsonl, errors='replace') as f:
    for number, text in enumerate(f, 1):
      if not text.strip():
        continue
      try:
        line = json.loads(text)
      except ValueError:
        raise _not_ours(jsonl, number, 'not JSON') from None
      if not isinstance(line, dict):
        raise _not_ours(jsonl, number, f'a JSON {type(line).__name__}, not an object')
      try:
        frame, time_s, persons = int(line['frame']), float(line['time_s']), list(line['people'])
        times[frame] = time_s
        for person in persons:
          people.setdefault(int(person['track']), []).append(
            (frame, person['joints_2d'], person['scores'], person['joints_3d'])
          )
      except KeyError as e:
        raise _not_ours(jsonl, number, f'no "{e.args[0]}"') from None
      except (ValueError, TypeError):
        raise _not_ours(jsonl, number, 'an unexpected value') from None
      lines += 1
  if not lines:
    raise AnalysisError(f'{jsonl}: holds no frames: predict the video again')
  if not people:
    raise AnalysisError(
      f'{jsonl}: no person was predicted in any of its {lines} frames: nothing to analyse'
    )
  known = np.array(sorted(times))
  known_s = np.array([times[k] for k in known])
  tracks = []
  for track, rows in sorted(people.items()):
    try:
      frames = np.array([row[0] for row in rows])
      j2d = np.array([row[1] for row in rows], np.float64).reshape(len(rows), joints.NUM_JOINTS, 2)
      scores = np.array([row[2] for row in rows], np.float64).reshape(len(rows), joints.NUM_JOINTS)
      has_3d = rows[0][3] is not None
      j3d = (
        np.array([row[3] for row in rows], np.float64).reshape(len(rows), joints.NUM_JOINTS, 3)
        if has_3d
        else None
      )
    except (ValueError, TypeError):
      raise AnalysisError(
        f'{jsonl}: track {track} has joints of another shape than MPII-16 (16 joints): not a '
        'frames file of hpe-predict'
      ) from None
    dense = np.arange(frames.min(), frames.max() + 1)
    at = frames - dense[0]
    present = np.zeros(len(dense), bool)
    present[at] = True
    unmeasured = scores < min_score

    def densify(values):
      out = np.full((len(dense),) + values.shape[1:], np.nan)
      values = values.copy()
      values[unmeasured] = np.nan
      out[at] = values
      return out

    tracks.append(
      Track(
        track=track,
        frames=dense,
        present=present,
        time_s=np.interp(dense, known, known_s),
        joints_2d=densify(j2d),
        joints_3d=None if j3d is None else densify(j3d),
      )
    )
  return tracks, lines


def _skeleton_points(points: np.ndarray, skeleton: str) -> np.ndarray:
  """MPII-16 points (..., 16, D), NaN-masked, in the skeleton's joint order."""
  if skeleton == 'mpii16':
    return points
  mapped, mask = joints.H36M_FROM_MPII(np.nan_to_num(points), np.isfinite(points).all(-1))
  mapped = mapped.astype(np.float64)
  mapped[mask == 0] = np.nan
  return mapped


def _stats(values: np.ndarray) -> dict:
  measured = values[np.isfinite(values)]
  if not len(measured):
    return {'min': None, 'max': None, 'mean': None, 'frames_measured': 0}
  return {
    'min': round(float(measured.min()), 1),
    'max': round(float(measured.max()), 1),
    'mean': round(float(measured.mean()), 1),
    'frames_measured': int(len(measured)),
  }


def _write_csv(path: str, header: list[str], columns: list[np.ndarray], formats: list[str]):
  """A CSV with NaNs as empty cells (what pandas and spreadsheets read as missing)."""
  buffer = io.StringIO()
  np.savetxt(buffer, np.column_stack(columns), fmt=formats, delimiter=',')
  text = buffer.getvalue().replace('nan', '')
  try:
    with open(path, 'w') as f:
      f.write(','.join(header) + '\n' + text)
  except OSError as e:
    raise AnalysisError(outputs.cannot_write(path, e)) from None


def check_options(up: str, reps: str | None, skeleton: str) -> None:
  """Options checked before any file is read.

  Raises:
    AnalysisError: an unknown --up, --reps angle or --skeleton.
  """
  if up not in UPS:
    raise AnalysisError(f'--up={up}: choose camera or floor')
  if skeleton not in SKELETONS:
    raise AnalysisError(f'--skeleton={skeleton}: choose {" or ".join(SKELETONS)}')
  if reps is not None:
    try:
      angles_lib.lookup(reps)
    except angles_lib.UnknownAngleError as e:
      raise AnalysisError(f'--reps={reps}: {e.args[0]}') from None


def analyze(
  jsonl: str,
  out_dir: str | None = None,
  *,
  up: str = 'camera',
  reps: str | None = None,
  skeleton: str = 'mpii16',
  min_score: float | None = None,
  focal_px: float | None = None,
  log: Callable[[str], None] = print,
) -> dict:
  """Analyses one frames file into `out_dir` (default <stem>_analysis beside it).

  Returns:
    The summary (also in summary.json), with 'files': name -> path of every file written.
  Raises:
    AnalysisError: a frames file that is not ours, no track long enough, an unusable option or
      output directory.
    up.FloorError: --up=floor and the feet do not fix a ground plane.
  """
  check_options(up, reps, skeleton)
  if min_score is None:
    min_score = visualize.MIN_CONFIDENT_SCORE
  header = read_header(jsonl)
  tracks, lines = read_tracks(jsonl, min_score)
  out_dir = out_dir or default_out_dir(jsonl)
  skipped = [
    {
      'track': t.track,
      'frames': int(t.present.sum()),
      'reason': f'in fewer than {MIN_TRACK_FRAMES} frames: too short to analyse',
    }
    for t in tracks
    if t.present.sum() < MIN_TRACK_FRAMES
  ]
  tracks = [t for t in tracks if t.present.sum() >= MIN_TRACK_FRAMES]
  for skip in skipped:
    log(f'track {skip["track"]}: skipped, {skip["reason"]} ({skip["frames"]} frames)')
  if not tracks:
    raise AnalysisError(
      f'{jsonl}: every track is in fewer than {MIN_TRACK_FRAMES} frames: too short to analyse'
    )
  depth = tracks[0].joints_3d is not None
  fps = float(header.get('fps') or 0) or _fps_from(tracks)
  size = header.get('image_size') or {}
  up_facts = _up_direction(up, depth, tracks, size, focal_px)
  if not depth:
    log(f'note: {NO_DEPTH_NOTE}')
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise AnalysisError(
      f'cannot create {out_dir} ({e.strerror or e}): choose another --analysis_dir'
    ) from None

  series, summary_tracks, rep_results, rep_thresholds, files = {}, [], {}, {}, {}
  rotation = up_lib.y_up_rotation(np.asarray(up_facts['vector'])) if depth else None
  names = SKELETONS[skeleton]
  for t in tracks:
    values = angles_lib.compute(t.joints_3d if depth else t.joints_2d, up_facts.get('vector'))
    for name in values:
      values[name][~t.present] = np.nan
    series[t.track] = {'time_s': t.time_s, 'angles': values, 'present': t.present}
    summary_tracks.append(
      {
        'track': t.track,
        'frames': int(t.present.sum()),
        'first_s': round(float(t.time_s[0]), 3),
        'last_s': round(float(t.time_s[-1]), 3),
        'angles': {name: _stats(v) for name, v in values.items()},
      }
    )
    if reps:
      found, thresholds = repetitions.count(t.time_s, values[reps])
      rep_results[t.track] = found
      rep_thresholds[t.track] = thresholds
      summary_tracks[-1]['repetitions'] = len(found)
    if depth:
      points = _skeleton_points(t.joints_3d, skeleton) @ rotation.T
      stem = os.path.join(out_dir, f'track{t.track}')
      motion_files.write_trc(
        f'{stem}.trc', names, points, t.time_s, fps, frame_numbers=t.frames + 1
      )
      motion_files.write_c3d(f'{stem}.c3d', names, points, fps, first_frame=int(t.frames[0]) + 1)
      files[f'track{t.track}'] = [f'{stem}.trc', f'{stem}.c3d']
      if np.isfinite(points).all((-1, -2)).any():
        summary_tracks[-1]['bvh'] = motion_files.write_bvh(f'{stem}.bvh', names, points, fps)
        files[f'track{t.track}'].append(f'{stem}.bvh')
      else:
        summary_tracks[-1]['bvh'] = None
        log(f'track {t.track}: no BVH, no frame has every joint measured (see --min_score)')

  files['angles'] = os.path.join(out_dir, 'angles.csv')
  _write_angles_csv(files['angles'], tracks, series)
  files['joints'] = os.path.join(out_dir, 'joints.csv')
  _write_joints_csv(files['joints'], tracks, skeleton, rotation)
  summary = {
    'source': jsonl,
    'out_dir': out_dir,
    'video': header.get('video'),
    'fps': fps,
    'frames': lines,
    'duration_s': round(lines / fps, 3),
    'run': header.get('run'),
    'angles_from': '3d' if depth else '2d',
    'note': None if depth else NO_DEPTH_NOTE,
    'up': up_facts,
    'min_score': min_score,
    'skeleton': skeleton,
    'joint_names': list(names),
    'joints_note': 'joints.csv and the motion files: mm, y up (the up direction above), x the '
    "camera's right made horizontal, z towards the camera; pelvis at 0 (the model predicts no "
    'distance)'
    if depth
    else 'joints.csv: image pixels, x right, y down',
    'definitions': {a.name: a.definition for a in angles_lib.ANGLES},
    'tracks': summary_tracks,
    'skipped_tracks': skipped,
    'repetitions': None,
    'files': files,
  }
  if reps:
    summary['repetitions'] = {
      'angle': reps,
      'tracks': {
        str(track): {
          'count': len(found),
          'repetitions': [r.as_dict() for r in found],
          'thresholds': rep_thresholds[track],
        }
        for track, found in rep_results.items()
      },
    }
  files['plot'] = os.path.join(out_dir, 'angles.png')
  report.plot_angles(files['plot'], series, rep_results or None, reps)
  markdown = report.summary_markdown(summary)
  files['markdown'] = os.path.join(out_dir, 'summary.md')
  files['summary'] = os.path.join(out_dir, 'summary.json')
  files['report'] = os.path.join(out_dir, 'report.html')
  _write_text(files['markdown'], markdown)
  _write_text(files['summary'], json.dumps(summary, indent=2))
  overlay = header.get('overlay_file')
  video = os.path.join(os.path.dirname(jsonl), overlay) if overlay else None
  report.write_html(
    files['report'],
    summary,
    markdown,
    files['plot'],
    video if video and os.path.isfile(video) else None,
  )
  return summary


def _fps_from(tracks: list[Track]) -> float:
  steps = np.concatenate([np.diff(t.time_s) for t in tracks])
  steps = steps[steps > 0]
  return float(1.0 / np.median(steps)) if len(steps) else 30.0


def _up_direction(up, depth, tracks, size, focal_px) -> dict:
  if not depth:
    return {
      'method': 'image',
      'vector': None,
      'note': "angles against the vertical use the image's up (2D joints)",
    }
  if up == 'camera':
    return {
      'method': 'camera',
      'vector': up_lib.CAMERA_UP.tolist(),
      'note': "the camera's up (--up=camera): assumes the camera was level; a tilted camera "
      'adds its tilt to trunk flexion (--up=floor finds the floor from the feet instead)',
    }
  if not size:
    raise AnalysisError(
      '--up=floor needs the video size from the header hpe-predict writes beside the .jsonl; '
      'use --up=camera'
    )
  width, height = int(size['width']), int(size['height'])
  focal = focal_px or up_lib.DEFAULT_FOCAL_PER_SIDE * max(width, height)
  placed = [up_lib.place(t.joints_2d, t.joints_3d, (width, height), focal) for t in tracks]
  vector, facts = up_lib.floor_up(placed)
  return {
    'method': 'floor',
    'vector': [round(float(v), 6) for v in vector],
    'note': f'the normal of the ground plane the feet touch (--up=floor), found from '
    f'{facts["ground_points"]} frames; it is {facts["camera_tilt_deg"]:.1f} degrees from the '
    "camera's up",
    'focal_px': focal,
    **{k: round(float(v), 2) for k, v in facts.items()},
  }


def _write_text(path: str, text: str) -> None:
  try:
    with open(path, 'w') as f:
      f.write(text)
  except OSError as e:
    raise AnalysisError(outputs.cannot_write(path, e)) from None


def _track_rows(tracks: list[Track], columns) -> tuple[np.ndarray, list]:
  """Rows of every track's present frames, sorted by frame then track: the (N, 3) time_s,
  frame, track columns and, per `columns(track)` array (T, ...), its rows (N, ...)."""
  keys = np.concatenate(
    [np.stack([t.time_s, t.frames, np.full(len(t.frames), t.track)], 1)[t.present] for t in tracks]
  )
  order = np.lexsort((keys[:, 2], keys[:, 1]))
  values = np.concatenate([columns(t)[t.present] for t in tracks])
  return keys[order], values[order]


def _write_angles_csv(path: str, tracks: list[Track], series: dict) -> None:
  keys, values = _track_rows(
    tracks, lambda t: np.stack([series[t.track]['angles'][n] for n in angles_lib.NAMES], 1)
  )
  _write_csv(
    path,
    ['time_s', 'frame', 'track', *angles_lib.NAMES],
    [keys, values],
    ['%.4f', '%d', '%d'] + ['%.1f'] * len(angles_lib.NAMES),
  )


def _write_joints_csv(path: str, tracks: list[Track], skeleton: str, rotation) -> None:
  names = SKELETONS[skeleton]
  if rotation is None:
    points, axes = (lambda t: _skeleton_points(t.joints_2d, skeleton)), ('u', 'v')
  else:
    points, axes = (lambda t: _skeleton_points(t.joints_3d, skeleton) @ rotation.T), 'xyz'
  keys, values = _track_rows(tracks, lambda t: points(t).reshape(len(t.frames), -1))
  _write_csv(
    path,
    ['time_s', 'frame', 'track', *(f'{n}_{a}' for n in names for a in axes)],
    [keys, values],
    ['%.4f', '%d', '%d'] + ['%.1f'] * values.shape[1],
  )

r"""Analyses the movement in a predicted video: joint angles, repetitions, standard motion files
and a report a browser opens.

  hpe-predict --workdir=runs/finetune squat.mp4      # writes predictions/squat.jsonl
  hpe-analyze predictions/squat.jsonl [--reps=knee_flexion_left] [--up=floor] [--skeleton=h36m17]
  hpe-predict --workdir=runs/finetune squat.mp4 --analyze --reps=knee_flexion_left

(`python -m hpe_jax.commands.analyze` is the same.) Reads the frames file hpe-predict wrote for a
video and its header beside it (<stem>.json), and writes <stem>_analysis/ beside them (or
--analysis_dir):
  angles.csv     one row per frame and track: time_s, frame, track, then every angle in degrees
                 (empty: not measured); pandas.read_csv reads it as is;
  joints.csv     the same rows with every joint's x, y, z in mm (y up, see --up; pelvis at 0) in
                 --skeleton's order;
  summary.json, summary.md  per track and angle: min, max, mean and the frames measured; the
                 repetitions; the up direction used; the angle definitions;
  angles.png     each angle against time, one panel per joint (left solid, right dashed),
                 repetitions shaded;
  trackN.trc     per track: OpenSim's marker file (mm, the video's frame rate);
  trackN.c3d     the same markers as C3D (biomechanics software; residual -1: not measured);
  trackN.bvh     a skeleton with the track's median bone lengths and per-frame joint rotations
                 (Blender, Maya, MotionBuilder);
  report.html    one self-contained page: the overlay video, the plots, the tables.
A straight limb, an upright trunk and a level head are 0 degrees; hpe_jax/analysis/angles.py
defines every angle (docs/movement_analysis.md lists them). Joints scoring below --min_score and
frames a track is missing from leave gaps: nothing is filled in. A run without depth (2D only)
gives the angles as seen in the image and no motion files, said once. Tracks seen in fewer than
10 frames are skipped with a line saying so. Exit codes: 0 written, 2 a problem (one line on
stderr says which and what to do).
"""

from __future__ import annotations

from absl import app
from absl import flags

from hpe_jax import cli

# The analysis flags, shared with `hpe-predict --analyze` (commands/predict.py imports them).
UP = flags.DEFINE_enum(
  'up',
  'camera',
  ['camera', 'floor'],
  "Which way is up for trunk angles and motion files: camera (the camera's up; assumes it was "
  'held level) or floor (the normal of the ground the feet touch over the clip; people must '
  'walk about, not stand in place).',
)
REPS = flags.DEFINE_string(
  'reps',
  None,
  'Count repetitions of this angle, e.g. knee_flexion_left (squats), elbow_flexion_right '
  '(curls); the angles: hpe_jax/analysis/angles.py or docs/movement_analysis.md.',
)
SKELETON = flags.DEFINE_enum(
  'skeleton',
  'mpii16',
  ['mpii16', 'h36m17'],
  "The joints of joints.csv and the motion files: mpii16 (the model's) or h36m17 (Human3.6M's "
  '17, spine and nose interpolated as the evaluation does: what lifting and biomechanics '
  'tools expect).',
)
MIN_SCORE = flags.DEFINE_float(
  'min_score',
  None,
  'Joints scoring below this are not measured in that frame (a gap, never a guess); default: '
  "the overlay's threshold for a confident joint, 0.3.",
  lower_bound=0.0,
  upper_bound=1.0,
)
FOCAL_PX = flags.DEFINE_float(
  'focal_px',
  None,
  "With --up=floor: the camera's focal length in pixels (default: the frame's longer side).",
  lower_bound=1.0,
)
ANALYSIS_DIR = flags.DEFINE_string(
  'analysis_dir', None, 'Where the files go (default: <stem>_analysis beside the .jsonl).'
)

FLAGS = (UP, REPS, SKELETON, MIN_SCORE, FOCAL_PX, ANALYSIS_DIR)


def analyze_files(paths: list[str], log=print) -> list[dict]:
  """Analyses each frames file with the flags' settings; prints where the files are."""
  from hpe_jax.analysis import analyze_run  # pylint: disable=g-import-not-at-top  (a fast --help)

  if ANALYSIS_DIR.value and len(paths) > 1:
    raise app.UsageError('--analysis_dir takes one frames file; without it each gets its own')
  try:
    analyze_run.check_options(UP.value, REPS.value, SKELETON.value)
  except analyze_run.AnalysisError as e:
    raise app.UsageError(str(e)) from None
  summaries = []
  for path in paths:
    summary = analyze_run.analyze(
      path,
      ANALYSIS_DIR.value,
      up=UP.value,
      reps=REPS.value,
      skeleton=SKELETON.value,
      min_score=MIN_SCORE.value,
      focal_px=FOCAL_PX.value,
      log=log,
    )
    log(describe(summary))
    summaries.append(summary)
  return summaries


def describe(summary: dict) -> str:
  """A few lines saying what was found and where the files are."""
  files = summary['files']
  tracks = summary['tracks']
  lines = [
    f'{summary["source"]}: {len(tracks)} track{"s" * (len(tracks) != 1)} analysed '
    f'({summary["angles_from"].upper()} angles, up: {summary["up"]["method"]})'
  ]
  reps = summary['repetitions']
  if reps:
    counts = ', '.join(
      f'track {track}: {result["count"]}' for track, result in reps['tracks'].items()
    )
    lines.append(f'  repetitions of {reps["angle"]}: {counts}')
  lines += [
    f'  report:  {files["report"]}',
    f'  angles:  {files["angles"]}',
    f'  summary: {files["markdown"]}',
  ]
  motion = [path for key, paths in files.items() if key.startswith('track') for path in paths]
  if motion:
    lines.append(f'  motion files: {len(motion)} (TRC, C3D, BVH) in {summary["out_dir"]}')
  return '\n'.join(lines)


def main(args: list[str]) -> None:
  if not args:
    raise app.UsageError('give the .jsonl frames file(s) hpe-predict wrote for a video')
  analyze_files(args, log=lambda line: print(line, flush=True))


def run() -> None:
  cli.run(main, positional=True)


if __name__ == '__main__':
  run()

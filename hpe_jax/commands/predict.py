r"""Predicts people's poses on images, videos and a live camera with a trained run; saves pictures,
videos and the joints as JSON.

  hpe-predict --workdir=runs/finetune photo.jpg [more.jpg ...] [--bbox=x,y,w,h ...] \
      [--out_dir=DIR]
  hpe-predict --workdir=runs/finetune walk.mp4 [--smooth]   # a video
  hpe-predict --workdir=runs/finetune --camera=0 [--smooth]  # until Ctrl-C
  hpe-predict --workdir=runs/finetune --boxes=detections.json [--box_threshold=0.5] \
      [--format=coco] photos/*.jpg        # many people per image
  hpe-predict --model=model.hpe photo.jpg ...   # a file of hpe-export
  hpe-predict --workdir=runs/finetune squat.mp4 --analyze --reps=knee_flexion_left

(`python -m hpe_jax.commands.predict` is the same.) Exactly one of --workdir and --model names
the model. Per image, in --out_dir (default <workdir>/predictions, or predictions/ beside the
--model file):
  <stem>_2d.png  every person's 2D skeleton over the image (rings: joints scoring below 0.3;
                 grey outlines: the boxes);
  <stem>_3d.png  each person's 3D skeleton seen from the front and the side (models with depth);
  <stem>.json    {"image", "image_size", "run", "joint_names", conventions, "people": [per
                 person {"box", "box_score", "square" (the crop the model saw), "joints_2d"
                 (16 x, y pixels), "scores" (16), "joints_3d" (16 x, y, z root-relative mm, null
                 without depth; "scale_rule" says how they are scaled), "warning" if any}]}:
                 one shape for one person or many.
A 2D-only (pre-trained) run writes the overlay and the 2D joints; 3D needs a fine-tuned run.

A video (an input ending in .mp4, .mov, .avi, .mkv, .webm, ...) or --camera=N gives, with <stem>
the video's name or cameraN:
  <stem>.jsonl   one line per frame: {"frame" (0 first), "time_s", "people": [as in an image's
                 JSON, each with "track": the person's number across frames (matched by box
                 overlap)]};
  <stem>_2d.mp4  the skeletons over the frames, the input's size and frame rate (H.264 in MP4,
                 which browsers play);
  <stem>.json    the video, fps, the model, joint_names and conventions, "frames" (the count,
                 once done).
Frames are decoded on a background thread and predicted --batch_size people per device call;
a line every few seconds gives frames/s and the ETA. Ctrl-C ends a camera, and stops a video
early with exit code 130: either way every file is whole, holding the frames done. --smooth
filters each person's joints over time (a One-Euro filter: --smooth_min_cutoff, --smooth_beta,
--smooth_d_cutoff). For many people per frame, give --boxes with "frame" entries (below).
--analyze then analyses each video's movement into <stem>_analysis/ (joint angles, repetitions,
TRC/C3D/BVH motion files, report.html: `hpe-analyze --help`), with its flags.

A directory given stands for its images (the files OpenCV reads as images, in name order; not
its subdirectories'): its other files are skipped with one warning counting them. Files given by
name are all predicted: any that is missing or not an image or video stops the run before the
model loads, with one error naming every such file.

One person per image: without --bbox each whole image is the person's box. One --bbox applies to
every image; otherwise give one --bbox per image, in the order of the images, with --bbox=none
for an image to be used whole. A box is padded by 1.25 into the square the model sees.

Many people per image: --boxes=FILE takes any detector's person boxes in COCO detection-results
format, [{"image_id" or "file_name", "bbox": [x, y, w, h], "score", "category_id"}, ...];
"file_name" matches an image's path or base name, "image_id" an image whose name is that number
(COCO's 000000001163.jpg is 1163) or that string. Boxes scoring below --box_threshold or of
another category than 1 (person) are dropped, boxes for images not given ignored; images left
without a box are skipped with a warning naming them. One rule for every box, --bbox's and
--boxes': the model cannot be given a box that lies wholly outside its image or frame, or one
over 10 times its size (a typo, or not pixels). A --bbox that breaks it stops the run before the
model loads; a --boxes box is skipped with a warning naming it (one bad detection), and a file
that keeps no box for any image stops the run, saying why its boxes were dropped.
For videos, entries have "frame" (0-based) instead, and "file_name" to name one of several
videos; a frame without a box is written with no people.

--format=coco also writes <out_dir>/keypoints_coco.json, every person of the images, videos and
camera in COCO keypoint-results layout (a bare list, as COCO's tools read it): {"image_id" (a
number), "category_id": 1, "keypoints": x, y, score per joint, "score": mean joint score x box
score, "bbox", "keypoints_3d": x, y, z mm per joint (models with depth), "track_id" (frames)}. The
joints are MPII's 16, not COCO's 17. An image keeps a numeric "image_id" its --boxes entries give
(COCO's); the others are numbered 1, 2, ... in the order given (skipping the file's numbers), then
the frames of each video and the camera in order (a lone video's frame f is image f + 1).
keypoints_coco.names.json beside it says which number is which image or frame ("images", a COCO
ground-truth skeleton: "id", "file_name", "width", "height", "frame"), the joint order
("keypoint_names", "categories") and "kpt_oks_sigmas", the OKS sigmas of MPII-16 (COCO's for the
joints COCO has; hpe_jax.joints.MPII16_OKS_SIGMAS). Score against ground truth with MPII-16
keypoints and these ids with pycocotools, the sigmas replacing COCO's 17:
  names = json.load(open('keypoints_coco.names.json'))
  gt = COCO('ground_truth.json')
  E = COCOeval(gt, gt.loadRes('keypoints_coco.json'), 'keypoints')
  E.params.kpt_oks_sigmas = np.array(names['kpt_oks_sigmas'])
  E.evaluate(); E.accumulate(); E.summarize()

Warnings (stderr) name the image and box (for a video, the frames): a box mostly outside its
image, a person whose every joint scores below 0.3 (an untrained model, or no person in the box).
Inputs and boxes are checked before the model loads, and nothing is created before: a file that
is missing or not an image or video, a camera that does not open, a box count that fits neither
rule, a --bbox outside the rule above or a boxes file that cannot be used stops the run with an
error naming it.

One --out_dir, one writer: hpe-predict locks the output directory (the directory itself: no file
is added) until its last file is written, and a second hpe-predict into the same directory stops
with an error naming the first's PID (before loading the model if the directory exists).
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from hpe_jax import cli
from hpe_jax.commands import analyze as analyze_command
from hpe_jax.inference import outputs
from hpe_jax.inference import tracking

_WORKDIR = flags.DEFINE_string(
  'workdir', None, "A trained run's directory (config.json and checkpoints/), e.g. runs/finetune."
)
_MODEL = flags.DEFINE_string(
  'model',
  None,
  'Instead of --workdir: a model exported by hpe-export (runs with jax and numpy, without the '
  'model code).',
)
_BBOX = flags.DEFINE_multi_string(
  'bbox',
  [],
  "A person box x,y,w,h in pixels (top-left corner, width, height, as COCO's): "
  'one for all images, or one per image in order (none: that image whole).',
)
_BOXES = flags.DEFINE_string(
  'boxes',
  None,
  'Person boxes of any detector, in COCO detection-results format (a JSON list of {"image_id" '
  'or "file_name", "bbox": [x, y, w, h], "score"}): every kept box is predicted. Not with --bbox.',
)
_BOX_THRESHOLD = flags.DEFINE_float(
  'box_threshold',
  0.5,
  'With --boxes: the lowest detector score of a box kept.',
  lower_bound=0.0,
  upper_bound=1.0,
)
_FORMAT = flags.DEFINE_enum(
  'format',
  'json',
  list(outputs.FORMATS),
  'json: the per-input files only; coco: also keypoints_coco.json (COCO keypoint results of the '
  'images and video frames: numeric image ids, MPII-16 joints) and keypoints_coco.names.json (the '
  'ids, joint order and OKS sigmas COCOeval needs) in --out_dir.',
)
_STEP = flags.DEFINE(
  cli.StepParser(),
  'step',
  None,
  "With --workdir: the run's saved step to use, or best (train.keep_best; default: the newest).",
)
_CAMERA = flags.DEFINE_integer(
  'camera', None, 'Predict live from camera N (0: the first) until Ctrl-C.', lower_bound=0
)
_BATCH_SIZE = flags.DEFINE_integer(
  'batch_size',
  None,
  'People per device call (default: 16; with --camera 1, the lowest latency).',
  lower_bound=1,
)
_SMOOTH = flags.DEFINE_bool(
  'smooth',
  False,
  "Videos and cameras: smooth each person's joints over time with a One-Euro filter (Casiez et "
  'al. 2012): the faster a joint moves, the less it is smoothed, so that still joints stop '
  'jittering and moving ones do not lag.',
)
_SMOOTH_MIN_CUTOFF = flags.DEFINE_float(
  'smooth_min_cutoff',
  tracking.OneEuroParams.min_cutoff,
  'With --smooth: the cutoff frequency (Hz) of a still joint; lower: smoother, more lag.',
)
_SMOOTH_BETA = flags.DEFINE_float(
  'smooth_beta',
  tracking.OneEuroParams.beta,
  'With --smooth: how fast the cutoff rises with speed (Hz per box side per second in 2D, per '
  'metre per second in 3D); higher: less lag on fast moves, more jitter.',
)
_SMOOTH_D_CUTOFF = flags.DEFINE_float(
  'smooth_d_cutoff',
  tracking.OneEuroParams.d_cutoff,
  "With --smooth: the cutoff frequency (Hz) of the speed's own smoothing.",
)
_ANALYZE = flags.DEFINE_bool(
  'analyze',
  False,
  'Videos and cameras: then analyse the movement (hpe-analyze: joint angles, repetitions '
  'with --reps, motion files, report.html) into <stem>_analysis/; its flags --up, --reps, '
  '--skeleton, --min_score, --focal_px apply.',
)
_OUT_DIR = flags.DEFINE_string(
  'out_dir',
  None,
  'Where the outputs go (default <workdir>/predictions, or predictions/ beside --model).',
)


def _print_saved(result: dict) -> None:
  files = result['files']
  count = len(result['record']['people'])
  print(f'{result["image"]}: {count} {"person" if count == 1 else "people"}')
  print(f'  2D overlay:  {files["2d"]}')
  print(f'  3D skeleton: {files["3d"] or "none: " + result["record"]["note_3d"]}')
  print(f'  joints JSON: {files["json"]}', flush=True)


def _print_video(summary: dict) -> None:
  files = summary['files']
  stopped = ' (stopped by Ctrl-C)' if summary['interrupted'] else ''
  print(
    f'{summary["source"]}: {summary["frames"]} frames in {summary["seconds"]:.1f} s, '
    f'{summary["frames_per_s"]:.1f} frames/s{stopped}'
  )
  print(f'  per-frame joints: {files["jsonl"]}')
  print(f'  2D overlay video: {files["mp4"]}')
  print(f'  frames header:    {files["json"]}', flush=True)


def main(args: list[str]) -> None:
  if (_WORKDIR.value is None) == (_MODEL.value is None):
    raise app.UsageError('give exactly one of --workdir (a trained run) and --model (an export)')
  if _STEP.value is not None and _MODEL.value is not None:
    raise app.UsageError('--step picks a checkpoint of --workdir; an exported --model has one')
  if not args and _CAMERA.value is None:
    raise app.UsageError('give image or video files after the flags, or --camera=N')
  if not _ANALYZE.value:
    for flag in analyze_command.FLAGS:
      if flags.FLAGS[flag.name].present:
        raise app.UsageError(f'--{flag.name} is an option of --analyze: add --analyze')
  if _BOXES.value is not None and _BBOX.value:
    raise app.UsageError('give --bbox (one person per image) or --boxes (a file), not both')
  smoothing = None
  if _SMOOTH.value:
    try:
      smoothing = tracking.OneEuroParams(
        _SMOOTH_MIN_CUTOFF.value, _SMOOTH_BETA.value, _SMOOTH_D_CUTOFF.value
      )
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  # pylint: disable=g-import-not-at-top  (a fast --help)
  from hpe_jax.inference import boxes as boxes_lib
  from hpe_jax.inference import predict_run
  from hpe_jax.inference import video

  if _ANALYZE.value and _CAMERA.value is None and not any(map(video.is_video, args)):
    raise app.UsageError('--analyze analyses videos and cameras: give a video file or --camera=N')

  def finish(result: dict) -> None:  # the output directory still held
    if result['written']:  # --format=coco: write_coco's files
      coco = result['written']
      people = f'{coco["people"]} {"person" if coco["people"] == 1 else "people"}'
      images = f'{coco["images"]} {"image" if coco["images"] == 1 else "images"}'
      images += ' (video frames included)' if result['videos'] else ''
      print(
        f'COCO keypoints of {people} in {images}: {coco["results"]} (image ids, joint order and '
        f'OKS sigmas: {coco["names"]})'
      )
    if _ANALYZE.value:
      analyze_command.analyze_files(
        [video['files']['jsonl'] for video in result['videos']],
        log=lambda line: print(line, flush=True),
      )

  result = predict_run.predict(
    args,
    workdir=_WORKDIR.value,
    model=_MODEL.value,
    step=_STEP.value,
    camera=_CAMERA.value,
    bbox=[boxes_lib.parse_box(text) for text in _BBOX.value],
    boxes_file=_BOXES.value,
    box_threshold=_BOX_THRESHOLD.value,
    output_format=_FORMAT.value,
    out_dir=_OUT_DIR.value,
    batch_size=_BATCH_SIZE.value,
    smoothing=smoothing,
    on_image=_print_saved,
    on_video=_print_video,
    finish=finish,
    log=lambda line: print(line, flush=True),
  )
  if result['interrupted']:
    sys.exit(130)


def run() -> None:
  cli.run(main, positional=True)


if __name__ == '__main__':
  run()

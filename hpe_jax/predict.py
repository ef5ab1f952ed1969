r"""Predicts people's poses on images with a trained run; saves pictures and the joints as JSON.

  python -m hpe_jax.predict --workdir=runs/finetune photo.jpg [more.jpg ...] \
      [--bbox=x,y,w,h ...] [--out_dir=DIR]
  python -m hpe_jax.predict --workdir=runs/finetune --boxes=detections.json \
      [--box_threshold=0.5] [--format=coco] photos/*.jpg        # many people per image
  python -m hpe_jax.predict --model=model.hpe photo.jpg ...   # a `python -m hpe_jax.export` file

Exactly one of --workdir and --model names the model. Per image, in --out_dir (default
<workdir>/predictions, or predictions/ beside the --model file):
  <stem>_2d.png  every person's 2D skeleton over the image (rings: joints scoring below 0.3;
                 grey outlines: the boxes);
  <stem>_3d.png  each person's 3D skeleton seen from the front and the side (models with depth);
  <stem>.json    {"image", "image_size", "run", "joint_names", conventions, "people": [per
                 person {"box", "box_score", "square" (the crop the model saw), "joints_2d"
                 (16 x, y pixels), "scores" (16), "joints_3d" (16 x, y, z root-relative mm, null
                 without depth; "scale_rule" says how they are scaled), "warning" if any}]}:
                 one shape for one person or many.
A 2D-only (pre-trained) run writes the overlay and the 2D joints; 3D needs a fine-tuned run.

One person per image: without --bbox each whole image is the person's box. One --bbox applies to
every image; otherwise give one --bbox per image, in the order of the images, with --bbox=none
for an image to be used whole. A box is padded by 1.25 into the square the model sees.

Many people per image: --boxes=FILE takes any detector's person boxes in COCO detection-results
format, [{"image_id" or "file_name", "bbox": [x, y, w, h], "score", "category_id"}, ...];
"file_name" matches an image's path or base name, "image_id" an image whose name is that number
(COCO's 000000001163.jpg is 1163) or that string. Boxes scoring below --box_threshold or of
another category than 1 (person) are dropped, boxes for images not given ignored; images left
without a box are skipped with a warning naming them, as are boxes wholly outside their image.

--format=coco also writes <out_dir>/keypoints_coco.json, every person in COCO keypoint-results
layout (a bare list, as COCO's tools read it): {"image_id" (the boxes file's, else the file
name), "category_id": 1, "keypoints": x, y, score per joint, "score": mean joint score x box
score, "bbox", "keypoints_3d": x, y, z mm per joint (models with depth)}. The joints are MPII's
16, not COCO's 17: their order is named in keypoints_coco.names.json beside it ("keypoint_names",
and a COCO "categories" entry with "keypoints" and "skeleton").

Warnings (stderr) name the image and box: a box mostly outside its image, a person whose every
joint scores below 0.3 (an untrained model, or no person in the box).
Images and boxes are checked before the model loads: a file that is missing or not an image, a
box count that fits neither rule or a boxes file that cannot be used stops the run with an error
naming it (nothing is skipped).
"""

from __future__ import annotations

from absl import app
from absl import flags

from hpe_jax import cli

_WORKDIR = flags.DEFINE_string(
  'workdir', None, "A trained run's directory (config.json and checkpoints/), e.g. runs/finetune."
)
_MODEL = flags.DEFINE_string(
  'model',
  None,
  'Instead of --workdir: a model exported by python -m hpe_jax.export (runs with jax and numpy, '
  'without the model code).',
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
  ['json', 'coco'],
  'json: the per-image files only; coco: also keypoints_coco.json (COCO keypoint results, '
  'MPII-16 joints) and keypoints_coco.names.json (their order) in --out_dir.',
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


def main(args: list[str]) -> None:
  if (_WORKDIR.value is None) == (_MODEL.value is None):
    raise app.UsageError('give exactly one of --workdir (a trained run) and --model (an export)')
  if not args:
    raise app.UsageError('give one or more image files after the flags')
  if _BOXES.value is not None and _BBOX.value:
    raise app.UsageError('give --bbox (one person per image) or --boxes (a file), not both')
  # pylint: disable=g-import-not-at-top  (a fast --help)
  from hpe_jax.inference import boxes as boxes_lib
  from hpe_jax.inference import image_files

  boxes = [boxes_lib.parse_box(text) for text in _BBOX.value]
  out_dir = _OUT_DIR.value or image_files.default_out_dir(_WORKDIR.value, _MODEL.value)
  results = image_files.predict_files(
    _WORKDIR.value,
    args,
    boxes,
    out_dir,
    on_saved=_print_saved,
    model=_MODEL.value,
    boxes_file=_BOXES.value,
    box_threshold=_BOX_THRESHOLD.value,
  )
  if _FORMAT.value == 'coco':
    paths = image_files.write_coco(results, out_dir)
    count = sum(len(result['record']['people']) for result in results)
    people = f'{count} {"person" if count == 1 else "people"}'
    print(f'COCO keypoints of {people}: {paths["results"]} (joint order: {paths["names"]})')


def run() -> None:
  cli.run(main, positional=True)


if __name__ == '__main__':
  run()

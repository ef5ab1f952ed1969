r"""Predicts a person's pose on images with a trained run; saves pictures and the joints as JSON.

  python -m hpe_jax.predict --workdir=runs/finetune photo.jpg [more.jpg ...] \
      [--bbox=x,y,w,h ...] [--out_dir=DIR]
  python -m hpe_jax.predict --model=model.hpe photo.jpg ...   # a `python -m hpe_jax.export` file

Exactly one of --workdir and --model names the model. Per image, in --out_dir (default
<workdir>/predictions, or predictions/ beside the --model file):
  <stem>_2d.png  the 2D skeleton over the image (rings: joints scoring below 0.3);
  <stem>_3d.png  the 3D skeleton seen from the front and the side (models with depth only);
  <stem>.json    the joints in pixels with scores, the square the model saw and, for models
                 with depth, root-relative mm (its "scale_rule" says how they are scaled).
A 2D-only (pre-trained) run writes the overlay and the 2D joints; 3D needs a fine-tuned run.

Boxes: without --bbox each whole image is the person's box. One --bbox applies to every image;
otherwise give one --bbox per image, in the order of the images, with --bbox=none for an image to
be used whole. A box is padded by 1.25 into the square the model sees (written to the JSON).
Images are checked before the model loads: a file that is missing or not an image stops the run
with an error naming it (nothing is skipped), as does a box count that fits neither rule.
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
_OUT_DIR = flags.DEFINE_string(
  'out_dir',
  None,
  'Where the outputs go (default <workdir>/predictions, or predictions/ beside --model).',
)


def _print_saved(result: dict) -> None:
  files = result['files']
  print(f'{result["image"]}:')
  print(f'  2D overlay:  {files["2d"]}')
  print(f'  3D skeleton: {files["3d"] or "none: " + result["record"]["note_3d"]}')
  print(f'  joints JSON: {files["json"]}', flush=True)


def main(args: list[str]) -> None:
  if (_WORKDIR.value is None) == (_MODEL.value is None):
    raise app.UsageError('give exactly one of --workdir (a trained run) and --model (an export)')
  if not args:
    raise app.UsageError('give one or more image files after the flags')
  from hpe_jax.inference import image_files  # pylint: disable=g-import-not-at-top  (fast --help)

  boxes = [image_files.parse_box(text) for text in _BBOX.value]
  image_files.predict_files(
    _WORKDIR.value, args, boxes, _OUT_DIR.value, on_saved=_print_saved, model=_MODEL.value
  )


def run() -> None:
  cli.run(main, positional=True)


if __name__ == '__main__':
  run()

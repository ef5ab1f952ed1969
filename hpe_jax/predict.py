r"""Predicts a person's pose on images with a trained run; saves pictures and the joints as JSON.

  python -m hpe_jax.predict --workdir=runs/finetune photo.jpg [more.jpg ...] \
      [--bbox=x,y,w,h ...] [--out_dir=DIR]

Per image, in --out_dir (default <workdir>/predictions):
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

import json
import os
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import cv2
import numpy as np

from hpe_jax import joints

_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained run\'s directory (config.json and '
                               'checkpoints/), e.g. runs/finetune.')
_BBOX = flags.DEFINE_multi_string(
    'bbox', [], 'A person box x,y,w,h in pixels (top-left corner, width, height, as COCO\'s): '
    'one for all images, or one per image in order (none: that image whole).')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Where the outputs go (default '
                               '<workdir>/predictions).')

NO_DEPTH_NOTE = ('this run predicts 2D only (model.depth=False): 3D joints need a run fine-tuned '
                 'with depth (python -m hpe_jax.main --config=configs/finetune.py)')


def check_box(box, name: str | None = None) -> tuple[float, float, float, float]:
  """A person box (x, y, w, h) in pixels as four floats; `name` names it in errors.

  Raises:
    ValueError: not four finite numbers, or no area.
  """
  name = name or f'box {box!r}'
  try:
    values = () if isinstance(box, str) else tuple(float(v) for v in box)
  except (TypeError, ValueError):
    values = ()
  if len(values) != 4 or not all(np.isfinite(values)):
    raise ValueError(f'{name} is not x,y,w,h: four numbers (pixels of the top-left corner, '
                     'width, height)')
  if values[2] <= 0 or values[3] <= 0:
    raise ValueError(f'{name} has no area: its width and height must be positive')
  return values


def parse_box(text: str) -> tuple[float, float, float, float] | None:
  """A --bbox value: 'x,y,w,h' (pixels) -> (x, y, w, h); 'none' -> None (the whole image).

  Raises:
    ValueError: not four numbers, or no area.
  """
  if text.strip().lower() == 'none':
    return None
  return check_box(text.split(','), f'--bbox={text}')


def boxes_per_image(boxes: Sequence | None, num_images: int) -> list:
  """Expands None (every image whole), one box (for all) or one box per image into a list of
  num_images boxes (x, y, w, h) or None."""
  if not boxes:
    return [None] * num_images
  if len(boxes) == 1:
    return list(boxes) * num_images
  if len(boxes) != num_images:
    raise ValueError(f'{len(boxes)} boxes for {num_images} images: give one box for all images '
                     'or one per image (none for an image to be used whole)')
  return list(boxes)


def read_image(path: str) -> np.ndarray:
  """The image at `path` as (H, W, 3) uint8 RGB (EXIF orientation applied).

  Raises:
    ValueError: the file is missing or is not an image OpenCV can decode.
  """
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such image file')
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    raise ValueError(f'{path}: cannot be read as an image (OpenCV decodes JPEG, PNG, BMP, ...)')
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def output_paths(out_dir: str, image_path: str) -> dict[str, str]:
  """The files written for one image: {'2d': overlay PNG, '3d': skeleton PNG, 'json': joints}."""
  stem = os.path.join(out_dir, os.path.splitext(os.path.basename(image_path))[0])
  return {'2d': f'{stem}_2d.png', '3d': f'{stem}_3d.png', 'json': f'{stem}.json'}


def _check_inputs(paths: Sequence[str], out_dir: str) -> None:
  """Fails before the slow model load: unreadable images, or two images whose outputs collide."""
  stems = {}
  for path in paths:
    # Reads only the file's signature; a file that passes but fails to decode fails later.
    if not os.path.isfile(path) or not cv2.haveImageReader(path):
      read_image(path)  # raises the error naming the file
    json_path = output_paths(out_dir, path)['json']
    if json_path in stems:
      raise ValueError(f'{stems[json_path]} and {path} would both write {json_path}: rename one '
                       'or predict them in separate calls with different --out_dir')
    stems[json_path] = path


def _save_image(path: str, image_rgb: np.ndarray) -> None:
  if not cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
    raise OSError(f'cannot write {path}')


def low_confidence_warning(scores: np.ndarray) -> str:
  """A warning if no joint scores as confident as visualize.MIN_CONFIDENT_SCORE, else ''."""
  from hpe_jax import visualize
  if np.max(scores) >= visualize.MIN_CONFIDENT_SCORE:
    return ''
  return (f'no joint scores above {visualize.MIN_CONFIDENT_SCORE} (best {np.max(scores):.2f}): '
          'the box holds no person the model recognises, or the model is barely trained; the '
          'pose is a guess')


def joints_record(image_path: str, image_shape, box, prediction: dict, run: dict) -> dict:
  """The JSON record of one prediction.

  Args:
    image_path, image_shape: the image and its (H, W, ...).
    box: its (x, y, w, h) or None.
    prediction: Predictor.predict's result.
    run: {'workdir', 'step', 'depth'}: the model that predicted.
  """
  record = {
      'image': image_path,
      'image_size': {'width': image_shape[1], 'height': image_shape[0]},
      'run': run,
      'box': None if box is None else [float(v) for v in box],
      'square': {'center': [float(v) for v in prediction['box_center']],
                 'side': float(prediction['box_side']),
                 'note': 'the square crop the model saw: the box padded by 1.25, or the whole '
                         'image without a box'},
      'joints_2d_convention': 'image pixels, x right, y down, (0, 0) the centre of the top-left '
                              'pixel; score: the heatmap maximum, about 1 when confident',
      'joints_2d': {name: {'x': float(x), 'y': float(y), 'score': float(score)}
                    for name, (x, y), score in zip(joints.MPII16, prediction['joints_2d'],
                                                   prediction['scores'])},
  }
  if 'joints_3d' not in prediction:
    record['joints_3d'] = None
    record['note_3d'] = NO_DEPTH_NOTE
    return record
  canonical_sum = sum(joints.CANONICAL_LIMB_LENGTHS_MM.values())
  record['joints_3d_convention'] = ('mm relative to the pelvis (at 0), x right, y down, z away '
                                    'from the camera')
  record['scale_rule'] = (
      'one image has no absolute scale: the pose is scaled so that its 8 limbs (shins, thighs, '
      f'forearms, upper arms) sum to the canonical {canonical_sum:.2f} mm '
      '(joints.CANONICAL_LIMB_LENGTHS_MM); the proportions are the model\'s')
  record['joints_3d'] = {name: {'x': float(x), 'y': float(y), 'z': float(z)}
                         for name, (x, y, z) in zip(joints.MPII16, prediction['joints_3d'])}
  return record


def predict_files(workdir: str, paths: Sequence[str], boxes: Sequence | None = None,
                  out_dir: str | None = None,
                  on_saved: Callable[[dict], None] | None = None) -> list[dict]:
  """Predicts every image with the run in `workdir` and saves its outputs (see the module doc).

  Args:
    workdir: a trained run's directory.
    paths: image files.
    boxes: None (every image whole), a list of one (x, y, w, h) box for all images, or a list of
      one box per image (None: that image whole); pixels, (x, y) the top-left corner.
    out_dir: the output directory; None: <workdir>/predictions.
    on_saved: called with each result as soon as its files are written.
  Returns:
    Per image {'image': path, 'files': {'2d', '3d' (None without depth), 'json'}: paths,
    'record': the JSON written, 'prediction': Predictor.predict's arrays}.
  Raises:
    ValueError: an unreadable image, a bad box or box count (before the model loads).
    CheckpointError: `workdir` holds no usable run.
  """
  out_dir = out_dir or os.path.join(workdir, 'predictions')
  boxes = boxes_per_image(boxes, len(paths))
  boxes = [None if box is None else check_box(box) for box in boxes]
  _check_inputs(paths, out_dir)
  # Imported here so that bad arguments fail without loading JAX.
  from hpe_jax import inference
  from hpe_jax import visualize
  predictor = inference.load(workdir)
  run = {'workdir': workdir, 'step': predictor.step, 'depth': predictor.has_depth}
  os.makedirs(out_dir, exist_ok=True)
  results = []
  for path, box in zip(paths, boxes):
    image = read_image(path)
    try:
      prediction = predictor.predict(image, box)
    except ValueError as e:
      raise ValueError(f'{path}: {e}') from None
    files = output_paths(out_dir, path)
    _save_image(files['2d'], visualize.draw_2d(image, prediction['joints_2d'],
                                               prediction['scores']))
    if 'joints_3d' in prediction:
      visualize.plot_3d(prediction['joints_3d'], files['3d'],
                        title=f'{os.path.basename(path)}: scaled to canonical limb lengths')
    else:
      files['3d'] = None
    record = joints_record(path, image.shape, box, prediction, run)
    warning = low_confidence_warning(prediction['scores'])
    if warning:
      record['warning'] = warning
      print(f'warning: {path}: {warning}', file=sys.stderr, flush=True)
    with open(files['json'], 'w') as f:
      json.dump(record, f, indent=2)
    results.append({'image': path, 'files': files, 'record': record, 'prediction': prediction})
    if on_saved:
      on_saved(results[-1])
  return results


def _print_saved(result: dict) -> None:
  files = result['files']
  print(f'{result["image"]}:')
  print(f'  2D overlay:  {files["2d"]}')
  print(f'  3D skeleton: {files["3d"] or "none: " + NO_DEPTH_NOTE}')
  print(f'  joints JSON: {files["json"]}', flush=True)


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError('give one or more image files after the flags')
  logging.set_verbosity(logging.ERROR)  # Orbax warns about every read-only checkpoint manager
  from hpe_jax.training import checkpoint
  try:
    boxes = [parse_box(text) for text in _BBOX.value]
    predict_files(_WORKDIR.value, paths, boxes, _OUT_DIR.value, on_saved=_print_saved)
  except (checkpoint.CheckpointError, ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  app.run(main)

"""Predicting on image files: check the images and boxes, predict, and save per image a 2D
overlay, a 3D plot (models with depth) and the joints as JSON (what `python -m hpe_jax.predict`
does; its module doc describes the files).

Images are checked before the model loads: a file that is missing or not an image stops the run
with an error naming it (nothing is skipped), as does a box count that fits neither rule.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable
from typing import Sequence

import cv2
import numpy as np

from hpe_jax import errors
from hpe_jax import inference
from hpe_jax import joints
from hpe_jax.inference import visualize

NO_DEPTH_NOTE = (
  'this run predicts 2D only (model.depth=False): 3D joints need a run fine-tuned '
  'with depth (python -m hpe_jax.main --config=configs/finetune.py)'
)


class ImageError(errors.HpeError, ValueError):
  """An image, a person box or an output path cannot be used; the message names it."""


def check_box(box, name: str | None = None) -> tuple[float, float, float, float]:
  """A person box (x, y, w, h) in pixels as four floats; `name` names it in errors.

  Raises:
    ImageError: not four finite numbers, or no area.
  """
  name = name or f'box {box!r}'
  try:
    values = () if isinstance(box, str) else tuple(float(v) for v in box)
  except (TypeError, ValueError):
    values = ()
  if len(values) != 4 or not all(np.isfinite(values)):
    raise ImageError(
      f'{name} is not x,y,w,h: four numbers (pixels of the top-left corner, width, height)'
    )
  if values[2] <= 0 or values[3] <= 0:
    raise ImageError(f'{name} has no area: its width and height must be positive')
  return values


def parse_box(text: str) -> tuple[float, float, float, float] | None:
  """A --bbox value: 'x,y,w,h' (pixels) -> (x, y, w, h); 'none' -> None (the whole image).

  Raises:
    ImageError: not four numbers, or no area.
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
    raise ImageError(
      f'{len(boxes)} boxes for {num_images} images: give one box for all images '
      'or one per image (none for an image to be used whole)'
    )
  return list(boxes)


def read_image(path: str) -> np.ndarray:
  """The image at `path` as (H, W, 3) uint8 RGB (EXIF orientation applied).

  Raises:
    ImageError: the file is missing or is not an image OpenCV can decode.
  """
  if not os.path.isfile(path):
    raise ImageError(f'{path}: no such image file')
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    raise ImageError(f'{path}: cannot be read as an image (OpenCV decodes JPEG, PNG, BMP, ...)')
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
      raise ImageError(
        f'{stems[json_path]} and {path} would both write {json_path}: rename one '
        'or predict them in separate calls with different --out_dir'
      )
    stems[json_path] = path


def _make_out_dir(out_dir: str) -> None:
  """Creates the output directory; after the model loads, so that a workdir that holds no run
  gets no predictions/ folder.

  Raises:
    ImageError: it cannot be created, e.g. a path inside a regular file, or is a file itself.
  """
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise ImageError(
      f'--out_dir={out_dir} cannot be created ({e.strerror or e}): choose another output directory'
    ) from None


def _save_image(path: str, image_rgb: np.ndarray) -> None:
  if not cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
    raise ImageError(f'cannot write {path}: check that its directory is writable and has space')


def low_confidence_warning(scores: np.ndarray) -> str:
  """A warning if no joint scores as confident as visualize.MIN_CONFIDENT_SCORE, else ''."""
  if np.max(scores) >= visualize.MIN_CONFIDENT_SCORE:
    return ''
  return (
    f'no joint scores above {visualize.MIN_CONFIDENT_SCORE} (best {np.max(scores):.2f}): '
    'the box holds no person the model recognises, or the model is barely trained; the '
    'pose is a guess'
  )


def joints_record(image_path: str, image_shape, box, prediction: dict, run: dict) -> dict:
  """The JSON record of one prediction.

  Args:
    image_path, image_shape: the image and its (H, W, ...).
    box: its (x, y, w, h) or None.
    prediction: Predictor.predict's result.
    run: {'workdir' (or 'model', an exported file), 'step', 'depth'}: the model that predicted.
  """
  record = {
    'image': image_path,
    'image_size': {'width': image_shape[1], 'height': image_shape[0]},
    'run': run,
    'box': None if box is None else [float(v) for v in box],
    'square': {
      'center': [float(v) for v in prediction['box_center']],
      'side': float(prediction['box_side']),
      'note': 'the square crop the model saw: the box padded by 1.25, or the whole '
      'image without a box',
    },
    'joints_2d_convention': 'image pixels, x right, y down, (0, 0) the centre of the top-left '
    'pixel; score: the heatmap maximum, about 1 when confident',
    'joints_2d': {
      name: {'x': float(x), 'y': float(y), 'score': float(score)}
      for name, (x, y), score in zip(joints.MPII16, prediction['joints_2d'], prediction['scores'])
    },
  }
  if 'joints_3d' not in prediction:
    record['joints_3d'] = None
    record['note_3d'] = NO_DEPTH_NOTE
    return record
  canonical_sum = sum(joints.CANONICAL_LIMB_LENGTHS_MM.values())
  record['joints_3d_convention'] = (
    'mm relative to the pelvis (at 0), x right, y down, z away from the camera'
  )
  record['scale_rule'] = (
    'one image has no absolute scale: the pose is scaled so that its 8 limbs (shins, thighs, '
    f'forearms, upper arms) sum to the canonical {canonical_sum:.2f} mm '
    "(joints.CANONICAL_LIMB_LENGTHS_MM); the proportions are the model's"
  )
  record['joints_3d'] = {
    name: {'x': float(x), 'y': float(y), 'z': float(z)}
    for name, (x, y, z) in zip(joints.MPII16, prediction['joints_3d'])
  }
  return record


def predict_files(
  workdir: str | None,
  paths: Sequence[str],
  boxes: Sequence | None = None,
  out_dir: str | None = None,
  on_saved: Callable[[dict], None] | None = None,
  *,
  model: str | None = None,
) -> list[dict]:
  """Predicts every image with the run in `workdir` (or the exported `model`) and saves its
  outputs (see the module doc).

  Args:
    workdir: a trained run's directory; None with `model`.
    paths: image files.
    boxes: None (every image whole), a list of one (x, y, w, h) box for all images, or a list of
      one box per image (None: that image whole); pixels, (x, y) the top-left corner.
    out_dir: the output directory; None: <workdir>/predictions, or predictions/ beside `model`.
    on_saved: called with each result as soon as its files are written.
    model: instead of `workdir`, a file of `python -m hpe_jax.export` (`inference.load_exported`:
      neither Flax nor the model code is imported).
  Returns:
    Per image {'image': path, 'files': {'2d', '3d' (None without depth), 'json'}: paths,
    'record': the JSON written, 'prediction': Predictor.predict's arrays}.
  Raises:
    ImageError: an unreadable image, a bad box or box count (before the model loads), an output
      directory that cannot be created, or a file that cannot be written.
    CheckpointError: `workdir` holds no usable run.
    ExportError: `model` is not an exported model this version reads.
  """
  if (workdir is None) == (model is None):
    raise ValueError('predict_files takes either a workdir or an exported model')
  default_dir = os.path.dirname(os.path.abspath(model)) if model else workdir
  out_dir = out_dir or os.path.join(default_dir, 'predictions')
  boxes = boxes_per_image(boxes, len(paths))
  boxes = [None if box is None else check_box(box) for box in boxes]
  _check_inputs(paths, out_dir)
  if model:
    predictor = inference.load_exported(model)
    run = {'model': model, 'step': predictor.step, 'depth': predictor.has_depth}
  else:
    predictor = inference.load(workdir)
    run = {'workdir': workdir, 'step': predictor.step, 'depth': predictor.has_depth}
  _make_out_dir(out_dir)
  results = []
  for path, box in zip(paths, boxes):
    image = read_image(path)
    try:
      prediction = predictor.predict(image, box)
    except ValueError as e:
      raise ImageError(f'{path}: {e}') from None
    files = output_paths(out_dir, path)
    _save_image(
      files['2d'], visualize.draw_2d(image, prediction['joints_2d'], prediction['scores'])
    )
    if 'joints_3d' in prediction:
      visualize.plot_3d(
        prediction['joints_3d'],
        files['3d'],
        title=f'{os.path.basename(path)}: scaled to canonical limb lengths',
      )
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

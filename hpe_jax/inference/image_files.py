"""Predicting on image files: check the images and boxes, predict every person, and save per
image a 2D overlay, a 3D plot (models with depth) and the joints as JSON, and on request all
people in COCO's keypoint-results layout (what `python -m hpe_jax.predict` does; its module doc
describes the files).

Images, boxes and a boxes file are checked before the model loads: a file that is missing or not
an image stops the run with an error naming it (nothing is skipped), as does a box count that
fits neither rule or a boxes file that cannot be used.
"""

from __future__ import annotations

import itertools
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
from hpe_jax.inference import boxes as boxes_lib
from hpe_jax.inference import crops
from hpe_jax.inference import visualize

NO_DEPTH_NOTE = (
  'this run predicts 2D only (model.depth=False): 3D joints need a run fine-tuned '
  'with depth (python -m hpe_jax.main --config=configs/finetune.py)'
)


class ImageError(errors.HpeError, ValueError):
  """An image, a person box or an output path cannot be used; the message names it."""


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


def check_inputs(paths: Sequence[str], out_dir: str) -> None:
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


def make_out_dir(out_dir: str) -> None:
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


def cannot_write(path: str, error: OSError) -> str:
  """The message of an output file the OS refused."""
  return (
    f'cannot write {path} ({error.strerror or error}): check that its directory is writable and '
    'has space'
  )


def low_confidence_warning(scores: np.ndarray) -> str:
  """A warning if no joint scores as confident as visualize.MIN_CONFIDENT_SCORE, else ''."""
  if np.max(scores) >= visualize.MIN_CONFIDENT_SCORE:
    return ''
  return (
    f'no joint scores above {visualize.MIN_CONFIDENT_SCORE} (best {np.max(scores):.2f}): '
    'the box holds no person the model recognises, or the model is barely trained; the '
    'pose is a guess'
  )


def person_record(box, prediction: dict, box_score: float | None = None) -> dict:
  """The JSON of one person: its box, the square the model saw and the joints (MPII-16 order).

  Args:
    box: the person's (x, y, w, h) or None (the whole image).
    prediction: Predictor.predict's result for it.
    box_score: the detector's score of a box from a boxes file; None otherwise.
  """
  person = {
    'box': None if box is None else [float(v) for v in box],
    'box_score': box_score,
    'square': {
      'center': [float(v) for v in prediction['box_center']],
      'side': float(prediction['box_side']),
    },
    'joints_2d': np.asarray(prediction['joints_2d'], np.float64).tolist(),
    'scores': np.asarray(prediction['scores'], np.float64).tolist(),
    'joints_3d': None,
  }
  if 'joints_3d' in prediction:
    person['joints_3d'] = np.asarray(prediction['joints_3d'], np.float64).tolist()
  return person


def joints_record(image_path: str, image_shape, people: Sequence[dict], run: dict) -> dict:
  """The JSON record of one image: the same shape for one person or many.

  Args:
    image_path, image_shape: the image and its (H, W, ...).
    people: `person_record`s, in the order predicted.
    run: {'workdir' (or 'model', an exported file), 'step', 'depth'}: the model that predicted.
  """
  record = {
    'image': image_path,
    'image_size': {'width': image_shape[1], 'height': image_shape[0]},
    'run': run,
    'joint_names': list(joints.MPII16),
    'square_note': "each person's square crop the model saw: its box padded by 1.25, or the "
    'whole image without a box',
    'joints_2d_convention': 'per person, joints_2d (16, 2) and scores (16,) in joint_names order; '
    'image pixels, x right, y down, (0, 0) the centre of the top-left pixel; score: the heatmap '
    'maximum, about 1 when confident',
  }
  if run['depth']:
    canonical_sum = sum(joints.CANONICAL_LIMB_LENGTHS_MM.values())
    record['joints_3d_convention'] = (
      'per person, joints_3d (16, 3) in joint_names order: mm relative to the pelvis (at 0), '
      'x right, y down, z away from the camera'
    )
    record['scale_rule'] = (
      'one image has no absolute scale: each pose is scaled so that its 8 limbs (shins, '
      f'thighs, forearms, upper arms) sum to the canonical {canonical_sum:.2f} mm '
      "(joints.CANONICAL_LIMB_LENGTHS_MM); the proportions are the model's"
    )
  else:
    record['note_3d'] = NO_DEPTH_NOTE
  record['people'] = list(people)
  return record


def warn(message: str) -> None:
  """A warning line on stderr."""
  print(f'warning: {message}', file=sys.stderr, flush=True)


def _plural(count: int, word: str) -> str:
  return f'{count} {word}' if count == 1 else f'{count} {word}s'


def _people_to_predict(paths, boxes, detections) -> dict[str, list]:
  """Per image, its people as (box or None, box score or None, the boxes file's image id or the
  image's file name, entry or None); with a boxes file, images without a kept box are left out
  with one warning."""
  if detections is None:
    return {path: [(box, None, os.path.basename(path), None)] for path, box in zip(paths, boxes)}
  people = {
    path: [(p.box, p.score, p.image_id, p.entry) for p in detections.per_image[path]]
    for path in paths
  }
  empty = [path for path in paths if not people[path]]
  if len(empty) == len(paths):
    raise boxes_lib.BoxError(
      f'--boxes={detections.path} has no person box scoring at least '
      f'--box_threshold={detections.threshold:g} for any image given: lower the threshold'
    )
  if empty:
    listed = ', '.join(empty[:10]) + (f', ... ({len(empty) - 10} more)' if len(empty) > 10 else '')
    verb = 'has' if len(empty) == 1 else 'have'
    warn(
      f'{_plural(len(empty), "image")} {verb} no box scoring at least '
      f'--box_threshold={detections.threshold:g} in {detections.path}, skipped: {listed}'
    )
  return {path: people[path] for path in paths if people[path]}


def predict_files(
  workdir: str | None,
  paths: Sequence[str],
  boxes: Sequence | None = None,
  out_dir: str | None = None,
  on_saved: Callable[[dict], None] | None = None,
  *,
  model: str | None = None,
  boxes_file: str | None = None,
  box_threshold: float = 0.5,
  predictor=None,
  run: dict | None = None,
) -> list[dict]:
  """Predicts every person of every image with the run in `workdir` (or the exported `model`)
  and saves the image's outputs (see the module doc).

  Args:
    workdir: a trained run's directory; None with `model`.
    paths: image files.
    boxes: None (every image whole), a list of one (x, y, w, h) box for all images, or a list of
      one box per image (None: that image whole); pixels, (x, y) the top-left corner. One
      person per image.
    out_dir: the output directory; None: `default_out_dir`.
    on_saved: called with each result as soon as its files are written.
    model: instead of `workdir`, a file of `python -m hpe_jax.export` (`inference.load_exported`:
      neither Flax nor the model code is imported).
    boxes_file: instead of `boxes`, a detector's boxes file (`boxes.read_boxes`): every kept box
      is a person; images without one are skipped with a warning, boxes wholly outside their
      image too.
    box_threshold: the lowest detector score of `boxes_file` kept.
    predictor, run: the model already loaded (`load_model`'s result) instead of loading it.
  Returns:
    Per predicted image {'image': path, 'files': {'2d', '3d' (None without depth), 'json'}:
    paths, 'record': the JSON written, 'people': per person of record['people'] {'prediction':
    Predictor.predict's arrays, 'image_id': the boxes file's "image_id" (else its "file_name")
    of the person's box, else the image's file name (`write_coco` makes the ids numeric)}}.
  Raises:
    ImageError: an unreadable image, a bad box or box count (before the model loads), an output
      directory that cannot be created, or a file that cannot be written.
    BoxError: a bad --bbox or boxes file, or one with no box kept (before the model loads).
    CheckpointError: `workdir` holds no usable run.
    ExportError: `model` is not an exported model this version reads.
  """
  if (workdir is None) == (model is None):
    raise ValueError('predict_files takes either a workdir or an exported model')
  out_dir = out_dir or default_out_dir(workdir, model)
  if boxes_file is not None and boxes:
    raise boxes_lib.BoxError(
      'give person boxes either one per image (--bbox) or in a file (--boxes), not both'
    )
  boxes = boxes_per_image(boxes, len(paths))
  boxes = [None if box is None else boxes_lib.check_box(box) for box in boxes]
  check_inputs(paths, out_dir)
  detections = None
  if boxes_file is not None:
    detections = boxes_lib.read_boxes(boxes_file, paths, box_threshold)
  people_per_image = _people_to_predict(paths, boxes, detections)
  if predictor is None:
    predictor, run = load_model(workdir, model)
  make_out_dir(out_dir)
  results = []
  skipped_outside = 0
  for path, people in people_per_image.items():
    image = read_image(path)
    kept = []  # (box, box score, image id, who, warnings, crop): one device call for all
    for box, box_score, image_id, entry in people:
      who = f'{path}: {boxes_lib.format_box(box)}'
      who += f' (--boxes entry {entry})' if entry is not None else ''
      warnings = []
      if box is not None:
        outside = boxes_lib.outside_fraction(box, image.shape)
        if outside >= 1 and detections is not None:
          # A detector's box off the image is one bad detection: the others still count.
          warn(f'{who} lies wholly outside the {image.shape[1]} x {image.shape[0]} image: skipped')
          skipped_outside += 1
          continue
        if boxes_lib.MOSTLY_OUTSIDE < outside < 1:
          warnings.append(
            f'{outside:.0%} of the box lies outside the {image.shape[1]} x {image.shape[0]} '
            'image: the model sees mostly padding'
          )
      try:
        crop = crops.crop_person(image, box, predictor.image_size)
      except ValueError as e:
        raise ImageError(f'{path}: {e}') from None
      kept.append((box, box_score, image_id, who, warnings, crop))
    outputs = predictor.predict_inputs(np.stack([k[-1].model_input for k in kept])) if kept else {}
    persons, predicted = [], []
    for i, (box, box_score, image_id, who, warnings, crop) in enumerate(kept):
      prediction = crops.person_pose(crop, {key: value[i] for key, value in outputs.items()})
      low = low_confidence_warning(prediction['scores'])
      warnings += [low] if low else []
      person = person_record(box, prediction, box_score)
      if warnings:
        person['warning'] = '; '.join(warnings)
        for warning in warnings:
          warn(f'{who}: {warning}' if box is not None else f'{path}: {warning}')
      persons.append(person)
      predicted.append({'prediction': prediction, 'image_id': image_id})
    files = output_paths(out_dir, path)
    _save_image(files['2d'], visualize.draw_people(image, persons))
    with_3d = [p for p in persons if p['joints_3d'] is not None]
    if run['depth'] and with_3d:
      visualize.plot_3d_people(
        [np.array(p['joints_3d']) for p in with_3d],
        files['3d'],
        labels=[f'person {i + 1}: {boxes_lib.format_box(p["box"])}' for i, p in enumerate(with_3d)],
        title=f'{os.path.basename(path)}: scaled to canonical limb lengths',
      )
    else:
      files['3d'] = None
    record = joints_record(path, image.shape, persons, run)
    with open(files['json'], 'w') as f:
      json.dump(record, f, indent=2)
    results.append({'image': path, 'files': files, 'record': record, 'people': predicted})
    if on_saved:
      on_saved(results[-1])
  if skipped_outside > 1:
    warn(f'{skipped_outside} boxes lay wholly outside their images and were skipped')
  return results


def load_model(workdir: str | None, model: str | None, batch_size: int | None = None, step=None):
  """-> (the predictor of a run's `workdir` or of an exported `model` file, the record of which
  model it is: {'workdir' or 'model', 'step', 'depth'}). `batch_size`: people per device call of
  a run's model (an exported one takes any); `step`: the run's step as `inference.load` takes it.

  Raises:
    CheckpointError: `workdir` holds no usable run.
    ExportError: `model` is not an exported model this version reads.
  """
  if model:
    predictor = inference.load_exported(model)
    return predictor, {'model': model, 'step': predictor.step, 'depth': predictor.has_depth}
  predictor = inference.load(workdir, step=step, batch_size=batch_size)
  return predictor, {'workdir': workdir, 'step': predictor.step, 'depth': predictor.has_depth}


def default_out_dir(workdir: str | None, model: str | None) -> str:
  """Where predictions go by default: <workdir>/predictions, or predictions/ beside `model`."""
  return os.path.join(os.path.dirname(os.path.abspath(model)) if model else workdir, 'predictions')


COCO_FILE = 'keypoints_coco.json'
COCO_NAMES_FILE = 'keypoints_coco.names.json'
COCO_SCORING = (
  "gt = COCO(ground_truth); E = COCOeval(gt, gt.loadRes(results), 'keypoints'); "
  "E.params.kpt_oks_sigmas = np.array(names['kpt_oks_sigmas']); E.evaluate(); E.accumulate(); "
  'E.summarize()'
)


def _coco_entry(person: dict, image_id: int, size: dict) -> dict:
  """One person record (an image's or a video frame's) as a COCO keypoint result."""
  scores = np.asarray(person['scores'], np.float64)
  keypoints = np.concatenate([np.asarray(person['joints_2d'], np.float64), scores[:, None]], 1)
  box = person['box'] or [0.0, 0.0, float(size['width']), float(size['height'])]
  box_score = 1.0 if person['box_score'] is None else person['box_score']
  entry = {
    'image_id': image_id,
    'category_id': boxes_lib.PERSON_CATEGORY,
    'keypoints': [round(float(v), 3) for v in keypoints.reshape(-1)],
    'score': float(scores.mean() * box_score),
    'bbox': [float(v) for v in box],
  }
  if person['joints_3d'] is not None:
    entry['keypoints_3d'] = [[round(v, 2) for v in xyz] for xyz in person['joints_3d']]
  if 'track' in person:
    entry['track_id'] = person['track']
  return entry


def _image_ids(results: dict[str, dict], images: Sequence[str]) -> dict[str, int]:
  """Per image path the numeric "image_id" its boxes-file entries give (the first), unless an
  earlier image holds it (a warning); images without one are absent (`write_coco` numbers them)."""
  ids, owners = {}, {}
  for path in images:
    given = [p['image_id'] for p in results[path]['people']] if path in results else []
    number = next((i for i in given if isinstance(i, int) and not isinstance(i, bool)), None)
    if number is None:
      continue
    if number in owners:
      warn(
        f'{path}: the boxes file gives it image_id {number}, as it does {owners[number]}: '
        f'numbered anew in {COCO_FILE} (see {COCO_NAMES_FILE})'
      )
      continue
    ids[path], owners[number] = number, path
  return ids


def _read_video(summary: dict) -> tuple[dict, list[dict]]:
  """A predicted video's header (<stem>.json) and frame lines (<stem>.jsonl)."""
  files = summary['files']
  try:
    with open(files['json']) as f:
      header = json.load(f)
    with open(files['jsonl']) as f:
      return header, [json.loads(line) for line in f]
  except (OSError, ValueError) as e:
    raise ImageError(f'cannot read back {files["jsonl"]} for {COCO_FILE}: {e}') from None


def write_coco(
  results: Sequence[dict],
  out_dir: str,
  *,
  images: Sequence[str] | None = None,
  videos: Sequence[dict] = (),
) -> dict:
  """Writes `predict_files`' results (and predicted videos' frames) as COCO keypoint results that
  pycocotools' COCOeval scores, and beside them the joint order, the OKS sigmas and the images.

  `out_dir`/keypoints_coco.json is a bare list, as COCO's tools (pycocotools' loadRes) read it,
  one entry per person: {"image_id" (a number), "category_id": 1, "keypoints": [x, y, score] * 16
  flat, in the joint order of joints.MPII16 (not COCO's 17), "score": the mean joint score times
  the box's detector score, "bbox": [x, y, w, h] (the whole image without a box), for models with
  depth "keypoints_3d": 16 [x, y, z] in root-relative mm, and for video frames "track_id"}.

  Image ids are numbers: an image whose boxes-file entries give a numeric "image_id" keeps it
  (COCO's own ids: 000000001163.jpg is 1163); every other image is numbered 1, 2, ... in the order
  given, skipping the numbers the boxes file holds, and then every frame of every video in order
  (a lone video's frame f is image f + 1). keypoints_coco.names.json says which id is which: a
  COCO ground-truth skeleton {"images": [{"id", "file_name" (base name), "path" (as given),
  "width", "height", and "frame" (0-based) for a video's frame}], "annotations": [] (yours to
  fill), "categories": [person, with "keypoints" and "skeleton"]} plus "keypoint_names" and
  "kpt_oks_sigmas" (joints.MPII16_OKS_SIGMAS). Images given but skipped (no box kept) are listed
  with no results: they count, as the detector found nobody there. To score against ground truth
  with MPII-16 keypoints and these image ids:

    names = json.load(open('keypoints_coco.names.json'))
    gt = COCO('ground_truth.json')
    E = COCOeval(gt, gt.loadRes('keypoints_coco.json'), 'keypoints')
    E.params.kpt_oks_sigmas = np.array(names['kpt_oks_sigmas'])  # the default has COCO's 17
    E.evaluate(); E.accumulate(); E.summarize()

  Args:
    results: `predict_files`' results.
    out_dir: where both files go.
    images: every image given, in order (those absent from `results` were skipped); None: the
      images of `results`.
    videos: `video.predict_video`'s summaries, in order: each frame of their .jsonl is an image.
  Returns:
    {'results': path, 'names': path, 'people': entries written, 'images': images listed}.
  Raises:
    ImageError: a file cannot be written (or a video's cannot be read back).
  """
  by_path = {result['image']: result for result in results}
  images = list(by_path) if images is None else list(images)
  ids = _image_ids(by_path, images)
  taken = set(ids.values())
  numbers = (n for n in itertools.count(1) if n not in taken)
  entries, listed = [], []
  for path in images:
    if path not in ids:
      ids[path] = next(numbers)
    if path in by_path:
      size = by_path[path]['record']['image_size']
      people = by_path[path]['record']['people']
    else:
      height, width = read_image(path).shape[:2]
      size, people = {'width': width, 'height': height}, []
    listed.append(
      {
        'id': ids[path],
        'file_name': os.path.basename(path),
        'path': path,
        'width': size['width'],
        'height': size['height'],
      }
    )
    entries += [_coco_entry(person, ids[path], size) for person in people]
  for summary in videos:
    header, lines = _read_video(summary)
    size = header['image_size']
    for line in lines:
      number = next(numbers)
      listed.append(
        {
          'id': number,
          'file_name': os.path.basename(header['video']),
          'path': header['video'],
          'frame': line['frame'],
          'width': size['width'],
          'height': size['height'],
        }
      )
      entries += [_coco_entry(person, number, size) for person in line['people']]
  names = {
    'keypoint_names': list(joints.MPII16),
    'kpt_oks_sigmas': list(joints.MPII16_OKS_SIGMAS),
    'note': f'the joint order of {COCO_FILE} (MPII-16, not COCO\'s 17): "keypoints" holds x, '
    'y, score per joint in image pixels ((0, 0) the centre of the top-left pixel), '
    '"keypoints_3d" x, y, z per joint in mm relative to the pelvis (x right, y down, z away '
    'from the camera). "images" names each image_id: a COCO ground-truth skeleton for these '
    'images (add "annotations" with MPII-16 keypoints to score)',
    'sigmas_note': "COCOeval's OKS sigmas for MPII-16 (its default has COCO's 17): COCO's "
    "for ankles, knees, hips, shoulders, elbows, wrists; pelvis the hips' .107, thorax the "
    "shoulders' .079, upper_neck and head_top CrowdPose's neck and head .079 (MPII has no "
    'official set; hpe_jax.joints.MPII16_OKS_SIGMAS)',
    'scoring': COCO_SCORING,
    'images': listed,
    'annotations': [],
    'categories': [
      {
        'id': boxes_lib.PERSON_CATEGORY,
        'name': 'person',
        'supercategory': 'person',
        'keypoints': list(joints.MPII16),
        'skeleton': [[a + 1, b + 1] for a, b in joints.BONES],  # COCO's are 1-based
      }
    ],
  }
  paths = {
    'results': os.path.join(out_dir, COCO_FILE),
    'names': os.path.join(out_dir, COCO_NAMES_FILE),
  }
  for key, content in (('results', entries), ('names', names)):
    try:
      with open(paths[key], 'w') as f:
        json.dump(content, f, indent=None if key == 'results' else 2)
    except OSError as e:
      raise ImageError(cannot_write(paths[key], e)) from None
  return {**paths, 'people': len(entries), 'images': len(listed)}

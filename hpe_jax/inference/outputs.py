"""The files predictions are written to: where they go (`output_paths`, `default_out_dir`), each
image's JSON record (`write_image_json`), the warnings on stderr (`warn`), and the files that
--format adds once every input is done, chosen from FORMATS: with coco, every person of the images
and video frames in COCO's keypoint-results layout (`write_coco`).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from typing import Sequence

import numpy as np

from hpe_jax import files
from hpe_jax import joints
from hpe_jax.inference import boxes as boxes_lib
from hpe_jax.inference import image_io


def output_paths(out_dir: str, image_path: str) -> dict[str, str]:
  """The files written for one image: {'2d': overlay PNG, '3d': skeleton PNG, 'json': joints}."""
  stem = os.path.join(out_dir, os.path.splitext(os.path.basename(image_path))[0])
  return {'2d': f'{stem}_2d.png', '3d': f'{stem}_3d.png', 'json': f'{stem}.json'}


def default_out_dir(workdir: str | None, model: str | None) -> str:
  """Where predictions go by default: <workdir>/predictions, or predictions/ beside `model`."""
  return os.path.join(os.path.dirname(os.path.abspath(model)) if model else workdir, 'predictions')


def make_out_dir(out_dir: str) -> None:
  """Creates the output directory; after the model loads, so that a workdir that holds no run
  gets no predictions/ folder.

  Raises:
    ImageError: it cannot be created, e.g. a path inside a regular file, or is a file itself.
  """
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise image_io.ImageError(
      f'--out_dir={out_dir} cannot be created ({e.strerror or e}): choose another output directory'
    ) from None


def write_image_json(path: str, record: dict) -> None:
  """Writes an image's record (`records.joints_record`) to `path`.

  Raises:
    ImageError: it cannot be written.
  """
  write_json(path, record, indent=2)


def write_json(path: str, content, indent: int | None = None) -> None:
  """Writes `content` as JSON to `path`, whole or not at all: a write the OS refuses (e.g. a full
  disk) removes the partial file.

  Raises:
    ImageError: it cannot be written.
  """
  try:
    files.write_text(path, json.dumps(content, indent=indent))
  except OSError as e:
    raise image_io.ImageError(cannot_write(path, e)) from None


def cannot_write(path: str, error: OSError) -> str:
  """The message of an output file the OS refused."""
  return (
    f'cannot write {path} ({error.strerror or error}): check that its directory is writable and '
    'has space'
  )


def warn(message: str) -> None:
  """A warning line on stderr."""
  print(f'warning: {message}', file=sys.stderr, flush=True)


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
    raise image_io.ImageError(f'cannot read back {files["jsonl"]} for {COCO_FILE}: {e}') from None


def write_coco(
  results: Sequence[dict],
  out_dir: str,
  *,
  images: Sequence[str] | None = None,
  videos: Sequence[dict] = (),
) -> dict:
  """Writes the images' results (and predicted videos' frames) as COCO keypoint results that
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
    results: `image_loop.predict_images`' results.
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
      height, width = image_io.read_image(path).shape[:2]
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
  write_json(paths['results'], entries)
  try:
    write_json(paths['names'], names, indent=2)
  except image_io.ImageError:
    os.remove(paths['results'])  # its image ids mean nothing without the names
    raise
  return {**paths, 'people': len(entries), 'images': len(listed)}


# --format -> what it writes once every input is done, beside the per-input files:
# writer(images' results, out_dir, images=every image given, videos=the videos' summaries).
FORMATS = {'json': None, 'coco': write_coco}

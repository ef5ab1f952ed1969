"""Person boxes: one box (x, y, w, h) checked, a detector's boxes file read and matched to the
images given, and how much of a box lies outside its image.

  detections = boxes.read_boxes('detections.json', ['photos/000000001163.jpg'], threshold=0.5)
  detections.per_image['photos/000000001163.jpg']  # [PersonBox(box, score, image_id, entry)]

A boxes file is a COCO detection-results list, what detectors write for COCO's evaluation:
  [{"image_id": 1163 or "file_name": "a.jpg", "bbox": [x, y, w, h], "score": 0.98,
    "category_id": 1}, ...]
in pixels, (x, y) the top-left corner. "file_name" matches an image given by its path or its
base name; "image_id" matches an image whose stem is that number (COCO's 000000001163.jpg is
image 1163) or that string. Entries with a "category_id" other than 1 (COCO's person) and entries
scoring below the threshold are dropped (a missing "score" counts as 1: ground-truth boxes have
none); entries for images not given are ignored.

For a video, an entry names a frame instead of an image: {"frame": 0-based index, "bbox", "score",
optional "file_name" (the video's path or base name; without it the entry is for every video
given)}. Frame entries are ignored for images, image entries for videos.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Sequence

from hpe_jax import errors
from hpe_jax.inference import crops

PERSON_CATEGORY = 1  # COCO's category id of a person
# A box with more than this fraction of its area outside the image is predicted with a warning:
# the model sees mostly padding.
MOSTLY_OUTSIDE = 0.5
_FORMAT_HINT = (
  'expected a COCO detection-results list [{"image_id" or "file_name", "bbox": [x, y, w, h], '
  '"score"}, ...]'
)

Box = tuple[float, float, float, float]


class BoxError(errors.HpeError, ValueError):
  """A person box or a boxes file cannot be used; the message names it and the fix."""


def check_box(box, name: str | None = None) -> Box:
  """A person box (x, y, w, h) in pixels as four floats; `name` names it in errors.

  Raises:
    BoxError: not four finite numbers, or no area.
  """
  name = name or f'box {box!r}'
  try:
    values = () if isinstance(box, str) else tuple(float(v) for v in box)
  except (TypeError, ValueError):
    values = ()
  if len(values) != 4 or not all(math.isfinite(v) for v in values):
    raise BoxError(
      f'{name} is not x,y,w,h: four numbers (pixels of the top-left corner, width, height)'
    )
  if values[2] <= 0 or values[3] <= 0:
    raise BoxError(f'{name} has no area: its width and height must be positive')
  return values


def parse_box(text: str) -> Box | None:
  """A --bbox value: 'x,y,w,h' (pixels) -> (x, y, w, h); 'none' -> None (the whole image).

  Raises:
    BoxError: not four numbers, or no area.
  """
  if text.strip().lower() == 'none':
    return None
  return check_box(text.split(','), f'--bbox={text}')


def _format_value(value: float) -> str:
  """A box value as --bbox takes it: at most 1 decimal, or 3 significant digits from a million
  on (1e+308, not its 309 digits)."""
  if abs(value) >= 1e6:
    return f'{value:.3g}'
  return f'{value:.1f}'.removesuffix('.0')


def format_box(box: Box | None) -> str:
  """'box x,y,w,h' as --bbox takes it (`_format_value`), or 'the whole image' for None."""
  if box is None:
    return 'the whole image'
  return 'box ' + ','.join(_format_value(v) for v in box)


def outside_fraction(box: Box, image_shape) -> float:
  """The fraction of the box's area outside an image of (H, W, ...): 0 inside, 1 wholly
  outside. Pixel edges: the image spans [0, W] x [0, H] as COCO's boxes do. Finite for any
  finite box (no area product that overflows)."""
  height, width = image_shape[:2]
  x, y, w, h = box
  inside_w = max(0.0, min(x + w, width) - max(x, 0.0))
  inside_h = max(0.0, min(y + h, height) - max(y, 0.0))
  return 1.0 - (inside_w / w) * (inside_h / h)


def wholly_outside(box: Box, image_shape) -> bool:
  """Whether `box` has no pixel in an image of (H, W, ...) (edges as `outside_fraction`'s)."""
  height, width = image_shape[:2]
  x, y, w, h = box
  return x >= width or y >= height or x + w <= 0 or y + h <= 0


def too_large(box: Box, image_shape) -> bool:
  """Whether `box`'s longer side is over crops.MAX_BOX_TO_IMAGE times the image's."""
  return max(box[2], box[3]) > crops.MAX_BOX_TO_IMAGE * max(image_shape[:2])


def unusable(box: Box, image_shape, what: str = 'image') -> str | None:
  """Why the model cannot be given `box` in an image (or a video frame: `what`) of (H, W, ...),
  or None if it can: the one rule for every box, --bbox's and a boxes file's. A box that lies
  wholly outside the image cannot, nor one whose side is over crops.MAX_BOX_TO_IMAGE times the
  image's (a typo, or not pixels: the person would be a few pixels of what the model sees)."""
  height, width = image_shape[:2]
  if wholly_outside(box, image_shape):
    return f'lies wholly outside the {width} x {height} {what}'
  if too_large(box, image_shape):
    return (
      f'is over {crops.MAX_BOX_TO_IMAGE} times the {width} x {height} {what} (a typo, or not '
      'pixels?)'
    )
  return None


@dataclasses.dataclass(frozen=True)
class PersonBox:
  """One kept box of a boxes file."""

  box: Box  # x, y, w, h in pixels
  score: float  # the detector's score (1 where the entry has none)
  image_id: int | str  # the entry's "image_id", else its "file_name" (COCO results name it)
  entry: int  # the entry's index in the file (0-based), for messages


@dataclasses.dataclass
class Detections:
  """A boxes file matched to the images given (`read_boxes`)."""

  path: str
  threshold: float
  per_image: dict[str, list[PersonBox]]  # image path -> kept boxes in file order; [] for none
  # video path -> frame index -> kept boxes in file order (frames without any absent)
  per_video: dict[str, dict[int, list[PersonBox]]] = dataclasses.field(default_factory=dict)
  below_threshold: int = 0  # entries for given images and videos dropped for their score
  not_person: int = 0  # entries for given images and videos dropped for their category_id
  # The same two counts for the images alone (what `no_image_box` explains).
  images_below_threshold: int = 0
  images_not_person: int = 0
  other_images: int = 0  # entries for no given image or video, ignored


def _matches(entry: dict, path: str) -> bool:
  """Whether a boxes-file entry names the image at `path` (see the module doc)."""
  name = os.path.basename(path)
  stem = os.path.splitext(name)[0]
  file_name = entry.get('file_name')
  if isinstance(file_name, str) and (
    os.path.normpath(file_name) == os.path.normpath(path) or os.path.basename(file_name) == name
  ):
    return True
  image_id = entry.get('image_id')
  if isinstance(image_id, bool) or image_id is None:
    return False
  if isinstance(image_id, int):
    return stem.isdigit() and int(stem) == image_id
  return isinstance(image_id, str) and image_id in (stem, name)


def _load(path: str) -> list:
  """The file's JSON list. Raises BoxError naming the file."""
  try:
    with open(path) as f:
      content = json.load(f)
  except FileNotFoundError:
    raise BoxError(f'--boxes={path}: no such file') from None
  except (OSError, UnicodeDecodeError) as e:
    raise BoxError(f'--boxes={path} cannot be read ({e}): {_FORMAT_HINT}') from None
  except json.JSONDecodeError as e:
    raise BoxError(
      f'--boxes={path} is not JSON ({e.msg} at line {e.lineno} column {e.colno}): {_FORMAT_HINT}'
    ) from None
  if not isinstance(content, list):
    raise BoxError(f'--boxes={path} holds a JSON {type(content).__name__}: {_FORMAT_HINT}')
  return content


def _matches_video(entry: dict, path: str) -> bool:
  """Whether a frame entry is for the video at `path`: its "file_name" names it, or it has none."""
  file_name = entry.get('file_name')
  if file_name is None:
    return True
  return isinstance(file_name, str) and (
    os.path.normpath(file_name) == os.path.normpath(path)
    or os.path.basename(file_name) == os.path.basename(path)
  )


def read_boxes(
  path: str, images: Sequence[str], threshold: float = 0.5, videos: Sequence[str] = ()
) -> Detections:
  """Reads a boxes file (module doc) and keeps, per image and per video frame given, its person
  boxes scoring at least `threshold`.

  Args:
    path: the boxes file (JSON).
    images: the image paths predicted; every image entry is matched against all of them.
    threshold: the lowest detector score kept.
    videos: the video paths predicted; every frame entry is matched against all of them.
  Returns:
    The kept boxes per image (an image without any: []) and per video frame, and counts of what
    was dropped.
  Raises:
    BoxError: a file that is missing or not a JSON list, an entry that is not an object, has no
      "bbox" or a bad one, has none of "image_id", "file_name" and "frame", or a bad "score",
      "category_id" or "frame" (each naming the entry's index), or a file that names none of the
      images and videos.
  """
  entries = _load(path)
  detections = Detections(
    path, threshold, {image: [] for image in images}, {video: {} for video in videos}
  )
  for index, entry in enumerate(entries):
    where = f'--boxes={path} entry {index}'
    if not isinstance(entry, dict):
      raise BoxError(f'{where} is a JSON {type(entry).__name__}, not an object: {_FORMAT_HINT}')
    if 'bbox' not in entry:
      raise BoxError(f'{where} has no "bbox": {_FORMAT_HINT}')
    box = check_box(entry['bbox'], f'{where}: "bbox" {entry["bbox"]!r}')
    if not {'image_id', 'file_name', 'frame'} & set(entry):
      raise BoxError(
        f'{where} has none of "image_id", "file_name" (images) and "frame" (videos): {_FORMAT_HINT}'
      )
    score = entry.get('score', 1.0)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
      raise BoxError(f'{where}: "score" {score!r} is not a number')
    category = entry.get('category_id', PERSON_CATEGORY)
    if isinstance(category, bool) or not isinstance(category, (int, str)):
      raise BoxError(f'{where}: "category_id" {category!r} is not an integer')
    frame = entry.get('frame')
    if 'frame' in entry and (isinstance(frame, bool) or not isinstance(frame, int) or frame < 0):
      raise BoxError(f'{where}: "frame" {frame!r} is not a frame index (0 is the first frame)')
    if frame is None:
      matched = [image for image in images if _matches(entry, image)]
    else:
      matched = [video for video in videos if _matches_video(entry, video)]
    if not matched:
      detections.other_images += 1
      continue
    if str(category) != str(PERSON_CATEGORY):
      detections.not_person += len(matched)
      detections.images_not_person += len(matched) if frame is None else 0
      continue
    if score < threshold:
      detections.below_threshold += len(matched)
      detections.images_below_threshold += len(matched) if frame is None else 0
      continue
    if frame is not None:
      for video in matched:
        detections.per_video[video].setdefault(frame, []).append(
          PersonBox(box, float(score), frame, index)
        )
      continue
    image_id = entry['image_id'] if 'image_id' in entry else entry['file_name']
    for image in matched:
      detections.per_image[image].append(PersonBox(box, float(score), image_id, index))
  if entries and detections.other_images == len(entries):
    first = entries[0]
    key = next(k for k in ('frame', 'image_id', 'file_name') if k in first)
    raise BoxError(
      f'--boxes={path} names none of the images or videos given (entry 0 has {key} '
      f'{first[key]!r}): "file_name" matches an image\'s path or base name, "image_id" the '
      'number of its name (000000001163.jpg is 1163) or its name, "frame" a frame of every '
      'video given (of the one its "file_name" names)'
    )
  if not entries:
    raise BoxError(f'--boxes={path} holds no boxes (an empty list): {_FORMAT_HINT}')
  return detections


def no_image_box(detections: Detections, unusable_boxes: int = 0) -> str:
  """The message of a boxes file that keeps no box for any image given, saying why each of its
  boxes for them was dropped and what to do (`unusable_boxes`: those `unusable` dropped)."""
  reasons = []
  if detections.images_below_threshold:
    reasons.append(
      f'{detections.images_below_threshold} scored below --box_threshold='
      f'{detections.threshold:g} (lower it to keep them)'
    )
  if detections.images_not_person:
    reasons.append(
      f'{detections.images_not_person} had a "category_id" other than {PERSON_CATEGORY} (a '
      f"person): give person boxes, COCO's category {PERSON_CATEGORY}"
    )
  if unusable_boxes:
    reasons.append(
      f'{unusable_boxes} lay wholly outside their image or were over '
      f'{crops.MAX_BOX_TO_IMAGE} times its size (each named above): check that "bbox" is x, y, '
      'w, h in pixels'
    )
  if not reasons:
    return (
      f'--boxes={detections.path} has no box for any image given (only "frame" entries, for '
      'videos): give "image_id" or "file_name" entries for the images'
    )
  return f'--boxes={detections.path} keeps no box for any image given: ' + '; '.join(reasons)

"""The inputs of a prediction, each checked once and before the model loads (`check`): the images
(files OpenCV reads, whose outputs do not collide; a directory gives its images), the person boxes
(one for every input or one per input, each usable in its image), a detector's boxes file (read
once, for the images and the videos), and the videos and the camera (opened). Nothing is loaded
or created before all of them pass.

A file given that is missing or not an image or video, a camera that does not open, a box count
that fits neither rule, a --bbox the model cannot be given in its image (`boxes.unusable`) or a
boxes file that cannot be used stops the run with one error naming it (every such file at once);
nothing given by name is skipped. What is skipped, with a warning: a directory's files that are
not images, a boxes file's boxes `boxes.unusable` refuses, and images a boxes file keeps no box
for.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple
from typing import Sequence

from hpe_jax.inference import boxes as boxes_lib
from hpe_jax.inference import crops
from hpe_jax.inference import image_io
from hpe_jax.inference import outputs
from hpe_jax.inference import video


class ImagePerson(NamedTuple):
  """A person to predict in an image."""

  box: boxes_lib.Box | None  # None: the whole image
  box_score: float | None  # the detector's score of a boxes file's box; None otherwise
  image_id: int | str  # the boxes file's "image_id" (else "file_name"), else the image's name
  entry: int | None  # the box's index in the boxes file, for messages; None without one


@dataclasses.dataclass(frozen=True)
class VideoInput:
  """A video or camera to predict, opened."""

  source: video.Source
  box: boxes_lib.Box | None  # one person's in every frame; None: the whole frame
  # A boxes file's boxes per frame index (`boxes.Detections.per_video`); None without one.
  frame_boxes: dict[int, list[boxes_lib.PersonBox]] | None


@dataclasses.dataclass(frozen=True)
class Inputs:
  """A prediction's inputs, checked (`check`)."""

  images: list[str]  # every image given, in order
  # Per image to predict, in order, its people; images a boxes file gives no box are left out.
  people: dict[str, list[ImagePerson]]
  videos: list[VideoInput]  # the videos in order, then the camera


def boxes_per_input(boxes: Sequence | None, count: int) -> list:
  """Expands None (every input whole), one box (for all) or one box per input into a list of
  `count` checked boxes (x, y, w, h) or None.

  Raises:
    ImageError: a box count that is neither 0, 1 nor `count`.
    BoxError: a box that is not four numbers with an area.
  """
  if not boxes:
    return [None] * count
  if len(boxes) not in (1, count):
    raise image_io.ImageError(
      f'{len(boxes)} boxes for {count} images: give one box for all images '
      'or one per image (none for an image to be used whole)'
    )
  boxes = [None if box is None else boxes_lib.check_box(box) for box in boxes]
  return boxes * count if len(boxes) == 1 else boxes


def expand_directories(paths: Sequence[str]) -> list[str]:
  """`paths` with each directory replaced by its images (the files OpenCV reads as images, in
  name order, not its subdirectories'); its other files are skipped with one warning counting
  them.

  Raises:
    ImageError: a directory that holds no image.
  """
  expanded = []
  for path in paths:
    if not os.path.isdir(path):
      expanded.append(path)
      continue
    files = [os.path.join(path, name) for name in sorted(os.listdir(path))]
    files = [file for file in files if os.path.isfile(file)]
    images = [file for file in files if image_io.is_image(file)]
    if not images:
      raise image_io.ImageError(
        f'{path} is a directory with no image OpenCV reads ({_plural(len(files), "file")}): give '
        'image files, or a directory of them'
      )
    others = [os.path.basename(file) for file in files if file not in images]
    if others:
      outputs.warn(
        f'{path}: {_plural(len(others), "file")} that {"is" if len(others) == 1 else "are"} not '
        f'an image skipped: {_listed(others)}'
      )
    expanded += images
  return expanded


def _listed(names: Sequence[str], most: int = 10) -> str:
  """The first `most` names, then how many more."""
  more = f', ... ({len(names) - most} more)' if len(names) > most else ''
  return ', '.join(names[:most]) + more


def _check_images(paths: Sequence[str], out_dir: str) -> None:
  """Fails on unreadable images (naming all of them), or two images whose outputs collide."""
  bad = []
  for path in paths:
    try:
      image_io.check_readable(path)
    except image_io.ImageError as e:
      bad.append((path, e))
  if len(bad) == 1:
    raise bad[0][1]
  if bad:
    missing = [path for path, _ in bad if not os.path.isfile(path)]
    other = [path for path, _ in bad if os.path.isfile(path)]
    parts = [f'no such file: {_listed(missing)}'] if missing else []
    parts += [f'not an image OpenCV reads: {_listed(other)}'] if other else []
    raise image_io.ImageError(
      f'{len(bad)} inputs cannot be predicted ({"; ".join(parts)}): leave them out, or give '
      'their directory (its images are predicted, its other files skipped)'
    )
  stems = {}
  for path in paths:
    json_path = outputs.output_paths(out_dir, path)['json']
    if json_path in stems:
      raise image_io.ImageError(
        f'{stems[json_path]} and {path} would both write {json_path}: rename one '
        'or predict them in separate calls with different --out_dir'
      )
    stems[json_path] = path


def _plural(count: int, word: str) -> str:
  return f'{count} {word}' if count == 1 else f'{count} {word}s'


def check_bbox(path: str, box: boxes_lib.Box | None, image_shape, what: str = 'image') -> None:
  """Fails unless the model can be given `box` (a --bbox; None: the whole image) in the image or
  frame (`what`) at `path` of (H, W, ...): `boxes.unusable`'s rule.

  Raises:
    BoxError: naming the input, the box and the rule.
  """
  reason = None if box is None else boxes_lib.unusable(box, image_shape, what)
  if reason:
    raise boxes_lib.BoxError(
      f'{path}: {boxes_lib.format_box(box)} (--bbox) {reason}: give x,y,w,h '
      f'in pixels of the {what} (the top-left corner, width, height), or --bbox=none for the '
      f'whole {what}'
    )


def _usable_boxes(detections: boxes_lib.Detections, sizes: dict[str, tuple[int, int]]) -> int:
  """Drops from `detections.per_image` the boxes `boxes.unusable` refuses in their image, each
  with a warning naming it; -> how many."""
  dropped = 0
  for path, people in detections.per_image.items():
    kept = []
    for person in people:
      reason = boxes_lib.unusable(person.box, sizes[path])
      if reason is None:
        kept.append(person)
        continue
      outputs.warn(
        f'{path}: {boxes_lib.format_box(person.box)} (--boxes entry {person.entry}) {reason}: '
        'skipped'
      )
      dropped += 1
    people[:] = kept
  if dropped > 1:
    outputs.warn(
      f'{dropped} boxes of --boxes={detections.path} could not be used in their images and were '
      'skipped'
    )
  return dropped


def _usable_frame_boxes(given: VideoInput) -> None:
  """Drops from a video's boxes-file boxes those `boxes.unusable` refuses as too large for its
  frames, with one warning; those wholly outside `video.predict_video` skips and counts."""
  shape, dropped = (given.source.height, given.source.width), 0
  for people in (given.frame_boxes or {}).values():
    kept = [
      p
      for p in people
      if boxes_lib.wholly_outside(p.box, shape) or not boxes_lib.too_large(p.box, shape)
    ]
    dropped += len(people) - len(kept)
    people[:] = kept
  if dropped:
    outputs.warn(
      f'{given.source.name}: {_plural(dropped, "box")} over {crops.MAX_BOX_TO_IMAGE} times the '
      f'{shape[1]} x {shape[0]} frame (a typo, or not pixels?) skipped'
    )


def _people_to_predict(
  paths: Sequence[str],
  boxes: Sequence,
  detections: boxes_lib.Detections | None,
  unusable_boxes: int = 0,
) -> dict[str, list[ImagePerson]]:
  """Per image its people; with a boxes file, images without a kept box are left out with one
  warning (`unusable_boxes`: the boxes dropped as `boxes.unusable`, for the error of none)."""
  if detections is None:
    return {
      path: [ImagePerson(box, None, os.path.basename(path), None)]
      for path, box in zip(paths, boxes)
    }
  people = {
    path: [ImagePerson(p.box, p.score, p.image_id, p.entry) for p in detections.per_image[path]]
    for path in paths
  }
  empty = [path for path in paths if not people[path]]
  if empty and len(empty) == len(paths):
    raise boxes_lib.BoxError(boxes_lib.no_image_box(detections, unusable_boxes))
  if empty:
    listed = _listed(empty)
    verb = 'has' if len(empty) == 1 else 'have'
    outputs.warn(
      f'{_plural(len(empty), "image")} {verb} no box scoring at least '
      f'--box_threshold={detections.threshold:g} in {detections.path}, skipped: {listed}'
    )
  return {path: people[path] for path in paths if people[path]}


def check(
  paths: Sequence[str],
  out_dir: str,
  *,
  camera: int | None = None,
  bbox: Sequence | None = (),
  boxes_file: str | None = None,
  box_threshold: float = 0.5,
  images_only: bool = False,
) -> Inputs:
  """Checks a prediction's inputs (module doc) and opens its videos and camera.

  Args:
    paths: images and videos (told apart by `video.is_video`); a directory: its images
      (`expand_directories`).
    out_dir: the output directory, where no two inputs may write the same file.
    camera: a camera's index, predicted after `paths`; None: none.
    bbox: person boxes (x, y, w, h) or None (the whole image or frame): none, one for every
      input, or one per input in order (the camera last). One person per input.
    boxes_file, box_threshold: instead of `bbox`, a detector's boxes file (`boxes.read_boxes`)
      and the lowest score of a box kept.
    images_only: every path is an image, whatever its extension.
  Returns:
    The inputs, their videos' sources open: the caller releases them (`video.predict_video`
    does).
  Raises:
    ImageError: images that are missing or not images (all named), a directory without an
      image, a box count that fits neither rule, or two images whose outputs would collide.
    VideoError: a video or camera that does not open, or one whose outputs would collide with
      another input's.
    BoxError: a bad box or one the model cannot be given in its image or frame
      (`check_bbox`), both `bbox` and `boxes_file`, or a boxes file that cannot be used or keeps
      no box for any image given.
  """
  if boxes_file is not None and bbox:
    raise boxes_lib.BoxError(
      'give person boxes either one per image (--bbox) or in a file (--boxes), not both'
    )
  paths = expand_directories(paths)
  videos = [path for path in paths if not images_only and video.is_video(path)]
  images = [path for path in paths if images_only or not video.is_video(path)]
  cameras = [] if camera is None else [camera]
  given = [*paths, *cameras]
  box_per_input = dict(zip(given, boxes_per_input(bbox, len(given))))
  _check_images(images, out_dir)
  detections = None
  unusable_boxes = 0
  if boxes_file is not None:
    detections = boxes_lib.read_boxes(boxes_file, images, box_threshold, videos)
    sizes = {path: image_io.image_size(path) for path in images if detections.per_image[path]}
    unusable_boxes = _usable_boxes(detections, sizes)
  for path in images:
    if box_per_input[path] is not None:
      check_bbox(path, box_per_input[path], image_io.image_size(path))
  people = _people_to_predict(
    images, [box_per_input[path] for path in images], detections, unusable_boxes
  )
  stems = {os.path.splitext(os.path.basename(path))[0]: path for path in images}
  opened = []
  try:
    for name in [*videos, *cameras]:
      source = video.open_source(name)
      frame_boxes = None if detections is None else detections.per_video.get(name)
      opened.append(VideoInput(source, box_per_input[name], frame_boxes))
      check_bbox(source.name, box_per_input[name], (source.height, source.width), 'frame')
      _usable_frame_boxes(opened[-1])
      if source.stem in stems:
        raise video.VideoError(
          f'{stems[source.stem]} and {source.name} would both write '
          f'{video.output_paths(out_dir, source.stem)["json"]}: rename one or predict them in '
          'separate calls with different --out_dir'
        )
      stems[source.stem] = source.name
  except BaseException:
    for opened_video in opened:
      opened_video.source.capture.release()
    raise
  return Inputs(images, people, opened)

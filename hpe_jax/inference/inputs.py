"""The inputs of a prediction, each checked once and before the model loads (`check`): the images
(files OpenCV reads, whose outputs do not collide), the person boxes (one for every input or one
per input), a detector's boxes file (read once, for the images and the videos), and the videos and
the camera (opened). A file that is missing or not an image or video, a camera that does not open,
a box count that fits neither rule or a boxes file that cannot be used stops the run with an error
naming it (nothing is skipped); only images a boxes file gives no box are skipped, with a warning.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple
from typing import Sequence

from hpe_jax.inference import boxes as boxes_lib
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


def _check_images(paths: Sequence[str], out_dir: str) -> None:
  """Fails on unreadable images, or two images whose outputs collide."""
  stems = {}
  for path in paths:
    image_io.check_readable(path)
    json_path = outputs.output_paths(out_dir, path)['json']
    if json_path in stems:
      raise image_io.ImageError(
        f'{stems[json_path]} and {path} would both write {json_path}: rename one '
        'or predict them in separate calls with different --out_dir'
      )
    stems[json_path] = path


def _plural(count: int, word: str) -> str:
  return f'{count} {word}' if count == 1 else f'{count} {word}s'


def _people_to_predict(
  paths: Sequence[str], boxes: Sequence, detections: boxes_lib.Detections | None
) -> dict[str, list[ImagePerson]]:
  """Per image its people; with a boxes file, images without a kept box are left out with one
  warning."""
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
    raise boxes_lib.BoxError(
      f'--boxes={detections.path} has no person box scoring at least '
      f'--box_threshold={detections.threshold:g} for any image given: lower the threshold'
    )
  if empty:
    listed = ', '.join(empty[:10]) + (f', ... ({len(empty) - 10} more)' if len(empty) > 10 else '')
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
    paths: images and videos (told apart by `video.is_video`).
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
    ImageError: an image that is missing or not an image, a box count that fits neither rule, or
      two images whose outputs would collide.
    VideoError: a video or camera that does not open, or one whose outputs would collide with
      another input's.
    BoxError: a bad box, both `bbox` and `boxes_file`, or a boxes file that cannot be used or
      keeps no box for any image given.
  """
  if boxes_file is not None and bbox:
    raise boxes_lib.BoxError(
      'give person boxes either one per image (--bbox) or in a file (--boxes), not both'
    )
  videos = [path for path in paths if not images_only and video.is_video(path)]
  images = [path for path in paths if images_only or not video.is_video(path)]
  cameras = [] if camera is None else [camera]
  given = [*paths, *cameras]
  box_per_input = dict(zip(given, boxes_per_input(bbox, len(given))))
  _check_images(images, out_dir)
  detections = None
  if boxes_file is not None:
    detections = boxes_lib.read_boxes(boxes_file, images, box_threshold, videos)
  people = _people_to_predict(images, [box_per_input[path] for path in images], detections)
  stems = {os.path.splitext(os.path.basename(path))[0]: path for path in images}
  opened = []
  try:
    for name in [*videos, *cameras]:
      source = video.open_source(name)
      frame_boxes = None if detections is None else detections.per_video.get(name)
      opened.append(VideoInput(source, box_per_input[name], frame_boxes))
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

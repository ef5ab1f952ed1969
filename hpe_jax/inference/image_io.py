"""Image files read and written with OpenCV, RGB in memory, and `ImageError`, the error of an
image, a person box or an output that cannot be used."""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image

from hpe_jax import errors


class ImageError(errors.HpeError, ValueError):
  """An image, a person box or an output path cannot be used; the message names it."""


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


def check_readable(path: str) -> None:
  """Fails unless `path` is a file OpenCV reads as an image; reads only the file's signature, so
  that a file that passes but fails to decode fails later, in `read_image`.

  Raises:
    ImageError: naming the file, as `read_image` does.
  """
  if not is_image(path):
    read_image(path)  # raises the error naming the file


def is_image(path: str) -> bool:
  """Whether `path` is a file whose signature OpenCV reads as an image (`check_readable`)."""
  return os.path.isfile(path) and cv2.haveImageReader(path)


# EXIF orientations that turn the image by 90 degrees (OpenCV's imread applies them).
_TURNED = (5, 6, 7, 8)


def image_size(path: str) -> tuple[int, int]:
  """The (height, width) `read_image` gives the image at `path`, from its header where Pillow
  reads it (EXIF orientation applied), else by decoding it.

  Raises:
    ImageError: as `read_image`.
  """
  try:
    with Image.open(path) as image:
      width, height = image.size
      orientation = image.getexif().get(0x0112, 1)
  except Exception:  # pylint: disable=broad-except  (any format Pillow lacks: OpenCV decodes)
    return read_image(path).shape[:2]
  return (width, height) if orientation in _TURNED else (height, width)


def save_image(path: str, image_rgb: np.ndarray) -> None:
  """Writes (H, W, 3) uint8 RGB to `path` in the format its extension names.

  Raises:
    ImageError: it cannot be written.
  """
  if not cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
    raise ImageError(f'cannot write {path}: check that its directory is writable and has space')

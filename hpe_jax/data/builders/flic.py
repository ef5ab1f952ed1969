"""`flic_full` and `flic`: Frames Labeled In Cinema (Sapp & Taskar, MODEC, CVPR 2013).

Upper bodies in Hollywood movie frames (720 x 480). Both releases ship an examples.mat holding a
1 x N struct array `examples` (N = 20,928 for FLIC-full, 5003 for FLIC) with, per person:
coords (2 x 29, NaN where not labelled), filepath (the image file in images/), istrain, istest,
and fields this reader does not need (poselet_hit_idx, moviename, imgdims, currframe, torsobox).

The 29 coordinate slots follow FLIC's part list (joints.FLIC29 below). Labelled are the 1-based
parts 1-7, 10, 13, 14 and 17, i.e. the 0-based columns 0-6, 9, 12, 13, 16: shoulders, elbows,
wrists, hips, eyes and nose. The reference fork used the 1-based numbers as 0-based indices; here
the names index the columns, and the tests pin l_wrist to column 2 and check left/right on real
data (in frontal movie frames the left shoulder lies on the image's right).

Into MPII-16: shoulders, elbows, wrists and hips by name; pelvis (mid-hips) and thorax
(mid-shoulders) derived. Upper neck and head top stay missing: the eyes and nose lie on the face,
a head-size away from the head top, and no neck point is labelled, so filling either from them
would train the head channels towards the wrong place. Knees and ankles are unlabelled (their
slots map by name and are NaN). FLIC has no occlusion flag: visible = annotated.

Coordinates are MATLAB's 1-based pixels (as for LSP, see lsp.py): the reader subtracts 1.
The person box is the joint box of every labelled point, eyes and nose included, so that the
upper body's box reaches the face (the MPII-16 joints alone stop at the shoulders). Some hips are
labelled below the frame (y up to 553 in 480 px frames): they enlarge the box, and the base masks
them as joints outside the image.
"""

from __future__ import annotations

import collections
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from hpe_jax import joints
from hpe_jax.data.builders import base

_FIELDS = ('coords', 'filepath', 'istrain', 'istest')  # the fields the reader uses


def _flag(value) -> bool:
  """A MATLAB logical field (e.g. [[1]], or [] when unset) -> bool."""
  value = np.asarray(value).ravel()
  return bool(value.size and value[0])


def load_examples(path: str) -> np.ndarray:
  """The `examples` struct array of examples.mat, flattened to (N,); checks the needed fields."""
  examples = base.load_mat(path, 'examples')
  missing = [f for f in _FIELDS if f not in (examples.dtype.names or ())]
  if missing:
    raise base.AnnotationError(f'{path}: examples has no field(s) {", ".join(missing)}')
  return examples.ravel()


def read_examples(path: str, num_examples: int) -> dict[str, list[base.Person]]:
  """Reads a FLIC or FLIC-full examples.mat.

  Args:
    path: the examples.mat file.
    num_examples: how many entries the release has (5003 FLIC, 20,928 FLIC-full).
  Returns:
    {'train': people with istrain, 'test': people with istest}: MPII-16 joints (16, 2) in 0-based
    pixels of 'images/<filepath>', mask (16,), visibility (16,) = mask, box from all labelled
    FLIC points. person_index numbers the entries that share an image, in file order.
  Raises:
    AnnotationError: unreadable file, no `examples`, a missing field, the wrong number of
      entries, or coords that are not 2 x 29.
  """
  examples = load_examples(path)
  if examples.size != num_examples:
    raise base.AnnotationError(
      f'{path}: examples has {examples.size} entries, expected {num_examples} (FLIC has '
      f'{Flic.NUM_EXAMPLES}: build it as {Flic.name}; FLIC-full has {FlicFull.NUM_EXAMPLES}: '
      f'build it as {FlicFull.name})'
    )
  splits = {'train': [], 'test': []}
  per_image = collections.Counter()
  in_no_split = 0
  for i, example in enumerate(examples):
    coords = np.asarray(example['coords'], np.float32)
    if coords.shape != (2, len(joints.FLIC29)):
      raise base.AnnotationError(
        f'{path}: examples({i + 1}).coords has shape {coords.shape}, expected (2, 29)'
      )
    labelled = np.isfinite(coords).all(axis=0).astype(np.float32)
    xy = np.where(labelled[:, None] > 0, coords.T - 1, 0)  # MATLAB 1-based -> 0-based pixels
    mpii_xy, mpii_mask = joints.MPII_FROM_FLIC(xy, labelled)
    center, side = base.box_from_joints(xy, labelled)
    filepath = np.asarray(example['filepath']).ravel()
    if filepath.size != 1 or not str(filepath[0]):
      raise base.AnnotationError(f'{path}: examples({i + 1}).filepath is not a file name')
    image = 'images/' + str(filepath[0])
    person = base.Person(
      image=image,
      person_index=per_image[image],
      joints_2d=mpii_xy,
      joints_mask=mpii_mask,
      joints_visible=mpii_mask,
      box_center=center,
      box_side=side,
    )
    per_image[image] += 1
    flags = {'train': _flag(example['istrain']), 'test': _flag(example['istest'])}
    for split, flag in flags.items():
      if flag:
        splits[split].append(person)
    in_no_split += not any(flags.values())
  if in_no_split:  # the release defines no split for them: say so rather than drop silently
    logging.warning(
      '%s: %d of %d examples have neither istrain nor istest; they are not built',
      path,
      in_no_split,
      examples.size,
    )
  return splits


class FlicFull(base.PoseDatasetBuilder):
  """FLIC-full: 20,928 labelled upper bodies in movie frames; splits from istrain / istest."""

  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {
    '1.1.0': 'distortion field (zeros here).',
    '1.2.0': 'image_size (for the crop clamp) and fork_joints_3d (zeros here) fields.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download FLIC-full.zip from https://bensapp.github.io/flic-dataset.html and unzip it into
manual_dir, so that it holds
  manual_dir/examples.mat               (struct array examples, 1 x 20928)
  manual_dir/images/*.jpg               (the files named by examples.filepath)
"""
  DEFAULT_SPLITS = {'2d': 'train', '3d': 'train', 'eval': 'test'}  # no 3D labels; see lsp.Lsp
  NUM_EXAMPLES = 20928

  def read_annotations(self, manual_dir: str) -> dict[str, list[base.Person]]:
    return read_examples(os.path.join(manual_dir, 'examples.mat'), self.NUM_EXAMPLES)


class Flic(FlicFull):
  """FLIC: the 5003-person subset of FLIC-full (3987 train, 1016 test), the same reader.

  A name of its own rather than "whatever examples.mat is present": a built dataset's name then
  says which release it holds, and the entry count check catches a file of the other release.
  """

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download FLIC.zip from https://bensapp.github.io/flic-dataset.html and unzip it into
manual_dir, so that it holds
  manual_dir/examples.mat               (struct array examples, 1 x 5003)
  manual_dir/images/*.jpg               (the files named by examples.filepath)
"""
  NUM_EXAMPLES = 5003

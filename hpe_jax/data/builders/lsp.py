"""`lsp` and `lsp_extended`: the Leeds Sports Pose datasets (Johnson & Everingham, 2010 / 2011).

Both releases store one person per image in a MATLAB `joints` array of 14 joints (joints.LSP14
order) with x, y and a visibility flag, but they differ in layout and in what the flag means:

- LSP: `joints` is 3 x 14 x 2000 and the flag is 1 = OCCLUDED (0 = visible). Every joint has a
  position (annotators estimated the occluded ones), so all 14 are annotated. The evidence: the
  READMEs say only "visibility flags"; public converters invert LSP's flag but not LSPET's
  (akanazawa/hmr src/datasets/lsp_to_tfrecords.py: "LSP 3-D dim, 0 means visible 1 means
  invisible. But in LSP-ext, 0 means invis, 1 means visible"; two lsp2coco-style converters do
  the same), and LSPET's own data confirm its half (below). The re-encoded test half in
  realdata (SPIN's lsp_dataset_test.npz) cannot tell: its column 2 is a constant 1 that SPIN
  writes for "annotated", which does confirm that all 14 joints carry positions.
- LSP-Extended: `joints` is 14 x 3 x 10000 and the flag is 1 = visible. Joints with flag 0 hold
  junk coordinates (every one of them has x <= 0 and y <= 0, e.g. (-53, 0)), so they are NOT
  annotated.

Coordinates are MATLAB's 1-based pixel coordinates (the centre of the top-left pixel is (1, 1)):
the readers subtract 1. Besides the release format, the data are consistent with it: LSPET parks
all 16,787 junk joints in x <= 0 and y <= 0 (112 exactly at (0, 0)), a region wholly off the image
only in a 1-based frame (0-based, (0, 0) is the top-left pixel's centre), while only 9 of the
123,213 visible joints have a coordinate <= 0.

joints.LSP14 is mapped into MPII-16 by name; LSP's neck is MPII's upper neck, pelvis (mid-hips) and
thorax (mid-shoulders) are derived where both of their sources are annotated.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from hpe_jax import joints
from hpe_jax.data.builders import base


@dataclasses.dataclass(frozen=True)
class Layout:
  """How one LSP release stores `joints` in joints.mat, and how its people are split."""

  shape: tuple[int, int, int]  # the array's shape in the file
  axes: str  # what each of those axes holds: 'c' x/y/flag, 'j' joint, 'n' person
  visible_flag: int  # the flag value that means "visible"
  occluded_annotated: bool  # whether occluded joints hold (estimated) positions
  image_name: str  # image of person i (1-based), relative to manual_dir
  splits: tuple[tuple[str, int, int], ...]  # (split, first, end) 0-based person ranges


LSP_LAYOUT = Layout(
  shape=(3, 14, 2000),
  axes='cjn',
  visible_flag=0,
  occluded_annotated=True,
  image_name='images/im{:04d}.jpg',
  splits=(('train', 0, 1000), ('test', 1000, 2000)),
)
LSP_EXTENDED_LAYOUT = Layout(
  shape=(14, 3, 10000),
  axes='jcn',
  visible_flag=1,
  occluded_annotated=False,
  image_name='images/im{:05d}.jpg',
  splits=(('train', 0, 10000),),
)


_AXIS_NAMES = {'c': 'x/y/flag', 'j': '14 joints', 'n': 'people'}


def read_joints(path: str, layout: Layout) -> dict[str, list[base.Person]]:
  """Reads an LSP or LSP-Extended joints.mat.

  Args:
    path: the joints.mat file.
    layout: LSP_LAYOUT or LSP_EXTENDED_LAYOUT.
  Returns:
    {split: people}, one person per image: MPII-16 joints (16, 2) in 0-based pixels of the
    image named `layout.image_name`, mask (16,), visibility (16,), box from the annotated joints.
  Raises:
    AnnotationError: unreadable file, no `joints`, wrong shape, or flags other than 0 and 1.
  """
  array = base.load_mat(path, 'joints')
  if array.shape != layout.shape:
    raise base.AnnotationError(
      f'{path}: joints has shape {array.shape}, expected {layout.shape} '
      f'({" x ".join(_AXIS_NAMES[a] for a in layout.axes)})'
    )
  people = np.transpose(array, [layout.axes.index(a) for a in 'njc']).astype(np.float32)
  flags = people[..., 2]
  if not np.isin(flags, (0, 1)).all():
    bad = np.unique(flags[~np.isin(flags, (0, 1))])[:5]
    raise base.AnnotationError(f'{path}: joints visibility flags must be 0 or 1, found {bad}')
  visible = (flags == layout.visible_flag).astype(np.float32)
  annotated = np.ones_like(visible) if layout.occluded_annotated else visible
  xy = people[..., :2] - 1  # MATLAB 1-based -> 0-based pixels
  mpii_xy, mpii_mask = joints.MPII_FROM_LSP(xy, annotated)
  _, mpii_visible = joints.MPII_FROM_LSP(xy, visible)
  splits = {}
  for split, first, end in layout.splits:
    splits[split] = []
    for i in range(first, end):
      center, side = base.box_from_joints(mpii_xy[i], mpii_mask[i])
      splits[split].append(
        base.Person(
          image=layout.image_name.format(i + 1),
          person_index=0,
          joints_2d=mpii_xy[i],
          joints_mask=mpii_mask[i],
          joints_visible=mpii_visible[i],
          box_center=center,
          box_side=side,
        )
      )
  return splits


class Lsp(base.PoseDatasetBuilder):
  """Leeds Sports Pose: 2000 sports photos, one person each; train = 1-1000, test = 1001-2000."""

  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {
    '1.1.0': 'distortion field (zeros here).',
    '1.2.0': 'image_size (for the crop clamp) and fork_joints_3d (zeros here) fields.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download lsp_dataset.zip (Leeds Sports Pose) from http://sam.johnson.io/research/lsp.html and
unzip it into manual_dir, so that it holds
  manual_dir/joints.mat                 (3 x 14 x 2000)
  manual_dir/images/im0001.jpg ... im2000.jpg
"""
  # The standard halves. LSP has no 3D labels: '3d' is here only so that every role resolves.
  # LspExtended inherits it and has no 'test' split, so asking it for 'eval' names its splits.
  DEFAULT_SPLITS = {'2d': 'train', '3d': 'train', 'eval': 'test'}
  LAYOUT = LSP_LAYOUT

  def read_annotations(self, manual_dir: str) -> dict[str, list[base.Person]]:
    return read_joints(os.path.join(manual_dir, 'joints.mat'), self.LAYOUT)


class LspExtended(Lsp):
  """LSP-Extended (LSPET): 10,000 parkour, gymnastics and athletics photos; one split, train.

  The same reader as Lsp with the LSPET layout; occluded joints are not annotated.
  """

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download lspet_dataset.zip (LSP-Extended) from http://sam.johnson.io/research/lspet.html and
unzip it into manual_dir, so that it holds
  manual_dir/joints.mat                 (14 x 3 x 10000)
  manual_dir/images/im00001.jpg ... im10000.jpg
"""
  LAYOUT = LSP_EXTENDED_LAYOUT

"""`mpii`: MPII Human Pose (Andriluka et al., CVPR 2014), read from any of its common encodings.

Splits: `train` = the annotated people of MPII's training images minus Tompson's validation people;
`validation` = Tompson's 2958 people (the standard MPII validation split). MPII's own test set has
no public labels and is not built.

Three annotation sets are understood; the first one found in manual_dir wins (official .mat, then
json, then h5: the official file is the complete one, the json keeps its sub-pixel coordinates, the
h5 truncates them to whole pixels):
1. official: `mpii_human_pose_v1_u12_1.mat`, plus `valid.h5`, whose (imgname, person) pairs name
   the validation people (the official file has no validation split).
2. json (mmpose / HRNet): `mpii_train.json` + `mpii_val.json`, or `train.json` + `valid.json`;
   optionally `mpii_gt_val.mat` / `gt_valid.mat` beside them, the evaluator's ground truth in
   the order of the validation json, for the validation head sizes.
3. h5 (Newell): `train.h5` + `valid.h5`.

Conventions, established on the real files (tests/data/test_mpii.py checks each):
- Every encoding keeps the official coordinates, 1-based as in MATLAB (the top-left pixel's centre
  is (1, 1)); readers subtract 1. The person box centre (objpos, json `center`) shares this
  convention. The json joints equal the standard evaluator's ground truth (`pos_gt_src` of
  pytorch-pose's detections_our_format.mat) to 1e-4 px; the h5 `part` equals them truncated
  toward zero (Newell's converter casts to int), so h5 necks and head tops, annotated with
  sub-pixel precision, lie up to 1 px up-left of the truth.
- h5 `part` (0, 0) marks a joint that is not annotated; `visible` is MPII's occlusion flag
  (-1 with part (-1, -1) for a person without annopoints). h5 `person` is the 0-based position in
  the image's annorect (its values start at 0), `index` the 0-based annolist position (Newell's
  converter enumerates both from 0 in Python).
- json `joints_vis` is the annotation mask, not the occlusion flag: unannotated joints have 0 and
  coordinates (-1, -1), while joints MPII flags occluded have 1. So json people get
  joints_visible = mask.
- json `center`/`scale` are MPII's raw objpos/scale; h5 `center`/`scale` already carry the
  reference's adjustment (cy += 15 * scale, scale *= 1.25), which the h5 reader undoes so that one
  formula (`_person`) makes every box.
- h5 `normalize` is the head size itself: 0.6 x the head box diagonal (its ratio to the diagonal
  of detections_our_format.mat's `headboxes_src` is 0.6 to 2e-7).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import h5py
import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from hpe_jax import joints
from hpe_jax.data.builders import base

OFFICIAL_MAT = 'mpii_human_pose_v1_u12_1.mat'
SPLIT_H5 = 'valid.h5'  # Tompson's validation people in Newell's layout
IMAGE_DIR = 'images'

SCALE_PX = 200.0  # MPII's scale unit: scale = person height / 200 px
CENTER_SHIFT = 15.0  # the reference moves the box centre down by 15 scale units ...
BOX_PAD = 1.25  # ... and pads the box side to 1.25 x 200 x scale (REFERENCE.md 1)
HEAD_SIZE_FACTOR = 0.6  # PCKh's head size = 0.6 x head box diagonal

NO_JOINTS = 'people without annotated joints'
NO_BOX = 'people without objpos/scale'


@dataclasses.dataclass(frozen=True)
class Layout:
  """One annotation set: the files of its two splits and what picks it (see the module doc)."""

  kind: str  # 'official', 'json' or 'h5'
  train: str
  validation: str
  head_boxes: str = ''  # json only: optional evaluator ground truth with the validation head boxes

  @property
  def markers(self) -> tuple[str, ...]:
    """Files whose presence selects this set (valid.h5 alone is shared by official and h5)."""
    return (self.train, self.validation) if self.kind == 'json' else (self.train,)


LAYOUTS = (  # in order of precedence
  Layout('official', OFFICIAL_MAT, SPLIT_H5),
  Layout('json', 'mpii_train.json', 'mpii_val.json', 'mpii_gt_val.mat'),
  Layout('json', 'train.json', 'valid.json', 'gt_valid.mat'),
  Layout('h5', 'train.h5', 'valid.h5'),
)


def _person(
  image: str,
  person_index: int,
  joints_1based,
  mask,
  visible,
  center_1based,
  scale: float,
  head_size: float,
) -> base.Person:
  """A Person from MPII's 1-based raw annotations.

  Args:
    image: file name inside images/.
    person_index: which person of the image.
    joints_1based: (16, 2) pixels, 1-based; ignored where mask is 0.
    mask: (16,) 1 = annotated.
    visible: (16,) MPII's occlusion flag (1 = visible), 1 where the source has none.
    center_1based: (2,) MPII's objpos, 1-based pixels.
    scale: MPII's raw scale (person height / 200 px).
    head_size: 0.6 x head box diagonal in pixels, 0 if unknown.
  """
  mask = np.asarray(mask, np.float32)
  joints_2d = np.where(mask[:, None] > 0, np.asarray(joints_1based, np.float64) - 1, 0)
  center = np.asarray(center_1based, np.float64) - 1 + (0.0, CENTER_SHIFT * scale)
  return base.Person(
    image=f'{IMAGE_DIR}/{image}',
    person_index=int(person_index),
    joints_2d=joints_2d.astype(np.float32),
    joints_mask=mask,
    joints_visible=(np.asarray(visible, np.float32) * mask).astype(np.float32),
    box_center=center.astype(np.float32),
    box_side=float(BOX_PAD * SCALE_PX * scale),
    head_size=float(head_size),
  )


# ----------------------------------------------------------------------------- the official .mat


def _load_mat(path: str, **kwargs) -> dict:
  try:
    return scipy.io.loadmat(path, **kwargs)
  except Exception as e:  # scipy raises many types for a damaged file; name the file instead
    raise base.AnnotationError(f'cannot read {path}: {e}') from e


def _field(struct, name: str):
  """A field of a loaded MATLAB struct; None if the struct lacks it (or is not a struct: MATLAB
  writes [] for an absent sub-struct)."""
  return getattr(struct, name, None) if isinstance(struct, scipy.io.matlab.mat_struct) else None


def _structs(value) -> list:
  """A struct array as loadmat(squeeze_me=True) returns it -> a list of structs: it squeezes one
  element to a bare struct, and none to an empty array."""
  if isinstance(value, scipy.io.matlab.mat_struct):
    return [value]
  if isinstance(value, np.ndarray) and value.dtype == object:
    return list(value.ravel())
  return []


def _scalar(value, where: str) -> float | None:
  """A MATLAB scalar stored as a number, a numeric string ('1') or empty ([] or '') -> float, None
  if empty. Raises AnnotationError naming `where` otherwise."""
  if value is None:
    return None
  if isinstance(value, str):
    value = value.strip()
    if not value:
      return None
  array = np.asarray(value)
  if array.size == 0:
    return None
  try:
    if array.size != 1:
      raise ValueError(f'shape {array.shape}')
    return float(array.item())
  except (TypeError, ValueError) as e:
    raise base.AnnotationError(f'{where}: expected a number, got {value!r} ({e})') from e


def _official_person(rect, image: str, r: int, where: str):
  """One annorect entry -> (Person, None), or (None, skip reason) for a person without annotated
  joints or without objpos/scale."""
  xy, mask = np.zeros((joints.NUM_JOINTS, 2)), np.zeros(joints.NUM_JOINTS)
  visible = np.ones(joints.NUM_JOINTS)
  for k, point in enumerate(_structs(_field(_field(rect, 'annopoints'), 'point'))):
    at = f'{where}.annopoints.point({k + 1})'
    joint, x, y = (_scalar(_field(point, n), f'{at}.{n}') for n in ('id', 'x', 'y'))
    if joint is None or x is None or y is None:
      raise base.AnnotationError(f'{at}: id, x and y are required, got {joint}, {x}, {y}')
    if joint != int(joint) or not 0 <= joint < joints.NUM_JOINTS:
      raise base.AnnotationError(f'{at}.id: {joint} is not a joint id 0..15')
    is_visible = _scalar(_field(point, 'is_visible'), f'{at}.is_visible')
    xy[int(joint)], mask[int(joint)] = (x, y), 1
    visible[int(joint)] = 1.0 if is_visible is None else float(is_visible != 0)
  if not mask.any():
    return None, NO_JOINTS
  objpos = _field(rect, 'objpos')
  cx, cy = (_scalar(_field(objpos, n), f'{where}.objpos.{n}') for n in ('x', 'y'))
  scale = _scalar(_field(rect, 'scale'), f'{where}.scale')
  if cx is None or cy is None or scale is None or scale <= 0:
    return None, NO_BOX
  box = [_scalar(_field(rect, n), f'{where}.{n}') for n in ('x1', 'y1', 'x2', 'y2')]
  head_size = (
    0.0 if None in box else HEAD_SIZE_FACTOR * float(np.hypot(box[2] - box[0], box[3] - box[1]))
  )
  return _person(image, r, xy, mask, visible, (cx, cy), scale, head_size), None


def read_official(mat_path: str, split_h5_path: str):
  """Reads the official MPII annotations, split by Tompson's validation people.

  Args:
    mat_path: mpii_human_pose_v1_u12_1.mat.
    split_h5_path: valid.h5 (Newell's layout): its index (0-based annolist position), imgname
      (checked against that entry) and person (0-based annorect position) name the validation
      people; its `part`, if present, must agree with the .mat.
  Returns:
    ({'train': people in annolist order, 'validation': people in valid.h5 order},
     {split: Counter of people left out, by reason}).
  """
  name = os.path.basename(mat_path)
  release = _load_mat(mat_path, struct_as_record=False, squeeze_me=True).get('RELEASE')
  annolist = _structs(_field(release, 'annolist'))
  if not annolist:
    raise base.AnnotationError(f'{name}: no RELEASE.annolist struct array')
  img_train = np.asarray(_field(release, 'img_train')).ravel()
  if img_train.shape != (len(annolist),):
    raise base.AnnotationError(
      f'{name}: RELEASE.img_train has shape {img_train.shape}, expected '
      f'({len(annolist)},), one flag per annolist entry'
    )

  def image_name(i):
    image = _field(_field(annolist[i], 'image'), 'name')
    if not isinstance(image, str) or not image:
      raise base.AnnotationError(
        f'{name} annolist({i + 1}).image.name: expected a file name, got {image!r}'
      )
    return image

  # Keyed by annolist position, not name: nothing in the format makes names unique.
  annotated, skipped = {}, collections.Counter()
  for i in np.flatnonzero(img_train):  # test images carry no joints
    for r, rect in enumerate(_structs(_field(annolist[i], 'annorect'))):
      person, reason = _official_person(
        rect, image_name(i), r, f'{name} annolist({i + 1}).annorect({r + 1})'
      )
      if person is None:
        skipped[reason] += 1
      else:
        annotated[i, r] = person
  split = _read_h5(split_h5_path, ('imgname', 'index', 'person'), ('part',))
  validation = []
  for j, (image, i, r) in enumerate(
    zip(split['imgname'], split['index'].astype(int), split['person'].astype(int))
  ):
    where = f'{os.path.basename(split_h5_path)} entry {j}'
    if not 0 <= i < len(annolist) or image_name(i) != image:
      raise base.AnnotationError(f'{where}: index {i} (0-based) is not image {image} in {name}')
    person = annotated.pop((i, r), None)
    if person is None:
      raise base.AnnotationError(
        f'{where}: {image} person {r} (0-based) is not an annotated person of {name}'
      )
    if 'part' in split:
      _check_same_person(person, split['part'][j], where)
    validation.append(person)
  return (
    {'train': list(annotated.values()), 'validation': validation},
    {'train': skipped, 'validation': collections.Counter()},
  )


def _check_same_person(person: base.Person, part: np.ndarray, where: str):
  """Guards against a split file of another annotation version: Newell's `part` (1-based, truncated
  toward zero, (0, 0) = not annotated) must match the person's joints to within 1 px."""
  h5_mask = np.any(part != 0, axis=-1)
  close = np.abs(person.joints_2d + 1 - part).max(axis=-1) < 1
  if np.any(h5_mask & ~(person.joints_mask > 0)) or not np.all(close[h5_mask]):
    raise base.AnnotationError(
      f'{where}: its part does not match {person.image} person '
      f'{person.person_index} of the .mat (a split file of another '
      'annotation release?)'
    )


# ----------------------------------------------------------------------------- json (mmpose, HRNet)


def read_json(path: str):
  """Reads a json re-encoding: a list of {image, center, scale, joints (16, 2), joints_vis (16,)}.

  person_index is the entry's rank among the file's entries for the same image (the json does
  not keep MPII's annorect position). head_size is 0 (see `add_head_sizes`).

  Returns:
    (people in file order, Counter of people left out, by reason).
  """
  name = os.path.basename(path)
  try:
    with open(path) as f:
      entries = json.load(f)
  except (OSError, ValueError) as e:
    raise base.AnnotationError(f'cannot read {path}: {e}') from e
  if not isinstance(entries, list):
    raise base.AnnotationError(f'{name}: expected a list of people, got {type(entries).__name__}')
  people, skipped, seen = [], collections.Counter(), collections.Counter()
  shapes = {
    'center': (2,),
    'scale': (),
    'joints': (joints.NUM_JOINTS, 2),
    'joints_vis': (joints.NUM_JOINTS,),
  }
  for i, entry in enumerate(entries):
    where = f'{name} entry {i}'
    if not isinstance(entry, dict):
      raise base.AnnotationError(f'{where}: expected an object, got {type(entry).__name__}')
    image = entry.get('image')
    if not isinstance(image, str) or not image:
      raise base.AnnotationError(f"{where}: 'image' must be a file name, got {image!r}")
    values = {}
    for key, shape in shapes.items():
      if key not in entry:
        raise base.AnnotationError(f"{where}: missing '{key}'")
      try:
        values[key] = np.asarray(entry[key], np.float64)
      except (TypeError, ValueError) as e:
        raise base.AnnotationError(f"{where}: '{key}' is not numeric: {e}") from e
      if values[key].shape != shape:
        raise base.AnnotationError(
          f"{where}: '{key}' has shape {values[key].shape}, expected {shape}"
        )
    person_index = seen[image]
    seen[image] += 1
    mask = (values['joints_vis'] > 0).astype(np.float32)
    if not mask.any():
      skipped[NO_JOINTS] += 1
    elif values['scale'] <= 0 or values['center'][0] == -1:  # HRNet's mark of a missing objpos
      skipped[NO_BOX] += 1
    else:
      people.append(
        _person(
          image,
          person_index,
          values['joints'],
          mask,
          mask,
          values['center'],
          float(values['scale']),
          0.0,
        )
      )
  return people, skipped


def add_head_sizes(people: list[base.Person], entries: int, gt_path: str, json_name: str):
  """Sets head_size from the evaluator's ground truth file (mmpose's mpii_gt_val.mat, HRNet's
  gt_valid.mat: headboxes_src (2, 2, N), pos_gt_src (16, 2, N), jnt_missing (16, N), in the order
  of the validation json), after checking it describes the same people.

  Args:
    people: read_json's people of the validation json (none were left out: all have joints).
    entries: the number of entries in that json.
    gt_path: the ground truth .mat.
    json_name: the json's file name, for messages.
  """
  name = os.path.basename(gt_path)
  gt = _load_mat(gt_path)
  shapes = {
    'headboxes_src': (2, 2, entries),
    'pos_gt_src': (joints.NUM_JOINTS, 2, entries),
    'jnt_missing': (joints.NUM_JOINTS, entries),
  }
  for key, shape in shapes.items():
    if key not in gt:
      raise base.AnnotationError(f"{name}: missing '{key}'")
    if gt[key].shape != shape:
      raise base.AnnotationError(
        f"{name}: '{key}' has shape {gt[key].shape}, expected {shape} "
        f'(one entry per person of {json_name})'
      )
  if len(people) != entries:
    raise base.AnnotationError(
      f'{json_name}: {entries - len(people)} people left out, so '
      f'{name} cannot be matched to it by order'
    )
  for i, person in enumerate(people):
    both = (person.joints_mask > 0) & (gt['jnt_missing'][:, i] == 0)
    truth = gt['pos_gt_src'][:, :, i] - 1  # 1-based, like the json
    # The median tolerates the few joints that the evaluator's file stores with a coordinate
    # of 0 (13 of 44,240 in the standard one).
    if not both.any() or np.median(np.abs(person.joints_2d - truth)[both]) > 0.01:
      raise base.AnnotationError(
        f'{name} entry {i} does not match {json_name} entry {i}: '
        'they must list the same people in the same order'
      )
    low, high = gt['headboxes_src'][:, :, i]
    person.head_size = HEAD_SIZE_FACTOR * float(np.linalg.norm(high - low))


# ----------------------------------------------------------------------------- h5 (Newell)


def _read_h5(path: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
  """Reads datasets of an h5 file into numpy (imgname decoded to str); raises AnnotationError for
  an unreadable file or a missing required key."""
  name = os.path.basename(path)
  try:
    with h5py.File(path, 'r') as f:
      data = {k: f[k][()] for k in keys + optional if k in f}
  except Exception as e:  # h5py raises OSError, KeyError, ... for a damaged file
    raise base.AnnotationError(f'cannot read {path}: {e}') from e
  missing = [k for k in keys if k not in data]
  if missing:
    raise base.AnnotationError(f'{name}: missing key(s) {missing}')
  if 'imgname' in data:
    data['imgname'] = [n.decode() if isinstance(n, bytes) else str(n) for n in data['imgname']]
  count = len(data[keys[0]])
  shapes = {
    'center': (count, 2),
    'scale': (count,),
    'part': (count, joints.NUM_JOINTS, 2),
    'visible': (count, joints.NUM_JOINTS),
    'normalize': (count,),
    'person': (count,),
    'index': (count,),
    'imgname': (count,),
  }
  for key, value in data.items():
    if np.shape(value) != shapes[key]:
      raise base.AnnotationError(
        f"{name}: '{key}' has shape {np.shape(value)}, expected {shapes[key]}"
      )
  return data


def read_h5(path: str):
  """Reads Newell's h5 (imgname, person, center, scale, part, visible, normalize; see the module
  doc for their conventions).

  Returns:
    (people in file order, Counter of people left out, by reason).
  """
  data = _read_h5(path, ('imgname', 'person', 'center', 'scale', 'part', 'visible', 'normalize'))
  people, skipped = [], collections.Counter()
  for i, image in enumerate(data['imgname']):
    part, visible = data['part'][i], data['visible'][i]
    mask = (np.any(part != 0, axis=-1) & (visible >= 0)).astype(np.float32)
    if not mask.any():
      skipped[NO_JOINTS] += 1
      continue
    scale = data['scale'][i] / BOX_PAD  # undo Newell's adjustment: back to MPII's raw box
    center = data['center'][i] - (0.0, CENTER_SHIFT * scale)
    people.append(
      _person(
        image,
        data['person'][i],
        part,
        mask,
        visible,
        center,
        scale,
        max(float(data['normalize'][i]), 0.0),
      )
    )
  return people, skipped


# ----------------------------------------------------------------------------- the builder


def detect_layout(manual_dir: str) -> Layout:
  """The annotation set in manual_dir: the first of LAYOUTS with a marker file present. Raises
  AnnotationError naming the missing files if that set is incomplete, or if none is there."""
  present = lambda name: os.path.isfile(os.path.join(manual_dir, name))
  for layout in LAYOUTS:
    if any(present(n) for n in layout.markers):
      missing = [n for n in (layout.train, layout.validation) if not present(n)]
      if missing:
        raise base.AnnotationError(
          f'{", ".join(missing)} missing in {manual_dir}: the {layout.kind} MPII annotations '
          f'need {layout.train} and {layout.validation} (see the download instructions)'
        )
      return layout
  raise base.AnnotationError(
    f'no MPII annotations in {manual_dir}: expected one of '
    + '; '.join(f'{l.train} + {l.validation}' for l in LAYOUTS)
    + ' (see the download instructions)'
  )


def read_manual_dir(manual_dir: str):
  """Reads whichever annotation set manual_dir holds (detect_layout).

  Returns:
    ({'train': people, 'validation': people}, {split: {reason: count of people left out}}).
  """
  layout = detect_layout(manual_dir)
  path = lambda name: os.path.join(manual_dir, name)
  if layout.kind == 'official':
    people, skipped = read_official(path(layout.train), path(layout.validation))
  else:
    reader = read_json if layout.kind == 'json' else read_h5
    (train, train_skipped), (validation, validation_skipped) = (
      reader(path(layout.train)),
      reader(path(layout.validation)),
    )
    if layout.head_boxes and os.path.isfile(path(layout.head_boxes)):
      entries = len(validation) + sum(validation_skipped.values())
      add_head_sizes(validation, entries, path(layout.head_boxes), layout.validation)
    people = {'train': train, 'validation': validation}
    skipped = {'train': train_skipped, 'validation': validation_skipped}
  return people, {
    split: {reason: counts[reason] for reason in (NO_JOINTS, NO_BOX)}
    for split, counts in skipped.items()
  }


class Mpii(base.PoseDatasetBuilder):
  """MPII Human Pose: 2D joints of people in everyday photos; train and Tompson's validation."""

  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {
    '1.0.0': 'Initial release.',
    '1.1.0': 'distortion field (zeros here).',
    '1.2.0': 'image_size (for the crop clamp) and fork_joints_3d (zeros here) fields.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put the MPII images and ONE set of annotations in manual_dir.

  Images: unpack
    https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1.tar.gz
  in manual_dir (it creates {IMAGE_DIR}/*.jpg).

  Annotations, at the top of manual_dir (take the files out of the archives' folders); when
  several sets are there, the first one in this list is used:
  1. {OFFICIAL_MAT}, in
       https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1_u12_2.zip
     AND {SPLIT_H5}, which names the standard validation people (Tompson's split, missing from
     the official file):
       https://github.com/princeton-vl/pytorch_stacked_hourglass/raw/master/data/MPII/annot/valid.h5
  2. mmpose's mpii_train.json and mpii_val.json, and optionally mpii_gt_val.mat (the validation
     head sizes, which PCKh needs), all in
       https://download.openmmlab.com/mmpose/datasets/mpii_annotations.tar
     or HRNet's train.json and valid.json (optionally gt_valid.mat).
  3. Newell's train.h5 and valid.h5 (coordinates truncated to whole pixels: prefer 1 or 2),
       https://github.com/princeton-vl/pytorch_stacked_hourglass/tree/master/data/MPII/annot

  For example:
    manual_dir/{OFFICIAL_MAT}
    manual_dir/{SPLIT_H5}
    manual_dir/{IMAGE_DIR}/000001163.jpg ...
  """

  def read_annotations(self, manual_dir: str) -> dict[str, list[base.Person]]:
    people, self.read_report = read_manual_dir(manual_dir)
    return people

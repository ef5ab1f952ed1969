"""The common builder of the real pose datasets: annotations in, stored person crops out.

A dataset module supplies a reader that parses the files a user downloads into `Person` records
(MPII-16 joints in 0-based original pixels); this base turns them into the stored example format
of `hpe_jax.data.features`. It never drops anything silently: missing images are an error (or,
with `allow_missing`, a counted skip), unreadable images, people without annotated joints and
joints outside their image are counted in the builder's `report` (hpe-build-dataset prints it
and saves it beside the data).
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import os

import cv2
import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from hpe_jax import errors
from hpe_jax import joints
from hpe_jax.data import features

_EXAMPLES_PER_REASON = 5  # how many names each report line keeps


class AnnotationError(errors.HpeError, ValueError):
  """An annotation file is malformed; the message names the file and the field."""


class MissingImagesError(FileNotFoundError):
  """Images named by the annotations are not in manual_dir."""


@dataclasses.dataclass
class Person:
  """One annotated person, as a reader returns it. Pixels are 0-based (pixel centres are integers).

  joints_2d (16, 2) MPII-16 order; joints_mask (16,) 1 = annotated; joints_visible (16,) 1 = not
  occluded (1 where the dataset has no occlusion flag); box_center (2,) and box_side: the square
  person box; head_size: 0.6 x head box diagonal (0 if none); torso_size: |l_shoulder - r_hip|
  (0 if either is missing).
  """

  image: str  # relative to manual_dir (a builder may name video frames: see `image_file`)
  person_index: int
  joints_2d: np.ndarray
  joints_mask: np.ndarray
  joints_visible: np.ndarray
  box_center: np.ndarray
  box_side: float
  head_size: float = 0.0
  # 3D datasets: joints_3d (16, 3) camera-frame mm (MPII-16, masked like joints_2d);
  # eval_joints_3d (17, 3) camera mm, eval_mask (17,) and eval_visible (17,) in Human3.6M-17
  # order; intrinsics (4,) fx, fy, cx, cy in original pixels; distortion (5,) k1, k2, p1, p2, k3
  # (joints_2d then include it: they are where the joints appear in the image).
  joints_3d: np.ndarray | None = None
  eval_joints_3d: np.ndarray | None = None
  eval_mask: np.ndarray | None = None
  eval_visible: np.ndarray | None = None
  intrinsics: np.ndarray | None = None
  distortion: np.ndarray | None = None
  # (17, 3) camera mm: the study's fork's ground truth where it scores otherwise (see
  # features.pose_features); None elsewhere.
  fork_joints_3d: np.ndarray | None = None
  subject: str = ''
  action: str = ''
  camera: str = ''
  frame: int = 0


def torso_size(joints_2d: np.ndarray, mask: np.ndarray) -> float:
  """PCK's reference length: |left shoulder - right hip| in pixels, 0 if either is missing."""
  a, b = joints.MPII16.index('l_shoulder'), joints.MPII16.index('r_hip')
  if not (mask[a] and mask[b]):
    return 0.0
  return float(np.linalg.norm(joints_2d[a] - joints_2d[b]))


def box_from_joints(joints_2d: np.ndarray, mask: np.ndarray, pad: float = 1.25):
  """A square box around the annotated joints: (centre (2,), side = pad x the longer extent).
  Joints with a non-finite coordinate are left out (the builder masks and counts them).

  A person without annotated joints gets a placeholder box (centre (0, 0), side 1): the builder
  skips and counts such a person, so returning it keeps the skip visible in the build report.
  """
  usable = (np.asarray(mask) > 0) & np.isfinite(joints_2d).all(axis=-1)
  if not usable.any():
    return np.zeros(2, np.float32), 1.0
  points = joints_2d[usable]
  low, high = points.min(axis=0), points.max(axis=0)
  return ((low + high) / 2).astype(np.float32), float(pad * max((high - low).max(), 1.0))


def load_mat(path: str, variable: str) -> np.ndarray:
  """Reads one variable of a MATLAB v5 file; AnnotationError names the file (and variable)."""
  try:
    contents = scipy.io.loadmat(path)
  except Exception as e:  # scipy reports a malformed file as OSError, IndexError, MatReadError...
    raise AnnotationError(f'cannot read {path}: {type(e).__name__}: {e}') from e
  if variable not in contents:
    found = sorted(k for k in contents if not k.startswith('__'))
    raise AnnotationError(f'{path} has no variable {variable!r} (it has {found})')
  return contents[variable]


_VIDEO_FRAME_SEPARATOR = '@'


def video_frame_name(video: str, frame: int) -> str:
  """The image name of 0-based frame `frame` of `video` (relative to manual_dir)."""
  return f'{video}{_VIDEO_FRAME_SEPARATOR}{frame:06d}'


def _split_video_frame(name: str) -> tuple[str | None, int]:
  video, separator, frame = name.rpartition(_VIDEO_FRAME_SEPARATOR)
  return (video, int(frame)) if separator and frame.isdigit() else (None, 0)


class _SequentialVideo:
  """Decodes frames of one open video forward (seeking in compressed video is slow and, for
  MJPEG AVIs in OpenCV, unreliable); reopens the video when asked for an earlier frame."""

  def __init__(self):
    self._path, self._capture, self._next = None, None, 0

  def read(self, path: str, frame: int) -> np.ndarray | None:
    if path != self._path or frame < self._next:
      if self._capture is not None:
        self._capture.release()
      self._path, self._capture, self._next = path, cv2.VideoCapture(path), 0
    while self._next < frame:  # grab() skips a frame without converting it
      if not self._capture.grab():
        return None
      self._next += 1
    ok, image = self._capture.read()
    if not ok:
      return None
    self._next += 1
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


_JPEG_START, _JPEG_END = b'\xff\xd8', b'\xff\xd9'
_PNG_START, _PNG_END = b'\x89PNG', b'IEND\xaeB`\x82'
_TAIL = 1024  # bytes at a file's end that may follow its end marker (padding, vendor data)


def truncated(data: bytes) -> bool:
  """Whether a JPEG or PNG file's bytes lack the end marker near their end: the file was cut
  short (a partial download or copy). Decoders fill the missing part with grey and at most print
  a warning. Other formats: False. In JPEG scan data a 0xFF byte is always followed by 0x00 or a
  restart marker, so an end marker there means the image's end (or an embedded thumbnail's,
  which sits near the file's start)."""
  if data.startswith(_JPEG_START):
    return _JPEG_END not in data[-_TAIL:]
  if data.startswith(_PNG_START):
    return _PNG_END not in data[-_TAIL:]
  return False


def finite_labels(person: Person, mask: np.ndarray) -> tuple[Person | None, np.ndarray, list]:
  """The shared check of every builder's labels for NaN and infinity -> (the person, or None if
  it cannot be used, its 2D mask, the reasons to count). A joint with a non-finite 2D or 3D
  coordinate is masked (2D, 3D and evaluation labels alike); a non-finite box or camera makes
  the person unusable."""
  reasons = []
  for field in ('box_center', 'box_side', 'intrinsics', 'distortion'):
    value = getattr(person, field)
    if value is not None and not np.isfinite(value).all():
      return None, mask, [f'non-finite {field.replace("_", " ")}']
  bad = (mask > 0) & ~np.isfinite(person.joints_2d).all(axis=-1)
  if person.joints_3d is not None:
    bad |= (mask > 0) & ~np.isfinite(person.joints_3d).all(axis=-1)
  if bad.any():
    reasons.append('non-finite joint labels (masked)')
    mask = np.where(bad, 0, mask).astype(np.float32)
  changes = {}
  if person.eval_joints_3d is not None:
    bad_eval = (person.eval_mask > 0) & ~np.isfinite(person.eval_joints_3d).all(axis=-1)
    if bad_eval.any():
      reasons.append('non-finite evaluation labels (masked)')
      changes['eval_mask'] = np.where(bad_eval, 0, person.eval_mask)
      changes['eval_joints_3d'] = np.where(bad_eval[:, None], 0, person.eval_joints_3d)
  if person.fork_joints_3d is not None and not np.isfinite(person.fork_joints_3d).all():
    reasons.append("non-finite labels of the fork's protocol (left out of mpjpe_fork)")
    changes['fork_joints_3d'] = None
  if not np.isfinite(person.head_size):
    reasons.append('non-finite head size (PCKh skips the person)')
    changes['head_size'] = 0.0
  return (dataclasses.replace(person, **changes) if changes else person), mask, reasons


class PoseBuilderConfig(tfds.core.BuilderConfig):
  """crop_size: side in pixels of the stored crop, which spans 1.5x the person box (384 keeps a
  256 px network input at native resolution; 'small' suits 128 px inputs)."""

  def __init__(self, *, crop_size: int, **kwargs):
    super().__init__(**kwargs)
    self.crop_size = crop_size


class PoseDatasetBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """Subclasses set VERSION, MANUAL_DOWNLOAD_INSTRUCTIONS and implement `read_annotations`."""

  BUILDER_CONFIGS = [
    PoseBuilderConfig(name='default', crop_size=384, description='384 px crops'),
    PoseBuilderConfig(name='small', crop_size=192, description='192 px crops (small inputs)'),
  ]

  def __init__(self, *, allow_missing: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.allow_missing = allow_missing
    self.report: dict[str, dict] = {}
    # {split: {reason: count}} of people a reader leaves out before building (e.g. MPII people
    # without annotated joints); merged into `report`.
    self.read_report: dict[str, dict[str, int]] = {}
    self._videos = _SequentialVideo()

  def image_file(self, name: str) -> str:
    """The file (relative to manual_dir) that holds image `name`: the video of a video frame."""
    video, frame = _split_video_frame(name)
    return name if video is None else video

  def load_image(self, manual_dir: str, name: str) -> np.ndarray | None:
    """Image `name` as (H, W, 3) uint8 RGB, or None if it cannot be decoded. The base asks for
    each image once, grouped by file in order, so video frames decode sequentially."""
    video, frame = _split_video_frame(name)
    if video is not None:
      return self._videos.read(os.path.join(manual_dir, video), frame)
    path = os.path.join(manual_dir, name)
    try:
      data = np.fromfile(path, np.uint8)
    except OSError:
      return None
    if truncated(data.tobytes()):  # OpenCV would decode the rest as grey and only warn
      return None
    return features.decode_image(data)

  @abc.abstractmethod
  def read_annotations(self, manual_dir: str) -> dict[str, list[Person]]:
    """Parses the annotation files in manual_dir -> {split name: people}. Raises AnnotationError
    naming the file and field when a file is malformed."""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=features.pose_features(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    people = self.read_annotations(manual_dir)
    files = sorted({self.image_file(p.image) for split in people.values() for p in split})
    missing = [f for f in files if not os.path.isfile(os.path.join(manual_dir, f))]
    if missing and not self.allow_missing:
      raise MissingImagesError(
        f'{len(missing)} of {len(files)} files named by the {self.name} annotations are not '
        f'in {manual_dir}, e.g. {missing[:3]}. Download them as MANUAL_DOWNLOAD_INSTRUCTIONS '
        'says, or pass --allow_missing to build from the images that are there.'
      )
    missing = set(missing)
    generators = {}
    for split, split_people in people.items():
      # TFDS cannot write an empty split: leave such splits out, and say so in the report.
      if not split_people:
        self.report[split] = {'counts': {'no people in the annotations': 1}, 'examples': {}}
      elif all(self.image_file(p.image) in missing for p in split_people):
        self.report[split] = {
          'counts': {'missing image': len(split_people)},
          'examples': {'missing image': [p.image for p in split_people[:5]]},
        }
      else:
        generators[split] = self._generate_examples(manual_dir, split, split_people, missing)
    if not generators:
      raise MissingImagesError(
        f'none of the images named by the {self.name} annotations are in '
        f'{manual_dir}: nothing to build'
      )
    return generators

  def _generate_examples(
    self, manual_dir: str, split: str, people: list[Person], missing: set[str]
  ):
    counts, examples = collections.Counter(), collections.defaultdict(list)

    def skip(reason, name):
      counts[reason] += 1
      if len(examples[reason]) < _EXAMPLES_PER_REASON:
        examples[reason].append(name)

    by_image = collections.defaultdict(list)
    for person in people:
      by_image[person.image].append(person)
    for name, image_people in by_image.items():
      if self.image_file(name) in missing:
        for _ in image_people:
          skip('missing image', name)
        continue
      image = self.load_image(manual_dir, name)
      if image is None:
        for _ in image_people:
          skip('unreadable image', name)
        continue
      height, width = image.shape[:2]
      for person in image_people:
        label = f'{name}#{person.person_index}'
        person, mask, reasons = finite_labels(person, person.joints_mask.astype(np.float32))
        for reason in reasons:
          skip(reason, label)
        if person is None:
          continue
        xy = np.nan_to_num(person.joints_2d)  # non-finite joints are masked by now
        outside = (mask > 0) & (
          (xy[:, 0] < -0.5)
          | (xy[:, 0] > width - 0.5)
          | (xy[:, 1] < -0.5)
          | (xy[:, 1] > height - 0.5)
        )
        if outside.any():  # an annotation error: never train towards it
          skip('joints outside the image (masked)', label)
          mask[outside] = 0
        if not mask.any():
          skip('no annotated joints', label)
          continue
        yield label, self._example(image, person, mask)
        counts['written'] += 1
    counts.update({k: v for k, v in self.read_report.get(split, {}).items() if v})
    self.report[split] = {'counts': dict(counts), 'examples': dict(examples)}

  def _example(self, image: np.ndarray, person: Person, mask: np.ndarray) -> dict:
    crop, crop_to_image = features.person_crop(
      image, person.box_center, person.box_side, self.builder_config.crop_size
    )
    joints_2d = np.where(mask[:, None] > 0, person.joints_2d, 0).astype(np.float32)
    return {
      'image': features.encode_jpeg(crop),
      'image_name': person.image,
      'person_index': person.person_index,
      'crop_to_image': crop_to_image,
      'image_size': np.array(image.shape[1::-1], np.float32),
      'box_center': np.asarray(person.box_center, np.float32),
      'box_side': np.float32(person.box_side),
      'joints_2d': joints_2d,
      'joints_mask': mask,
      'joints_visible': (person.joints_visible * mask).astype(np.float32),
      'has_3d': person.joints_3d is not None,
      'joints_3d': _or_zeros(person.joints_3d, (joints.NUM_JOINTS, 3), mask),
      'eval_joints_3d': _or_zeros(person.eval_joints_3d, (len(joints.H36M17), 3)),
      'eval_mask': _or_zeros(person.eval_mask, (len(joints.H36M17),)),
      'eval_visible': _or_zeros(person.eval_visible, (len(joints.H36M17),)),
      'fork_joints_3d': _or_zeros(person.fork_joints_3d, (len(joints.H36M17), 3)),
      'intrinsics': _or_zeros(person.intrinsics, (4,)),
      'distortion': _or_zeros(person.distortion, (5,)),
      'torso_size': np.float32(torso_size(joints_2d, mask)),
      'head_size': np.float32(person.head_size),
      'subject': person.subject,
      'action': person.action,
      'camera': person.camera,
      'frame': np.int32(person.frame),
    }


def _or_zeros(value, shape, mask=None) -> np.ndarray:
  """A label as float32 of `shape`, zeros where absent or (per joint) where `mask` is 0."""
  if value is None:
    return np.zeros(shape, np.float32)
  value = np.asarray(value, np.float32).reshape(shape)
  return value if mask is None else np.where(mask[:, None] > 0, value, 0).astype(np.float32)

"""A short video of procedural people walking across a static scene, with exact labels: a demo
input for `hpe_jax.predict` (and its throughput) that may be published, since no dataset image
is in it.

  labels = clip.write_clip('demo.mp4', frames=90, boxes_path='demo_boxes.json')
  labels['joints_2d']  # (90, 2, 16, 2) MPII-16 pixels of both people in every frame

The people are those the quick-start models train on (body.py, render.py): each has sampled bone
lengths and an outfit, walks sideways at a constant speed and depth, its feet on the ground, and
moves its limbs smoothly from one sampled pose (a keyframe, about every second) to the next. A
fixed pinhole camera at eye height sees them over a static `render.draw_background`; every person
stays (mostly) inside the frame and is 50-70% of its height tall.

World frame (mm), as render.look_at takes it: y up, the ground at y = 0, the camera at x = z = 0
looking along +z; people walk along x. Labels are in the camera frame (x right, y down, z forward).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Iterator

import cv2
import numpy as np

from hpe_jax import errors
from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data.synthetic import body
from hpe_jax.data.synthetic import render

WALK_SPEEDS_MM_S = (500.0, 1200.0)
HEIGHT_FRACTIONS = (0.5, 0.7)  # a person's height / the frame's: farthest, nearest person
KEYFRAME_SECONDS = (0.8, 1.2)  # time from one sampled pose of a person to the next
BOX_MARGIN = 0.1  # a box is its joints' extent widened by this fraction of it on each side
# Nearest a person's pelvis comes to the frame's side, in person heights: arms and feet reach out.
_SIDE_MARGIN = 0.3
# How far a person turns from walking sideways towards the camera (degrees), and the sway of the
# whole body between keyframes (yaw, pitch, roll standard deviations, degrees): upright walkers.
_TURN_TOWARDS_CAMERA = (10.0, 60.0)
_SWAY = (5.0, 3.0, 2.0)
_FOURCC = 'mp4v'


class ClipError(errors.HpeError, ValueError):
  """A clip cannot be written as asked; the message names the path or argument and the fix."""


@dataclasses.dataclass(frozen=True)
class Frame:
  """One rendered frame and its labels.

  Attributes:
    image: (H, W, 3) uint8 RGB.
    joints_2d: (people, 16, 2) MPII-16 pixels.
    joints_3d: (people, 16, 3) MPII-16 camera frame, mm.
    boxes: (people, 4) x, y, w, h pixels: the joints' extent widened by BOX_MARGIN, clipped to the
      frame (zero width or height for a person entirely outside it).
  """

  image: np.ndarray
  joints_2d: np.ndarray
  joints_3d: np.ndarray
  boxes: np.ndarray


@dataclasses.dataclass(frozen=True)
class Walker:
  """One person's walk: body, outfit, path and pose keyframes.

  Attributes:
    lengths: bone lengths, mm (body.sample_lengths).
    scale: height / body.REST_HEIGHT.
    girth: body width factor (drawing only).
    outfit: part name -> RGB colour (render.sample_outfit).
    keyframes: per keyframe, joint angles in degrees (body.sample_angles).
    rotations: (keyframes, 3) yaw, pitch, roll in degrees (body.global_rotation).
    frames_per_keyframe: video frames from one keyframe to the next (> 0, fractional).
    start: (2,) world x, z of the pelvis in the first frame, mm.
    velocity: world x speed, mm per frame (signed: the walking direction).
  """

  lengths: dict[str, float]
  scale: float
  girth: float
  outfit: dict[str, np.ndarray]
  keyframes: list[dict[str, tuple[float, ...]]]
  rotations: np.ndarray
  frames_per_keyframe: float
  start: np.ndarray
  velocity: float

  def pose(self, index: int) -> body.Pose:
    """The body in frame `index`, world frame (mm), its lowest foot point on the ground."""
    position = index / self.frames_per_keyframe
    k = min(int(position), len(self.keyframes) - 2)
    # Cosine easing: each movement starts and ends at rest, so keyframes do not jerk.
    w = (1 - math.cos(math.pi * min(position - k, 1.0))) / 2
    a, b = self.keyframes[k], self.keyframes[k + 1]
    angles = {name: tuple((1 - w) * np.array(a[name]) + w * np.array(b[name])) for name in a}
    yaw, pitch, roll = (1 - w) * self.rotations[k] + w * self.rotations[k + 1]
    pose = body.forward_kinematics(self.lengths, angles, self.scale, self.girth)
    pose = pose.transformed(body.global_rotation(yaw, pitch, roll), 0)
    # The ankle joints sit 80 mm (at rest height) above the sole; toe tips about 40.
    ankles = pose.joints[[joints.H36M17.index('l_ankle'), joints.H36M17.index('r_ankle')], 1]
    lowest = min(ankles.min() - 80 * self.scale, pose.toes[:, 1].min() - 40 * self.scale)
    x, z = self.start
    return pose.transformed(np.eye(3), np.array([x + self.velocity * index, -lowest, z]))


@dataclasses.dataclass(frozen=True)
class WalkingScene:
  """A fixed camera over a static background, and the people walking in front of it.

  Attributes:
    background: (H, W, 3) uint8 RGB.
    intrinsics: (4,) fx, fy, cx, cy pixels.
    rotation: (3, 3) world-to-camera rotation.
    eye: (3,) camera position, world mm.
    light: (3,) unit light direction, camera frame (render.draw_person).
    walkers: one per person.
  """

  background: np.ndarray
  intrinsics: np.ndarray
  rotation: np.ndarray
  eye: np.ndarray
  light: np.ndarray
  walkers: list[Walker]

  def render(self, index: int) -> Frame:
    """Frame `index` (0-based): the people drawn farthest first, so nearer ones occlude."""
    height, width = self.background.shape[:2]
    image = self.background.copy()
    poses = [
      w.pose(index).transformed(self.rotation, -self.rotation @ self.eye) for w in self.walkers
    ]
    for i in sorted(range(len(poses)), key=lambda i: -poses[i].joints[:, 2].mean()):
      render.draw_person(image, poses[i], self.intrinsics, self.walkers[i].outfit, self.light)
    h36m = np.stack([p.joints for p in poses]) if poses else np.zeros((0, len(joints.H36M17), 3))
    joints_3d, _ = joints.MPII_FROM_H36M(h36m, np.ones(h36m.shape[:2]))
    joints_2d = geometry.project(joints_3d, self.intrinsics).astype(np.float32)
    boxes = np.array([person_box(uv, width, height) for uv in joints_2d], np.float32)
    return Frame(image, joints_2d, joints_3d, boxes.reshape(-1, 4))


def person_box(joints_2d: np.ndarray, width: int, height: int) -> tuple[float, ...]:
  """x, y, w, h: the extent of joints_2d (J, 2) pixels widened by BOX_MARGIN of its size on each
  side, clipped to a width x height frame."""
  low, high = joints_2d.min(0), joints_2d.max(0)
  margin = BOX_MARGIN * (high - low)
  low = np.clip(low - margin, 0, (width, height))
  high = np.clip(high + margin, 0, (width, height))
  return (*low.tolist(), *(high - low).tolist())


def _check_arguments(frames, width, height, fps, people) -> None:
  """Raises ClipError for sizes the renderer or the mp4v encoder cannot take."""
  for name, value, low in (('frames', frames, 1), ('people', people, 0)):
    if not isinstance(value, (int, np.integer)) or value < low:
      raise ClipError(f'{name}={value!r}: expected an integer >= {low}')
  for name, value in (('width', width), ('height', height)):
    # MPEG-4 part 2 codes 2x2 chroma blocks: the encoder would silently crop an odd size.
    if not isinstance(value, (int, np.integer)) or value < 2 or value % 2:
      raise ClipError(f'{name}={value!r}: expected an even number of pixels >= 2')
  if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
    raise ClipError(f'fps={fps!r}: expected a positive number of frames per second')


def sample_scene(
  *,
  frames: int = 90,
  width: int = 640,
  height: int = 360,
  fps: float = 30.0,
  people: int = 2,
  seed: int = 0,
) -> WalkingScene:
  """The camera, background and walks of a clip (module doc); deterministic for a seed.

  The background, camera and light come from one random stream and person i from its own, so
  `people` changes neither the background nor the other people's bodies and outfits.

  Raises:
    ClipError: a size or count the clip cannot have.
  """
  _check_arguments(frames, width, height, fps, people)
  rng = np.random.default_rng([seed, 0])
  # A square background drawn at the longer side and cropped: resizing would stretch its shapes.
  side = max(width, height)
  top, left = (side - height) // 2, (side - width) // 2
  background = render.draw_background(rng, side)[top : top + height, left : left + width].copy()
  focal = rng.uniform(1.0, 1.4) * side
  intrinsics = np.array([focal, focal, width / 2 - 0.5, height / 2 - 0.5])
  # At hip height, looking a little down: people at any depth are centred in the frame's height
  # (a higher camera would put near people's feet below it).
  middle_depth = focal * body.REST_HEIGHT / (np.mean(HEIGHT_FRACTIONS) * height)
  eye = np.array([0.0, rng.uniform(850, 1050), 0.0])
  rotation = render.look_at(eye, (0.0, rng.uniform(800, 900), middle_depth))
  light = np.array([rng.uniform(-1, 1), rng.uniform(-1, -0.2), -1.0])  # camera side, above
  # Depths by height on screen, evenly spread so that the people stand at different depths.
  fractions = rng.permutation(np.linspace(*HEIGHT_FRACTIONS, people) if people > 1 else [0.6])
  # Alternate directions: people cross once rather than one hiding behind another all along.
  first_direction = rng.choice([-1.0, 1.0])
  duration_frames = max(frames - 1, 1)
  walkers = []
  for i, fraction in enumerate(fractions[:people]):
    person_rng = np.random.default_rng([seed, 1 + i])
    lengths, scale = body.sample_lengths(person_rng)
    person_height = scale * body.REST_HEIGHT
    depth = focal * person_height / (fraction * height)
    # The stretch of x the pelvis may take with the person inside the frame; a long clip slows
    # walkers down rather than letting them walk out.
    half_room = max(width / 2 * depth / focal - _SIDE_MARGIN * person_height, 0.0)
    mm_per_frame = person_rng.uniform(*WALK_SPEEDS_MM_S) / fps
    distance = min(mm_per_frame * duration_frames, 2 * half_room)
    direction = first_direction * (-1) ** i
    start_x = direction * person_rng.uniform(-half_room, half_room - distance)
    frames_per_keyframe = person_rng.uniform(*KEYFRAME_SECONDS) * fps
    count = math.ceil(duration_frames / frames_per_keyframe) + 1
    # Yaw 90 faces +x, 180 the camera: walk sideways, turned partly towards the camera.
    yaw = direction * (90 + person_rng.uniform(*_TURN_TOWARDS_CAMERA))
    rotations = person_rng.normal((yaw, 0.0, 0.0), _SWAY, (count, 3))
    walkers.append(
      Walker(
        lengths=lengths,
        scale=scale,
        girth=person_rng.uniform(0.85, 1.25),
        outfit=render.sample_outfit(person_rng),
        keyframes=[body.sample_angles(person_rng) for _ in range(count)],
        rotations=rotations,
        frames_per_keyframe=frames_per_keyframe,
        start=np.array([start_x, depth]),
        velocity=direction * distance / duration_frames,
      )
    )
  return WalkingScene(background, intrinsics, rotation, eye, light / np.linalg.norm(light), walkers)


def render_frames(scene: WalkingScene, frames: int) -> Iterator[Frame]:
  """Frames 0 .. frames - 1 of `scene`, rendered one at a time."""
  for index in range(frames):
    yield scene.render(index)


def _directory_problem(path: str) -> str | None:
  """Why the directory of `path` cannot hold it, or None."""
  directory = os.path.dirname(path) or '.'
  if os.path.isdir(directory):
    return None
  if os.path.exists(directory):
    return f'{directory} is not a directory'
  return f'there is no directory {directory} (create it first)'


def _open_writer(path: str, fps: float, width: int, height: int) -> cv2.VideoWriter:
  """An mp4v cv2.VideoWriter on path; raises ClipError where it cannot be written."""
  if not path.lower().endswith('.mp4'):
    raise ClipError(f'cannot write the video {path}: its name must end in .mp4 (an MPEG-4 file)')
  if problem := _directory_problem(path):
    raise ClipError(f'cannot write the video {path}: {problem}')
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*_FOURCC), fps, (width, height))
  if not writer.isOpened():
    raise ClipError(
      f'cannot write the video {path}: OpenCV could not open it for writing ({_FOURCC}); is '
      'its directory writable?'
    )
  return writer


def boxes_json(boxes: np.ndarray) -> list[dict]:
  """The boxes (frames, people, 4) x, y, w, h as a COCO detection-results list that
  `hpe_jax.predict --boxes` reads for a video: one entry per person per frame, pixels rounded to
  0.1; a person entirely outside a frame (no box area) has no entry there."""
  entries = []
  for frame, frame_boxes in enumerate(boxes):
    for box in frame_boxes:
      bbox = [round(float(v), 1) for v in box]
      if bbox[2] > 0 and bbox[3] > 0:
        entries.append({'frame': frame, 'bbox': bbox, 'score': 1.0, 'category_id': 1})
  return entries


def write_clip(
  path: str | os.PathLike,
  *,
  frames: int = 90,
  width: int = 640,
  height: int = 360,
  fps: float = 30.0,
  people: int = 2,
  seed: int = 0,
  boxes_path: str | os.PathLike | None = None,
) -> dict:
  """Renders a clip of `people` walking (module doc) into the MPEG-4 video `path` (mp4v).

  Deterministic for a seed. With `boxes_path`, also writes the people's boxes there as JSON
  (`boxes_json`).

  Returns:
    {'joints_2d': (frames, people, 16, 2) MPII-16 pixels, 'joints_3d': (frames, people, 16, 3)
    camera frame mm, 'boxes': (frames, people, 4) x, y, w, h pixels (`person_box`),
    'intrinsics': (4,) fx, fy, cx, cy pixels, 'fps': float, 'size': (width, height)}.

  Raises:
    ClipError: a bad size or count, a path not ending in .mp4, or a file that cannot be written.
  """
  path = os.fspath(path)
  scene = sample_scene(frames=frames, width=width, height=height, fps=fps, people=people, seed=seed)
  if boxes_path is not None:
    boxes_path = os.fspath(boxes_path)
    # Checked before rendering: a clip is not rendered for nothing.
    if problem := _directory_problem(boxes_path):
      raise ClipError(f'cannot write the boxes {boxes_path}: {problem}')
  writer = _open_writer(path, fps, width, height)
  labels = []
  try:
    for frame in render_frames(scene, frames):
      writer.write(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))  # OpenCV writes BGR
      labels.append(frame)
  finally:
    writer.release()
  if not os.path.isfile(path) or not os.path.getsize(path):
    raise ClipError(f'cannot write the video {path}: nothing was written (is the disk full?)')
  result = {
    'joints_2d': np.stack([f.joints_2d for f in labels]),
    'joints_3d': np.stack([f.joints_3d for f in labels]),
    'boxes': np.stack([f.boxes for f in labels]),
    'intrinsics': scene.intrinsics,
    'fps': float(fps),
    'size': (width, height),
  }
  if boxes_path is not None:
    try:
      with open(boxes_path, 'w') as f:
        json.dump(boxes_json(result['boxes']), f)
    except OSError as e:
      raise ClipError(f'cannot write the boxes {boxes_path}: {e.strerror}') from e
  return result

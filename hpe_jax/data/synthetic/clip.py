"""A short video of procedural people walking across a static scene, or squatting in place, with
exact labels: a demo input for `hpe-predict` (and its throughput) that may be published,
since no dataset image is in it.

  labels = clip.write_clip('demo.mp4', frames=90, boxes_path='demo_boxes.json')
  labels['joints_2d']  # (90, 2, 16, 2) MPII-16 pixels of both people in every frame
  clip.write_clip('squat.mp4', frames=300, people=1, motion='squat', reps=5)  # 5 squats to count

The people are those the quick-start models train on (body.py, render.py): each has sampled bone
lengths and an outfit and its feet on the ground. A walker walks sideways at a constant speed and
depth and moves its limbs smoothly from one sampled pose (a keyframe, about every second) to the
next. A squatter stands in place, turned 30-45 degrees from facing the camera so that its knees
are seen bending, and does `reps` squats evenly spread over the clip (`squat_angles`), its ankles
fixed. A fixed pinhole camera at eye height sees them over a static `render.draw_background`;
every person stays (mostly) inside the frame and is 50-70% of its height tall (standing).

World frame (mm), as render.look_at takes it: y up, the ground at y = 0, the camera at x = z = 0
looking along +z; people walk along x. Labels are in the camera frame (x right, y down, z forward).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Iterator

import numpy as np

from hpe_jax import errors
from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data.synthetic import body
from hpe_jax.data.synthetic import render
from hpe_jax.inference import video_writer

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
MOTIONS = ('walk', 'squat')
# The shortest squat a clip may hold: below a second it is a twitch, below 8 frames its bottom
# may fall between frames.
MIN_REP_SECONDS = 1.0
MIN_REP_FRAMES = 8
# A squatter's turn away from facing the camera (degrees): facing it, knees bend out of sight.
_SQUAT_TURN = (30.0, 45.0)
_ANKLES = [joints.H36M17.index('l_ankle'), joints.H36M17.index('r_ankle')]


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


def _blend(a: dict, b: dict, w: float) -> dict[str, tuple[float, ...]]:
  """The joint angles (degrees) a fraction w of the way from angles a to angles b."""
  return {name: tuple((1 - w) * np.array(a[name]) + w * np.array(b[name])) for name in a}


@dataclasses.dataclass(frozen=True)
class Person:
  """One person's body and outfit; a subclass moves it (`pose`).

  Attributes:
    lengths: bone lengths, mm (body.sample_lengths).
    scale: height / body.REST_HEIGHT.
    girth: body width factor (drawing only).
    outfit: part name -> RGB colour (render.sample_outfit).
  """

  lengths: dict[str, float]
  scale: float
  girth: float
  outfit: dict[str, np.ndarray]

  def pose(self, index: int) -> body.Pose:
    """The body in frame `index`, world frame (mm), its lowest foot point on the ground."""
    raise NotImplementedError

  def _turned(self, angles: dict, yaw: float, pitch: float = 0.0, roll: float = 0.0) -> body.Pose:
    """The body in these joint angles, turned to the world's axes; its pelvis at the origin."""
    pose = body.forward_kinematics(self.lengths, angles, self.scale, self.girth)
    return pose.transformed(body.global_rotation(yaw, pitch, roll), 0)

  def _lift(self, pose: body.Pose) -> float:
    """How far up `pose` (world axes) moves to put its lowest foot point on the ground."""
    # The ankle joints sit 80 mm (at rest height) above the sole; toe tips about 40.
    ankles = pose.joints[_ANKLES, 1]
    return -min(ankles.min() - 80 * self.scale, pose.toes[:, 1].min() - 40 * self.scale)


@dataclasses.dataclass(frozen=True)
class Walker(Person):
  """One person's walk: path and pose keyframes.

  Attributes:
    keyframes: per keyframe, joint angles in degrees (body.sample_angles).
    rotations: (keyframes, 3) yaw, pitch, roll in degrees (body.global_rotation).
    frames_per_keyframe: video frames from one keyframe to the next (> 0, fractional).
    start: (2,) world x, z of the pelvis in the first frame, mm.
    velocity: world x speed, mm per frame (signed: the walking direction).
  """

  keyframes: list[dict[str, tuple[float, ...]]]
  rotations: np.ndarray
  frames_per_keyframe: float
  start: np.ndarray
  velocity: float

  def pose(self, index: int) -> body.Pose:
    position = index / self.frames_per_keyframe
    k = min(int(position), len(self.keyframes) - 2)
    # Cosine easing: each movement starts and ends at rest, so keyframes do not jerk.
    w = (1 - math.cos(math.pi * min(position - k, 1.0))) / 2
    yaw, pitch, roll = (1 - w) * self.rotations[k] + w * self.rotations[k + 1]
    pose = self._turned(_blend(self.keyframes[k], self.keyframes[k + 1], w), yaw, pitch, roll)
    x, z = self.start
    return pose.transformed(np.eye(3), np.array([x + self.velocity * index, self._lift(pose), z]))


@dataclasses.dataclass(frozen=True)
class Squatter(Person):
  """One person's squats in place: from `standing` down to `bottom` and up, `reps` times.

  Attributes:
    standing: joint angles in degrees at the top (`squat_angles`).
    bottom: joint angles in degrees at the bottom.
    yaw: degrees (body.global_rotation).
    feet: (2,) world x, z of the ankles' midpoint, mm: it stays put.
    reps: squats in the clip.
    frames_per_rep: video frames from one squat's start to the next one's (fractional).
    pause: the fraction of each squat spent standing, half before and half after it.
  """

  standing: dict[str, tuple[float, ...]]
  bottom: dict[str, tuple[float, ...]]
  yaw: float
  feet: np.ndarray
  reps: int
  frames_per_rep: float
  pause: float

  def depth(self, index: int) -> float:
    """How far down the person is in frame `index`: 0 standing, 1 at the bottom."""
    position = index / self.frames_per_rep
    # The last frame is the end of the last squat, not the start of one more.
    phase = position - min(int(position), self.reps - 1)
    moving = np.clip((phase - self.pause / 2) / (1 - self.pause), 0.0, 1.0)
    # A raised cosine: down and up again with no jerk at the top.
    return (1 - math.cos(2 * math.pi * moving)) / 2

  def pose(self, index: int) -> body.Pose:
    pose = self._turned(_blend(self.standing, self.bottom, self.depth(index)), self.yaw)
    x, z = self.feet - pose.joints[_ANKLES][:, [0, 2]].mean(axis=0)
    return pose.transformed(np.eye(3), np.array([x, self._lift(pose), z]))


@dataclasses.dataclass(frozen=True)
class Scene:
  """A fixed camera over a static background, and the people moving in front of it.

  Attributes:
    background: (H, W, 3) uint8 RGB.
    intrinsics: (4,) fx, fy, cx, cy pixels.
    rotation: (3, 3) world-to-camera rotation.
    eye: (3,) camera position, world mm.
    light: (3,) unit light direction, camera frame (render.draw_person).
    people: one Walker or Squatter per person.
  """

  background: np.ndarray
  intrinsics: np.ndarray
  rotation: np.ndarray
  eye: np.ndarray
  light: np.ndarray
  people: list[Person]

  def render(self, index: int) -> Frame:
    """Frame `index` (0-based): the people drawn farthest first, so nearer ones occlude."""
    height, width = self.background.shape[:2]
    image = self.background.copy()
    poses = [
      p.pose(index).transformed(self.rotation, -self.rotation @ self.eye) for p in self.people
    ]
    for i in sorted(range(len(poses)), key=lambda i: -poses[i].joints[:, 2].mean()):
      render.draw_person(image, poses[i], self.intrinsics, self.people[i].outfit, self.light)
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
  """Raises ClipError for sizes the renderer or the H.264 encoder cannot take."""
  for name, value, low in (('frames', frames, 1), ('people', people, 0)):
    if not isinstance(value, (int, np.integer)) or value < low:
      raise ClipError(f'{name}={value!r}: expected an integer >= {low}')
  for name, value in (('width', width), ('height', height)):
    # yuv420p stores colour per 2x2 pixels: the writer would pad an odd size to the next even one.
    if not isinstance(value, (int, np.integer)) or value < 2 or value % 2:
      raise ClipError(f'{name}={value!r}: expected an even number of pixels >= 2')
  if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
    raise ClipError(f'fps={fps!r}: expected a positive number of frames per second')


def _check_motion(motion, reps, frames, fps) -> None:
  """Raises ClipError for a motion or a number of squats that frames at fps cannot hold."""
  if motion not in MOTIONS:
    raise ClipError(f'motion={motion!r}: expected one of {", ".join(MOTIONS)}')
  if motion != 'squat':
    if reps is not None:
      raise ClipError(f"reps={reps!r}: only squats are counted; ask for motion='squat' or no reps")
    return
  if not isinstance(reps, (int, np.integer)) or reps < 1:
    raise ClipError(f'reps={reps!r}: a squat clip needs the number of squats, an integer >= 1')
  needed = math.ceil(reps * max(fps * MIN_REP_SECONDS, MIN_REP_FRAMES))
  if frames < needed:
    raise ClipError(
      f'frames={frames}: too few for {reps} squats at {fps:g} fps (each takes at least '
      f'{MIN_REP_SECONDS:g} s and {MIN_REP_FRAMES} frames); use frames >= {needed} or fewer reps'
    )


def squat_angles(rng: np.random.Generator) -> tuple[dict, dict]:
  """A person's joint angles (degrees) standing and at the bottom of a squat, within body.LIMITS.

  Standing, hips and knees bend 0-5 degrees; at the bottom the hips flex 80-95 and the knees
  10-15 more (90-110), the lower spine leans forwards 15-35 and the neck raises the head by half
  that. The arms are raised forwards 60-90 degrees for balance at the bottom (70% of people) or
  hang. The legs bend in the body's sagittal plane only and each ankle by knee - hip flexion,
  which keeps the feet flat and in place while the pelvis goes down and back.
  """
  u = rng.uniform
  upper_spine = u(-5, 5)

  def angles(lean, neck, hip, knee, shoulder, elbow):
    result = {
      'lower_spine': (lean, 0.0, 0.0),
      'upper_spine': (upper_spine, 0.0, 0.0),
      'neck': (neck, 0.0, 0.0),
    }
    for side in 'lr':  # mirror images: the same angles on either side
      result |= {
        f'{side}_hip': (hip, 0.0, 0.0),
        f'{side}_knee': (knee,),
        f'{side}_ankle': (knee - hip,),
        f'{side}_shoulder': shoulder,
        f'{side}_elbow': (elbow,),
      }
    return result

  lean, hip = u(15, 35), u(80, 95)
  hanging, elbow = (u(0, 10), u(5, 15), 0.0), u(5, 20)
  if rng.random() < 0.7:
    low_shoulder, low_elbow = (u(60, 90), u(0, 15), 0.0), u(0, 20)
  else:  # still hanging down from the leaning chest
    low_shoulder, low_elbow = (hanging[0] + lean + upper_spine, *hanging[1:]), elbow
  standing = angles(u(0, 5), u(0, 10), u(0, 5), u(0, 5), hanging, elbow)
  bottom = angles(lean, -lean / 2, hip, hip + u(10, 15), low_shoulder, low_elbow)
  return standing, bottom


def _walker(rng, person: dict, depth, half_room, direction, frames, fps) -> Walker:
  """A walk (module doc) of `person` (its Person fields but girth and outfit) at `depth` mm, its
  pelvis within half_room mm of x = 0."""
  duration_frames = max(frames - 1, 1)
  mm_per_frame = rng.uniform(*WALK_SPEEDS_MM_S) / fps
  # A long clip slows walkers down rather than letting them walk out.
  distance = min(mm_per_frame * duration_frames, 2 * half_room)
  start_x = direction * rng.uniform(-half_room, half_room - distance)
  frames_per_keyframe = rng.uniform(*KEYFRAME_SECONDS) * fps
  count = math.ceil(duration_frames / frames_per_keyframe) + 1
  # Yaw 90 faces +x, 180 the camera: walk sideways, turned partly towards the camera.
  yaw = direction * (90 + rng.uniform(*_TURN_TOWARDS_CAMERA))
  rotations = rng.normal((yaw, 0.0, 0.0), _SWAY, (count, 3))
  return Walker(
    **person,
    girth=rng.uniform(0.85, 1.25),
    outfit=render.sample_outfit(rng),
    keyframes=[body.sample_angles(rng) for _ in range(count)],
    rotations=rotations,
    frames_per_keyframe=frames_per_keyframe,
    start=np.array([start_x, depth]),
    velocity=direction * distance / duration_frames,
  )


def _squatter(rng, person: dict, depth, x, frames, reps) -> Squatter:
  """`reps` squats (module doc) of `person` (its Person fields but girth and outfit), its feet at
  world x, depth mm."""
  standing, bottom = squat_angles(rng)
  # Yaw atan2(-x, -z) faces the camera from (x, z); turning the front towards the frame's middle
  # keeps raised arms inside it.
  yaw = math.degrees(math.atan2(-x, -depth)) + math.copysign(rng.uniform(*_SQUAT_TURN), x)
  return Squatter(
    **person,
    girth=rng.uniform(0.85, 1.25),
    outfit=render.sample_outfit(rng),
    standing=standing,
    bottom=bottom,
    yaw=yaw,
    feet=np.array([x, depth]),
    reps=reps,
    frames_per_rep=(frames - 1) / reps,
    pause=rng.uniform(0.1, 0.25),
  )


def sample_scene(
  *,
  frames: int = 90,
  width: int = 640,
  height: int = 360,
  fps: float = 30.0,
  people: int = 2,
  seed: int = 0,
  motion: str = 'walk',
  reps: int | None = None,
) -> Scene:
  """The camera, background and people of a clip (module doc); deterministic for a seed.

  The background, camera and light come from one random stream and person i from its own, so
  `people` changes neither the background nor the other people's bodies and outfits.

  Raises:
    ClipError: a size, count or motion the clip cannot have (`write_clip`).
  """
  _check_arguments(frames, width, height, fps, people)
  _check_motion(motion, reps, frames, fps)
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
  # Squatters stand side by side, spread over the frame's width.
  slots = np.linspace(-1, 1, people) if people > 1 else [0.0]
  persons = []
  for i, fraction in enumerate(fractions[:people]):
    person_rng = np.random.default_rng([seed, 1 + i])
    lengths, scale = body.sample_lengths(person_rng)
    person_height = scale * body.REST_HEIGHT
    depth = focal * person_height / (fraction * height)
    # The stretch of x the pelvis (a squatter's feet) may take with the person inside the frame.
    half_room = max(width / 2 * depth / focal - _SIDE_MARGIN * person_height, 0.0)
    person = {'lengths': lengths, 'scale': scale}
    if motion == 'walk':
      direction = first_direction * (-1) ** i
      persons.append(_walker(person_rng, person, depth, half_room, direction, frames, fps))
    else:
      x = half_room * np.clip(slots[i] + person_rng.uniform(-0.2, 0.2), -1, 1)
      persons.append(_squatter(person_rng, person, depth, x, frames, reps))
  return Scene(background, intrinsics, rotation, eye, light / np.linalg.norm(light), persons)


def render_frames(scene: Scene, frames: int) -> Iterator[Frame]:
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


def _open_writer(path: str, fps: float, width: int, height: int) -> video_writer.H264Writer:
  """An H.264 MP4 writer on path; raises ClipError where it cannot be written."""
  if not path.lower().endswith('.mp4'):
    raise ClipError(f'cannot write the video {path}: its name must end in .mp4 (an MP4 file)')
  if problem := _directory_problem(path):
    raise ClipError(f'cannot write the video {path}: {problem}')
  try:
    return video_writer.H264Writer(path, fps, width, height)
  except video_writer.VideoWriteError as e:
    raise ClipError(str(e)) from None


def boxes_json(boxes: np.ndarray) -> list[dict]:
  """The boxes (frames, people, 4) x, y, w, h as a COCO detection-results list that
  `hpe-predict --boxes` reads for a video: one entry per person per frame, pixels rounded to
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
  motion: str = 'walk',
  reps: int | None = None,
  boxes_path: str | os.PathLike | None = None,
) -> dict:
  """Renders a clip of `people` walking or squatting (module doc) into the MP4 video `path`
  (H.264, yuv420p; `video_writer`).

  Deterministic for a seed. `motion` is 'walk' or 'squat'; a squat clip needs `reps`, the number
  of squats each person does, and frames for at least MIN_REP_SECONDS and MIN_REP_FRAMES per
  squat. With `boxes_path`, also writes the people's boxes there as JSON (`boxes_json`).

  Returns:
    {'joints_2d': (frames, people, 16, 2) MPII-16 pixels, 'joints_3d': (frames, people, 16, 3)
    camera frame mm, 'boxes': (frames, people, 4) x, y, w, h pixels (`person_box`),
    'intrinsics': (4,) fx, fy, cx, cy pixels, 'fps': float, 'size': (width, height)}.

  Raises:
    ClipError: a bad size, count, motion or number of squats, a path not ending in .mp4, or a
      file that cannot be written.
  """
  path = os.fspath(path)
  scene = sample_scene(
    frames=frames,
    width=width,
    height=height,
    fps=fps,
    people=people,
    seed=seed,
    motion=motion,
    reps=reps,
  )
  if boxes_path is not None:
    boxes_path = os.fspath(boxes_path)
    # Checked before rendering: a clip is not rendered for nothing.
    if problem := _directory_problem(boxes_path):
      raise ClipError(f'cannot write the boxes {boxes_path}: {problem}')
  writer = _open_writer(path, fps, width, height)
  labels = []
  try:
    with writer:
      for frame in render_frames(scene, frames):
        writer.write(frame.image)
        labels.append(frame)
  except video_writer.VideoWriteError as e:
    raise ClipError(str(e)) from None
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


def write_truth(labels: dict, jsonl_path: str | os.PathLike, video: str | None = None) -> None:
  """Writes a clip's true joints as the frames file hpe-predict writes for a video (and its
  header beside it, <stem>.json): what `hpe-analyze` reads, so that an analysis of the truth can
  be set against one of the predictions. Every joint scores 1; joints_3d are relative to the
  pelvis, in mm, as predicted; track p is person p.

  Raises:
    ClipError: a file that cannot be written.
  """
  jsonl_path = os.fspath(jsonl_path)
  root = labels['joints_3d'][:, :, joints.PELVIS : joints.PELVIS + 1]
  relative = np.round(labels['joints_3d'] - root, 2)
  joints_2d = np.round(labels['joints_2d'], 2)
  width, height = labels['size']
  header = {
    'video': video,
    'fps': labels['fps'],
    'frames_file': os.path.basename(jsonl_path),
    'overlay_file': None,
    'image_size': {'width': width, 'height': height},
    'run': {'truth': "the synthetic clip's labels (hpe_jax.data.synthetic.clip)", 'depth': True},
    'joint_names': list(joints.MPII16),
    'frames': len(relative),
  }
  scores = [1.0] * joints.NUM_JOINTS
  try:
    with open(jsonl_path, 'w') as f:
      for frame, (frame_2d, frame_3d, boxes) in enumerate(
        zip(joints_2d, relative, labels['boxes'])
      ):
        people = [
          {
            'box': box.tolist(),
            'joints_2d': j2d.tolist(),
            'scores': scores,
            'joints_3d': j3d.tolist(),
            'track': person,
          }
          for person, (j2d, j3d, box) in enumerate(zip(frame_2d, frame_3d, boxes))
        ]
        line = {'frame': frame, 'time_s': round(frame / labels['fps'], 4), 'people': people}
        f.write(json.dumps(line) + '\n')
    with open(os.path.splitext(jsonl_path)[0] + '.json', 'w') as f:
      json.dump(header, f, indent=2)
  except OSError as e:
    raise ClipError(f'cannot write the true joints {jsonl_path}: {e.strerror}') from None

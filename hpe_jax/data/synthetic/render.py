"""Drawing a posed body into a random scene: camera, background, shaded body parts, visibility.

Camera frame as in OpenCV: x right, y down, z forward, mm. Every body part is a union of
ellipsoids ("blobs"): a limb is a tapered capsule (one sphere per end), the torso and head are
ellipsoids in their segment frames. A part is drawn as the convex hull of its projected blob
surfaces, in layers that shrink towards a light direction (cheap cylinder shading), and parts
are painted back to front by depth (painter's algorithm).

Left limbs wear warm colours (red to yellow), right limbs cool ones (cyan to blue), with
per-person and per-segment variation, so that left and right can be told apart in the image.
"""

from __future__ import annotations

import colorsys
import dataclasses

import cv2
import numpy as np

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data.synthetic import body

LEFT_HUES = (-25.0, 45.0)  # degrees: red, orange, yellow
RIGHT_HUES = (180.0, 250.0)  # cyan to blue
# Shading layers, outermost first: blob size and brightness.
_SIZES = np.array([1.0, 0.82, 0.6, 0.32])
_BRIGHTNESS = np.array([0.55, 0.78, 0.95, 1.15])
_SUBPIXEL = 4  # cv2 drawing with 2^4 sub-pixel precision


def _fibonacci_sphere(n: int) -> np.ndarray:
  """(n, 3) nearly uniform unit vectors."""
  k = np.arange(n) + 0.5
  z = 1 - 2 * k / n
  phi = np.pi * (1 + 5**0.5) * k
  r = np.sqrt(1 - z**2)
  return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


_SPHERE = _fibonacci_sphere(48)


@dataclasses.dataclass(frozen=True)
class Scene:
  """One rendered person.

  Attributes:
    image: (H, W, 3) uint8 RGB.
    pose: the body in camera coordinates (mm).
    intrinsics: (4,) fx, fy, cx, cy.
    visible: (17,) H36M joints not hidden by a nearer body part (see `joint_visibility`).
    part_ids: (H, W) uint8, 1 + index into PARTS of the part drawn on top, 0 for background.
  """

  image: np.ndarray
  pose: body.Pose
  intrinsics: np.ndarray
  visible: np.ndarray
  part_ids: np.ndarray


# Body parts, and the H36M joints that lie inside each (a joint is never hidden by its own parts).
PARTS = {
  'torso': ('pelvis', 'r_hip', 'l_hip', 'spine', 'thorax', 'l_shoulder', 'r_shoulder'),
  'neck': ('thorax', 'nose'),
  'head': ('nose', 'head'),
  'hair': ('head',),
  **{
    f'{s}_{part}': tuple(f'{s}_{j}' for j in js)
    for s in 'lr'
    for part, js in (
      ('upper_arm', ('shoulder', 'elbow')),
      ('forearm', ('elbow', 'wrist')),
      ('hand', ('wrist',)),
      ('thigh', ('hip', 'knee')),
      ('shin', ('knee', 'ankle')),
      ('foot', ('ankle',)),
    )
  },
}


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
  """(3, 3) world-to-camera rotation of a camera at `eye` looking at `target` (world y up)."""
  forward = np.subtract(target, eye) / np.linalg.norm(np.subtract(target, eye))
  right = np.cross(forward, up)
  right /= np.linalg.norm(right)
  return np.stack([right, np.cross(forward, right), forward])  # rows: x right, y down, z forward


def _hsv(hue: float, sat: float, val: float) -> np.ndarray:
  return 255 * np.array(colorsys.hsv_to_rgb((hue / 360) % 1, sat, val))


def sample_outfit(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Part name -> RGB colour (0..255): left limbs warm, right limbs cool, the rest neutral."""
  u = rng.uniform
  skin = np.array([234, 192, 160]) + u() * np.array([-144, -136, -122])  # light to dark
  colours = {
    'head': skin,
    'neck': skin,
    'hair': _hsv(u(15, 40), u(0.3, 0.8), u(0.08, 0.55)),
    'torso': _hsv(u(0, 360), u(0, 0.25), u(0.25, 0.95)),
  }
  shoes = _hsv(u(0, 360), u(0, 0.4), u(0.1, 0.5))
  for side, hues in (('l', LEFT_HUES), ('r', RIGHT_HUES)):
    base = u(*hues)
    for part in ('upper_arm', 'forearm', 'thigh', 'shin'):
      colours[f'{side}_{part}'] = _hsv(
        np.clip(base + rng.normal(0, 8), *hues), u(0.55, 1), u(0.5, 1)
      )
    colours[f'{side}_hand'] = 0.8 * colours[f'{side}_forearm']  # gloves
    colours[f'{side}_foot'] = shoes
  return colours


def _blobs(pose: body.Pose) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
  """Part name -> blobs (centre (3,), frame (3, 3), semi-axes (3,)), sizes in mm."""
  j = dict(zip(joints.H36M17, pose.joints))
  f, s, g = pose.frames, pose.scale, pose.scale * pose.girth
  eye = np.eye(3)
  capsule = lambda a, b, ra, rb: [(a, eye, np.full(3, ra * g)), (b, eye, np.full(3, rb * g))]
  in_head = lambda offset: j['thorax'] + f['head'] @ (np.array(offset) * s)
  parts = {
    'torso': [
      (
        f['pelvis'] @ np.array([0, 40, -10]) * s + j['pelvis'],
        f['pelvis'],
        np.array([165, 110, 110]) * g,
      ),
      ((j['spine'] + j['thorax']) / 2, f['chest'], np.array([170, 170, 110]) * g),
      *capsule(j['l_shoulder'], j['r_shoulder'], 60, 60),
    ],
    'neck': capsule(j['thorax'], in_head((0, 100, 10)), 52, 48),
    'head': [(in_head((0, 165, 25)), f['head'], np.array([80, 100, 95]) * s)],
    'hair': [(in_head((0, 180, -10)), f['head'], np.array([84, 95, 92]) * s)],
  }
  for side, toe in zip('lr', pose.toes):
    ankle, wrist, elbow = j[f'{side}_ankle'], j[f'{side}_wrist'], j[f'{side}_elbow']
    parts.update(
      {
        f'{side}_upper_arm': capsule(j[f'{side}_shoulder'], elbow, 52, 42),
        f'{side}_forearm': capsule(elbow, wrist, 40, 32),
        f'{side}_hand': [(wrist + 0.25 * (wrist - elbow), eye, np.full(3, 45 * g))],
        f'{side}_thigh': capsule(j[f'{side}_hip'], j[f'{side}_knee'], 85, 62),
        f'{side}_shin': capsule(j[f'{side}_knee'], ankle, 58, 44),
        f'{side}_foot': capsule(ankle, toe, 42, 38),
      }
    )
  return parts


def _outlines(blobs, light: np.ndarray, intrinsics) -> list[np.ndarray]:
  """The shading layers of a part: per size in _SIZES, the (K, 1, 2) int32 convex hull (sub-pixel
  units) of its blobs shrunk to that size and moved towards the light by what was shrunk away."""
  n = len(_SPHERE)
  surface = np.concatenate([(axes * _SPHERE) @ frame.T for _, frame, axes in blobs])
  centre = np.repeat([c for c, _, _ in blobs], n, axis=0)
  lit = np.repeat([0.5 * axes.mean() * light for _, _, axes in blobs], n, axis=0)
  size = _SIZES[:, None, None]
  points = centre + size * surface + (1 - size) * lit
  uv = np.round(geometry.project(points, intrinsics) * 2**_SUBPIXEL).astype(np.int32)
  return [cv2.convexHull(layer) for layer in uv]


def draw_person(image: np.ndarray, pose: body.Pose, intrinsics, outfit, light) -> np.ndarray:
  """Paints the body (camera frame) onto image in place, back to front.

  Returns:
    (H, W) uint8 part ids: 1 + index into PARTS of the part on top, 0 for background.
  """
  blobs = _blobs(pose)
  order = sorted(PARTS, key=lambda name: -np.mean([c[2] for c, _, _ in blobs[name]]))
  part_ids = np.zeros(image.shape[:2], np.uint8)
  for name in order:
    hulls = _outlines(blobs[name], light, intrinsics)
    cv2.fillConvexPoly(part_ids, hulls[0], list(PARTS).index(name) + 1, cv2.LINE_8, _SUBPIXEL)
    for hull, colour in zip(hulls, np.minimum(_BRIGHTNESS[:, None] * outfit[name], 255)):
      cv2.fillConvexPoly(image, hull, colour.tolist(), cv2.LINE_AA, _SUBPIXEL)
  return part_ids


def _axis_depth(blobs, uv: np.ndarray, intrinsics) -> float:
  """Depth (mm) of a part's axis (the polyline through its blob centres) at its point nearest to
  pixel uv."""
  centres = np.stack([c for c, _, _ in blobs])
  ends = geometry.project(centres, intrinsics)
  best, depth = np.inf, centres[0, 2]
  for a, b, za, zb in zip(ends, ends[1:], centres[:, 2], centres[1:, 2]):
    t = np.clip(np.dot(uv - a, b - a) / max(np.dot(b - a, b - a), 1e-9), 0, 1)
    if (distance := np.linalg.norm(a + t * (b - a) - uv)) < best:
      best, depth = distance, za + t * (zb - za)
  return depth


def joint_visibility(
  pose: body.Pose, intrinsics, part_ids: np.ndarray, tolerance: float = 100.0
) -> np.ndarray:
  """(17,) 1 for H36M joints not hidden by a nearer body part, approximately.

  A joint is hidden when the part drawn on top at its pixel is not one of its own parts and that
  part's axis, where it passes nearest to the joint in the image, lies more than `tolerance` mm
  in front of the joint. Joints outside the image get 0.
  """
  blobs = _blobs(pose)
  height, width = part_ids.shape
  uv = geometry.project(pose.joints, intrinsics)
  visible = np.zeros(len(joints.H36M17), np.float32)
  for k, (name, (u, v)) in enumerate(zip(joints.H36M17, np.round(uv).astype(int))):
    if 0 <= u < width and 0 <= v < height:
      top = list(PARTS)[part_ids[v, u] - 1] if part_ids[v, u] else None
      visible[k] = (
        top is None
        or name in PARTS[top]
        or _axis_depth(blobs[top], uv[k], intrinsics) >= pose.joints[k, 2] - tolerance
      )
  return visible


def draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """(size, size, 3) uint8: a smooth colour gradient with blotches, stripes and random shapes."""
  u = rng.uniform
  grid = rng.integers(2, 9)
  ramp = np.linspace(0, 1, grid)
  angle = u(0, 2 * np.pi)
  t = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
  t = (t - t.min()) / (t.max() - t.min())
  c0, c1 = u(0, 255, (2, 3))
  field = c0 + t[..., None] * (c1 - c0) + rng.normal(0, u(0, 40), (grid, grid, 3))
  image = cv2.resize(
    np.clip(field, 0, 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC
  )
  if rng.random() < 0.3:  # stripes: a regular texture
    period, angle = u(6, 40), u(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    colour = u(0, 255, 3).tolist()
    for offset in np.arange(-size, size, period):
      p0 = size / 2 + offset * normal - 2 * size * direction
      p1 = p0 + 4 * size * direction
      cv2.line(
        image,
        tuple(p0.astype(int)),
        tuple(p1.astype(int)),
        colour,
        max(1, int(period / 3)),
        cv2.LINE_AA,
      )
  for _ in range(rng.integers(2, 14)):
    colour = u(0, 255, 3).tolist()
    thickness = int(rng.choice([-1, -1, 1, 3, 6]))
    centre = tuple(int(c) for c in u(0, size, 2))
    radius = int(u(0.03, 0.3) * size)
    kind = rng.integers(4)
    if kind == 0:
      cv2.ellipse(
        image,
        centre,
        (radius, int(u(0.3, 1) * radius)),
        u(0, 180),
        0,
        360,
        colour,
        thickness,
        cv2.LINE_AA,
      )
    elif kind == 1:
      cv2.rectangle(
        image, centre, tuple(int(c) for c in u(0, size, 2)), colour, thickness, cv2.LINE_AA
      )
    elif kind == 2:
      cv2.line(
        image,
        centre,
        tuple(int(c) for c in u(0, size, 2)),
        colour,
        max(thickness, 1) * 2,
        cv2.LINE_AA,
      )
    else:
      polygon = (np.array(centre) + u(-radius, radius, (rng.integers(3, 7), 2))).astype(np.int32)
      cv2.fillPoly(image, [polygon], colour, cv2.LINE_AA)
  return image


def sample_camera(
  rng: np.random.Generator,
  points: np.ndarray,
  image_size: int,
  elevation_deg: tuple[float, float] = (-5.0, 20.0),
):
  """A pinhole camera that sees the points (world mm, y up), mostly inside the image.

  Focal length 1.0-1.6 x image width, principal point near the centre, distance 3-7 m (growing
  when the person does not fit), elevation uniform in `elevation_deg` (degrees above the
  person's centre), the person anywhere near the middle.
  Returns:
    (world-to-camera rotation (3, 3), camera position (3,), intrinsics (4,)).
  """
  u = rng.uniform
  focal = u(1.0, 1.6) * image_size
  intrinsics = np.array(
    [focal, focal, *(image_size / 2 - 0.5 + rng.normal(0, 0.02, 2) * image_size)]
  )
  centre = (points.min(0) + points.max(0)) / 2
  for attempt in range(30):
    distance = u(3000, 7000) * 1.1 ** max(0, attempt - 10)
    elevation = np.deg2rad(u(*elevation_deg))
    eye = centre + distance * np.array([0, np.sin(elevation), -np.cos(elevation)])
    # Aim off-centre (up to 30% of the half-width) so people are not always centred.
    half_width_mm = distance * image_size / (2 * focal)
    target = centre + look_at(eye, centre).T @ np.array([*u(-0.3, 0.3, 2) * half_width_mm, 0])
    rotation = body.rotation('z', rng.normal(0, 3)) @ look_at(eye, target)
    uv = geometry.project((points - eye) @ rotation.T, intrinsics)
    inside = np.all((uv >= 0) & (uv <= image_size - 1), axis=-1)
    if inside.sum() >= len(points) - 2:
      break
  return rotation, eye, intrinsics


def render_scene(
  rng: np.random.Generator, image_size: int, elevation_deg: tuple[float, float] = (-5.0, 20.0)
) -> Scene:
  """A random person (body.sample_pose), global rotation, camera (`sample_camera`), background
  and drawing."""
  u = rng.uniform
  pose = body.sample_pose(rng)
  pose = pose.transformed(body.global_rotation(u(0, 360), rng.normal(0, 6), rng.normal(0, 5)), 0)
  rotation, eye, intrinsics = sample_camera(rng, pose.joints, image_size, elevation_deg)
  pose = pose.transformed(rotation, -rotation @ eye)
  image = draw_background(rng, image_size)
  light = np.array([u(-1, 1), u(-1, -0.2), -1.0])  # from the camera side, above
  part_ids = draw_person(image, pose, intrinsics, sample_outfit(rng), light / np.linalg.norm(light))
  if rng.random() < 0.5:
    image = cv2.GaussianBlur(image, (0, 0), u(0.3, 1.2))
  amplitude = rng.integers(0, 16)  # uniform pixel noise: a tenth of the cost of Gaussian
  noise = rng.integers(-amplitude, amplitude + 1, image.shape, np.int16)
  image = np.clip(image + noise, 0, 255).astype(np.uint8)
  return Scene(image, pose, intrinsics, joint_visibility(pose, intrinsics, part_ids), part_ids)

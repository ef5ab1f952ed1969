"""A kinematic body model: bone lengths, joint-angle limits, random poses, the 17 Human3.6M joints.

Body frame (mm): origin at the pelvis, x towards the person's left, y up, z forward (the way the
person faces). It is right-handed, so cross(left, up) = forward. Every segment has a frame (a
rotation from segment to body coordinates); in the rest pose all frames are the identity: the
person stands upright, arms and legs hanging down along -y.

Joint angles are in degrees, (flexion, abduction, twist) per ball joint and flexion alone per
hinge. Knees only bend backwards and elbows only forwards (hinge flexion >= 0); the left and right
sides are mirror images, so a given angle means the same movement on either side.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hpe_jax import joints

# Bone lengths of a 1.70 m person in mm, close to Human3.6M's mean skeleton.
REST_LENGTHS = {
  'hip': 130.0,  # pelvis to hip, sideways
  'thigh': 450.0,
  'shin': 440.0,
  'foot': 150.0,  # ankle to toe, forwards (drawn only)
  'lower_spine': 230.0,  # pelvis to spine
  'upper_spine': 250.0,  # spine to thorax (the neck base)
  'shoulder': 150.0,  # thorax to shoulder, sideways
  'upper_arm': 285.0,
  'forearm': 250.0,
}
REST_HEIGHT = 1700.0  # ankle height 80 + shin + thigh + spine + 250 from neck base to head top
# Head points relative to the thorax in the head frame, mm at rest height.
HEAD_POINTS = {'nose': (0.0, 120.0, 90.0), 'head': (0.0, 250.0, 10.0)}
HEIGHT_RANGE = (1500.0, 1950.0)

# Joint-angle limits in degrees: (low, high) per degree of freedom. The l_/r_ joints share them.
LIMITS = {
  'lower_spine': ((-25, 70), (-30, 30), (-35, 35)),
  'upper_spine': ((-15, 30), (-15, 15), (-25, 25)),
  'neck': ((-40, 50), (-30, 30), (-70, 70)),
  'shoulder': ((-50, 175), (-20, 175), (-70, 80)),
  'elbow': ((0, 150),),
  'hip': ((-30, 120), (-20, 50), (-40, 40)),
  'knee': ((0, 150),),
  'ankle': ((-30, 40),),
}


@dataclasses.dataclass(frozen=True)
class Pose:
  """A posed body.

  Attributes:
    joints: (17, 3) mm, joints.H36M17 order.
    toes: (2, 3) mm, left and right toe tips (for drawing feet).
    frames: segment name -> (3, 3) rotation, segment to this pose's coordinates.
    scale: height / REST_HEIGHT.
    girth: body width factor (drawing only).
  """

  joints: np.ndarray
  toes: np.ndarray
  frames: dict[str, np.ndarray]
  scale: float
  girth: float

  def transformed(self, rotation: np.ndarray, translation) -> Pose:
    """The pose moved rigidly: x -> rotation @ x + translation."""
    move = lambda p: p @ rotation.T + translation
    return dataclasses.replace(
      self,
      joints=move(self.joints),
      toes=move(self.toes),
      frames={k: rotation @ f for k, f in self.frames.items()},
    )


def rotation(axis: str, degrees: float) -> np.ndarray:
  """(3, 3) right-handed rotation about the 'x', 'y' or 'z' axis."""
  c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
  i, j = {'x': (1, 2), 'y': (2, 0), 'z': (0, 1)}[axis]
  r = np.eye(3)
  r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
  return r


def global_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """Body to world (y up): roll about the body's forward axis, pitch (lean) about its lateral
  axis, then yaw about the vertical."""
  return rotation('y', yaw) @ rotation('x', pitch) @ rotation('z', roll)


def _spine_rotation(flexion, lateral, twist):
  # Positive flexion bends forwards (+y towards +z).
  return rotation('x', flexion) @ rotation('z', lateral) @ rotation('y', twist)


def _limb_rotation(side: int, flexion, abduction, twist):
  # side +1 left, -1 right: abduction swings the limb outwards (towards side * x), flexion
  # forwards (-y towards +z); mirroring x flips the sign of z- and y-rotations only.
  return rotation('z', side * abduction) @ rotation('x', -flexion) @ rotation('y', side * twist)


def sample_lengths(rng: np.random.Generator) -> tuple[dict[str, float], float]:
  """Random bone lengths (mm; left = right) and scale: height in HEIGHT_RANGE, proportions +-10%."""
  scale = rng.uniform(*HEIGHT_RANGE) / REST_HEIGHT
  jitter = np.clip(rng.normal(1.0, 0.04, len(REST_LENGTHS)), 0.9, 1.1)
  return {k: v * scale * j for (k, v), j in zip(REST_LENGTHS.items(), jitter)}, scale


def sample_angles(rng: np.random.Generator) -> dict[str, tuple[float, ...]]:
  """Random joint angles (degrees) from a few pose families, clipped to LIMITS."""
  u, n = rng.uniform, rng.normal
  lean = u(20, 70) if rng.random() < 0.2 else n(8, 12)
  angles = {
    'lower_spine': (lean, n(0, 8), n(0, 12)),
    'upper_spine': (n(0, 8), n(0, 5), n(0, 10)),
    'neck': (n(5, 15), n(0, 10), n(0, 25)),
  }
  for side in 'lr':
    # Arms: hanging, raised sideways, raised forwards/overhead, or anything.
    flexion, abduction = [
      ((-30, 45), (0, 45)),
      ((-20, 40), (45, 175)),
      ((45, 175), (0, 60)),
      ((-50, 175), (-20, 175)),
    ][rng.integers(4)]
    angles[f'{side}_shoulder'] = (u(*flexion), u(*abduction), u(-60, 80))
    angles[f'{side}_elbow'] = (u(0, 25) if rng.random() < 0.4 else u(0, 150),)
    angles[f'{side}_ankle'] = (n(0, 10),)
  # Legs: standing, walking, kicking, squatting/sitting, or anything; (hip flexion, knee).
  family = rng.choice(5, p=(0.3, 0.3, 0.15, 0.15, 0.1))
  if family == 0:
    legs = [(n(0, 6), u(0, 15)) for _ in 'lr']
  elif family == 1:
    stride = u(-30, 45)
    legs = [(stride, u(0, 60)), (-0.8 * stride + n(0, 5), u(0, 60))]
  elif family == 2:
    legs = [(u(50, 120), u(0, 110)), (n(0, 8), u(0, 30))]
  elif family == 3:
    squat = u(50, 120)
    legs = [(squat + n(0, 8), u(60, 150)) for _ in 'lr']
  else:
    legs = [(u(-30, 120), u(0, 150)) for _ in 'lr']
  if rng.random() < 0.5:  # which leg strides or kicks
    legs.reverse()
  for side, (flexion, knee) in zip('lr', legs):
    abduction = u(-10, 45) if family in (2, 4) else n(6, 8)
    angles[f'{side}_hip'] = (flexion, abduction, n(0, 12))
    angles[f'{side}_knee'] = (knee,)
  return {
    k: tuple(np.clip(v, *np.transpose(LIMITS[k.removeprefix('l_').removeprefix('r_')])))
    for k, v in angles.items()
  }


def forward_kinematics(
  lengths: dict[str, float],
  angles: dict[str, tuple[float, ...]],
  scale: float = 1.0,
  girth: float = 1.0,
) -> Pose:
  """Joint positions in the body frame from bone lengths (mm) and joint angles (degrees)."""
  down = lambda length: np.array([0.0, -length, 0.0])
  frames = {'pelvis': np.eye(3)}
  lower = _spine_rotation(*angles['lower_spine'])
  frames['chest'] = chest = lower @ _spine_rotation(*angles['upper_spine'])
  frames['head'] = head = chest @ _spine_rotation(*angles['neck'])
  p = {'pelvis': np.zeros(3)}
  p['spine'] = -lower @ down(lengths['lower_spine'])
  p['thorax'] = p['spine'] - chest @ down(lengths['upper_spine'])
  for name, offset in HEAD_POINTS.items():
    p[name] = p['thorax'] + head @ np.multiply(offset, scale)
  toes = []
  for side, s in (('l', 1), ('r', -1)):
    thigh = _limb_rotation(s, *angles[f'{side}_hip'])
    shin = thigh @ rotation('x', angles[f'{side}_knee'][0])  # bends backwards
    foot = shin @ rotation('x', -angles[f'{side}_ankle'][0])
    upper_arm = chest @ _limb_rotation(s, *angles[f'{side}_shoulder'])
    forearm = upper_arm @ rotation('x', -angles[f'{side}_elbow'][0])  # bends forwards
    p[f'{side}_hip'] = np.array([s * lengths['hip'], 0.0, 0.0])
    p[f'{side}_knee'] = p[f'{side}_hip'] + thigh @ down(lengths['thigh'])
    p[f'{side}_ankle'] = p[f'{side}_knee'] + shin @ down(lengths['shin'])
    p[f'{side}_shoulder'] = p['thorax'] + chest @ np.array(
      [s * lengths['shoulder'], -0.13 * lengths['shoulder'], 0.0]
    )
    p[f'{side}_elbow'] = p[f'{side}_shoulder'] + upper_arm @ down(lengths['upper_arm'])
    p[f'{side}_wrist'] = p[f'{side}_elbow'] + forearm @ down(lengths['forearm'])
    toes.append(p[f'{side}_ankle'] + foot @ np.array([0.0, -0.3, 1.0]) * lengths['foot'])
    frames.update(
      {
        f'{side}_thigh': thigh,
        f'{side}_shin': shin,
        f'{side}_foot': foot,
        f'{side}_upper_arm': upper_arm,
        f'{side}_forearm': forearm,
      }
    )
  return Pose(np.stack([p[name] for name in joints.H36M17]), np.stack(toes), frames, scale, girth)


def sample_pose(rng: np.random.Generator) -> Pose:
  """A random person in a random pose, in the body frame (no global rotation)."""
  lengths, scale = sample_lengths(rng)
  return forward_kinematics(lengths, sample_angles(rng), scale, rng.uniform(0.85, 1.25))

"""The joint registry: every joint set, flip pair, bone and joint map lives here, and only here.

Two sets matter to the method:
- MPII-16, the heatmap set every model predicts and every dataset is mapped into;
- Human3.6M-17, the 3D evaluation set.

A `JointMap` says, for each joint of a target set, which source joints it comes from: one index
(the same joint), two (the midpoint, e.g. pelvis = mid-hips) or none (the source lacks it). A
derived joint is annotated only when all of its sources are; a missing joint is never filled in.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MPII16 = (
  'r_ankle',
  'r_knee',
  'r_hip',
  'l_hip',
  'l_knee',
  'l_ankle',
  'pelvis',
  'thorax',
  'upper_neck',
  'head_top',
  'r_wrist',
  'r_elbow',
  'r_shoulder',
  'l_shoulder',
  'l_elbow',
  'l_wrist',
)
NUM_JOINTS = len(MPII16)
PELVIS = MPII16.index('pelvis')  # the root of every depth target
# Parent of each MPII-16 joint (None: the root), a tree rooted at the pelvis (BVH export).
MPII16_PARENTS = (
  'r_knee',
  'r_hip',
  'pelvis',
  'pelvis',
  'l_hip',
  'l_knee',
  None,
  'pelvis',
  'thorax',
  'upper_neck',
  'r_elbow',
  'r_shoulder',
  'thorax',
  'thorax',
  'l_shoulder',
  'l_elbow',
)

# Left/right pairs of MPII-16, swapped when an image is mirrored.
FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))

# The MPII-16 skeleton, for drawing and sanity checks: (parent, child).
BONES = (
  (0, 1),
  (1, 2),
  (2, 6),
  (6, 3),
  (3, 4),
  (4, 5),
  (6, 7),
  (7, 8),
  (8, 9),
  (10, 11),
  (11, 12),
  (12, 7),
  (7, 13),
  (13, 14),
  (14, 15),
)

# COCO's object keypoint similarity (OKS) sigmas for MPII-16, in MPII16 order: what COCOeval's
# params.kpt_oks_sigmas must hold to score MPII-16 keypoints (its default has COCO's 17). MPII has
# no official set. Joints COCO has take COCO's values (cocoapi's cocoeval.py): ankles .089, knees
# .087, hips .107, shoulders .079, elbows .072, wrists .062. The others are our documented choice:
# pelvis .107, the hips' (MPII's pelvis is the mid-hip point, placed as loosely as the hips);
# thorax .079, the shoulders' (the mid-shoulder point); upper_neck and head_top .079, CrowdPose's
# sigmas for its neck and top of head (crowdposetools' cocoeval.py, Li et al. 2019). mmpose's MPII
# list (.026 for these four, .083 knees, .179 shoulders) departs from COCO's values; not used.
MPII16_OKS_SIGMAS = (
  0.089,  # r_ankle
  0.087,  # r_knee
  0.107,  # r_hip
  0.107,  # l_hip
  0.087,  # l_knee
  0.089,  # l_ankle
  0.107,  # pelvis
  0.079,  # thorax
  0.079,  # upper_neck
  0.079,  # head_top
  0.062,  # r_wrist
  0.072,  # r_elbow
  0.079,  # r_shoulder
  0.079,  # l_shoulder
  0.072,  # l_elbow
  0.062,  # l_wrist
)

# Canonical limb lengths in mm (REFERENCE.md 1: shin, thigh, forearm, upper arm), the scale given
# to poses predicted without a camera (geometry.canonical_limb_scale).
CANONICAL_LIMB_LENGTHS_MM = {
  (0, 1): 452.1255,
  (1, 2): 456.0086,
  (3, 4): 456.0086,
  (4, 5): 452.1255,
  (10, 11): 249.7726,
  (11, 12): 284.1253,
  (13, 14): 284.1253,
  (14, 15): 249.7726,
}

# Bone groups of the geometric loss (REFERENCE.md 1): within a group the weighted bone lengths
# should agree. The non-unit weights are canonical length ratios (thigh/shin, upper-arm/forearm).
_THIGH_OVER_SHIN = 1.0085885098415446
_UPPER_ARM_OVER_FOREARM = 1.1375361376887123
GEOMETRIC_BONE_GROUPS = {
  'legs': (((0, 1), _THIGH_OVER_SHIN), ((1, 2), 1.0), ((3, 4), 1.0), ((4, 5), _THIGH_OVER_SHIN)),
  'arms': (
    ((10, 11), _UPPER_ARM_OVER_FOREARM),
    ((11, 12), 1.0),
    ((13, 14), 1.0),
    ((14, 15), _UPPER_ARM_OVER_FOREARM),
  ),
  'pelvis': (((2, 6), 1.0), ((3, 6), 1.0)),
  'shoulders': (((12, 8), 1.0), ((13, 8), 1.0)),
}

H36M17 = (
  'pelvis',
  'r_hip',
  'r_knee',
  'r_ankle',
  'l_hip',
  'l_knee',
  'l_ankle',
  'spine',
  'thorax',
  'nose',
  'head',
  'l_shoulder',
  'l_elbow',
  'l_wrist',
  'r_shoulder',
  'r_elbow',
  'r_wrist',
)
H36M_PELVIS = H36M17.index('pelvis')  # the root of every 3D metric
H36M_FLIP_PAIRS = ((1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16))
# Parent of each Human3.6M-17 joint (None: the root), the usual tree: head hangs from the nose.
H36M17_PARENTS = (
  None,
  'pelvis',
  'r_hip',
  'r_knee',
  'pelvis',
  'l_hip',
  'l_knee',
  'pelvis',
  'spine',
  'thorax',
  'nose',
  'thorax',
  'l_shoulder',
  'l_elbow',
  'thorax',
  'r_shoulder',
  'r_elbow',
)


@dataclasses.dataclass(frozen=True)
class JointMap:
  """Maps a source joint set onto a target set; `sources[t]` are the source indices of joint t."""

  source: tuple[str, ...]
  target: tuple[str, ...]
  sources: tuple[tuple[int, ...], ...]

  def __post_init__(self):
    if len(self.sources) != len(self.target):
      raise ValueError(f'JointMap needs {len(self.target)} entries, got {len(self.sources)}')
    for srcs in self.sources:
      if len(srcs) > 2 or any(not 0 <= s < len(self.source) for s in srcs):
        raise ValueError(f'bad source indices {srcs} for a {len(self.source)}-joint source')

  def matrix(self) -> np.ndarray:
    """(T, S) float64: row t averages the sources of target joint t (zeros where it has none),
    so `matrix() @ points` maps unmasked (S, D) points without leaving float64."""
    weights = np.zeros((len(self.target), len(self.source)))
    for t, srcs in enumerate(self.sources):
      weights[t, list(srcs)] = 1.0 / max(len(srcs), 1)
    return weights

  def __call__(self, points: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps joints. points (..., S, D), mask (..., S) -> (..., T, D) and mask (..., T).

    Missing target joints are zeros with mask 0; a midpoint is annotated only if both ends are.
    """
    points = np.asarray(points, np.float32)
    mask = np.asarray(mask, np.float32)
    out = np.zeros(points.shape[:-2] + (len(self.target), points.shape[-1]), np.float32)
    out_mask = np.zeros(mask.shape[:-1] + (len(self.target),), np.float32)
    for t, srcs in enumerate(self.sources):
      if not srcs:
        continue
      out[..., t, :] = points[..., list(srcs), :].mean(axis=-2)
      out_mask[..., t] = mask[..., list(srcs)].min(axis=-1)
    out[out_mask == 0] = 0.0
    return out, out_mask


def _by_name(source: tuple[str, ...], target: tuple[str, ...], spec: dict[str, tuple[str, ...]]):
  """Builds a JointMap from {target name: source names}; unnamed targets map to the same name."""
  sources = []
  for name in target:
    names = spec.get(name, (name,) if name in source else ())
    sources.append(tuple(source.index(n) for n in names))
  return JointMap(source, target, tuple(sources))


# Human3.6M -> MPII. MPII's thorax is mid-shoulders; H36M's "thorax" sits at the base of the neck
# and becomes MPII's upper neck; H36M's spine has no MPII counterpart (the reference wrongly
# trained it into the thorax channel).
MPII_FROM_H36M = _by_name(
  H36M17,
  MPII16,
  {
    'thorax': ('l_shoulder', 'r_shoulder'),
    'upper_neck': ('thorax',),
    'head_top': ('head',),
  },
)
# MPII predictions -> all 17 Human3.6M joints, by the reference implementation's rule (its
# `mpii_to_h36m` index list and `convert_eval_format`): the inverse of the map above, with the two
# joints an MPII-16 model cannot predict interpolated: spine = mid(pelvis, H36M thorax), nose =
# mid(H36M thorax, head), where H36M thorax <- MPII upper neck and head <- head top.
H36M_FROM_MPII = _by_name(
  MPII16,
  H36M17,
  {
    'thorax': ('upper_neck',),
    'head': ('head_top',),
    'spine': ('pelvis', 'upper_neck'),
    'nose': ('upper_neck', 'head_top'),
  },
)
# The same without the interpolated spine and nose: the 15 joints the model predicts directly.
H36M_FROM_MPII_DIRECT = _by_name(
  MPII16,
  H36M17,
  {
    'thorax': ('upper_neck',),
    'head': ('head_top',),
    'spine': (),
    'nose': (),
  },
)
# The 15 bones whose lengths the reference's legacy MPJPE scales to sum to 4000 mm (its
# `edges_3d`): the Human3.6M-17 tree with the nose bridged, thorax -> head.
H36M_LEGACY_BONES = (
  (3, 2),
  (2, 1),
  (1, 0),
  (0, 4),
  (4, 5),
  (5, 6),
  (0, 7),
  (7, 8),
  (8, 10),
  (16, 15),
  (15, 14),
  (14, 8),
  (8, 11),
  (11, 12),
  (12, 13),
)


# The 14 joints of LSP and LSP-Extended, in their joints.mat order.
LSP14 = (
  'r_ankle',
  'r_knee',
  'r_hip',
  'l_hip',
  'l_knee',
  'l_ankle',
  'r_wrist',
  'r_elbow',
  'r_shoulder',
  'l_shoulder',
  'l_elbow',
  'l_wrist',
  'neck',
  'head_top',
)
# LSP -> MPII: LSP's neck is MPII's upper neck; pelvis and thorax are midpoints.
MPII_FROM_LSP = _by_name(
  LSP14,
  MPII16,
  {
    'pelvis': ('r_hip', 'l_hip'),
    'thorax': ('r_shoulder', 'l_shoulder'),
    'upper_neck': ('neck',),
  },
)

# FLIC's 29 coordinate slots, in examples.coords column order (1-based part numbers 1-29).
# Only l/r shoulder, elbow, wrist, hip, eye and nose are labelled; 'm_*' are midpoint slots.
FLIC29 = (
  'l_shoulder',
  'l_elbow',
  'l_wrist',
  'r_shoulder',
  'r_elbow',
  'r_wrist',
  'l_hip',
  'l_knee',
  'l_ankle',
  'r_hip',
  'r_knee',
  'r_ankle',
  'l_eye',
  'r_eye',
  'l_ear',
  'r_ear',
  'nose',
  'm_shoulder',
  'm_hip',
  'm_ear',
  'm_torso',
  'm_l_upper_arm',
  'm_r_upper_arm',
  'm_l_lower_arm',
  'm_r_lower_arm',
  'm_l_upper_leg',
  'm_r_upper_leg',
  'm_l_lower_leg',
  'm_r_lower_leg',
)
# FLIC -> MPII: pelvis and thorax are midpoints; upper neck and head top have no FLIC source
# (eyes and nose are not the head top).
MPII_FROM_FLIC = _by_name(
  FLIC29,
  MPII16,
  {
    'pelvis': ('r_hip', 'l_hip'),
    'thorax': ('r_shoulder', 'l_shoulder'),
  },
)


def flip_permutation(num_joints: int = NUM_JOINTS, pairs=FLIP_PAIRS) -> np.ndarray:
  """The index permutation that swaps left and right joints (an involution)."""
  perm = np.arange(num_joints)
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return perm


MPII_FLIP = flip_permutation()
H36M_FLIP = flip_permutation(len(H36M17), H36M_FLIP_PAIRS)

# Occlusion Person's 15 joints (joints_2d / joints_3d order); 'hip' is the root. They are
# Human3.6M-17 under multiview-pose's names without nose and head: belly = spine, neck = thorax.
OCCLUSION_PERSON15 = (
  'hip',
  'r_hip',
  'r_knee',
  'r_ankle',
  'l_hip',
  'l_knee',
  'l_ankle',
  'belly',
  'neck',
  'l_shoulder',
  'l_elbow',
  'l_wrist',
  'r_shoulder',
  'r_elbow',
  'r_wrist',
)
# Occlusion Person -> MPII: the root is the pelvis, the neck (its base, Human3.6M's thorax) is the
# upper neck as in MPII_FROM_H36M, thorax = mid-shoulders; there is no head top.
MPII_FROM_OCCLUSION_PERSON = _by_name(
  OCCLUSION_PERSON15,
  MPII16,
  {
    'pelvis': ('hip',),
    'thorax': ('l_shoulder', 'r_shoulder'),
    'upper_neck': ('neck',),
  },
)
# Occlusion Person -> Human3.6M-17 (nose and head missing).
H36M_FROM_OCCLUSION_PERSON = _by_name(
  OCCLUSION_PERSON15,
  H36M17,
  {
    'pelvis': ('hip',),
    'spine': ('belly',),
    'thorax': ('neck',),
  },
)

# The study's fork scores Occlusion Person against its own ground truth (datasets/
# occlusion_person.py): the 15 joints mapped into MPII-16 with thorax = mid-shoulders and head top
# = a copy of the neck, then into Human3.6M-17 by the reference's mpii_to_h36m list, which puts
# MPII's thorax into H36M's spine and its upper neck into H36M's thorax, and the head top into both
# the nose and the head: here spine = mid-shoulders, thorax = nose = head = neck.
FORK_H36M_FROM_OCCLUSION_PERSON = _by_name(
  OCCLUSION_PERSON15,
  H36M17,
  {
    'pelvis': ('hip',),
    'spine': ('l_shoulder', 'r_shoulder'),
    'thorax': ('neck',),
    'nose': ('neck',),
    'head': ('neck',),
  },
)

# MPI-INF-3DHP's 28 training joints, in annot2 / annot3 order.
MPI_INF_3DHP28 = (
  'spine3',
  'spine4',
  'spine2',
  'spine',
  'pelvis',
  'neck',
  'head',
  'head_top',
  'l_clavicle',
  'l_shoulder',
  'l_elbow',
  'l_wrist',
  'l_hand',
  'r_clavicle',
  'r_shoulder',
  'r_elbow',
  'r_wrist',
  'r_hand',
  'l_hip',
  'l_knee',
  'l_ankle',
  'l_foot',
  'l_toe',
  'r_hip',
  'r_knee',
  'r_ankle',
  'r_foot',
  'r_toe',
)
# The 17 test joints (test-set and mmpose order): their indices among the 28.
MPI_INF_3DHP_TEST_JOINTS = (7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6)
MPI_INF_3DHP17 = tuple(MPI_INF_3DHP28[i] for i in MPI_INF_3DHP_TEST_JOINTS)
# 3DHP -> MPII: thorax = mid-shoulders (3DHP's neck is 30-70 mm above it); pelvis is mid-hips.
MPII_FROM_3DHP = _by_name(
  MPI_INF_3DHP28,
  MPII16,
  {
    'thorax': ('l_shoulder', 'r_shoulder'),
    'upper_neck': ('neck',),
  },
)
# 3DHP -> Human3.6M-17: H36M thorax = neck base, head = head top (3DHP 'head' is the head's
# centre); 3DHP spine is about halfway from pelvis to neck, as H36M's; no nose.
H36M_FROM_3DHP = _by_name(
  MPI_INF_3DHP28,
  H36M17,
  {
    'thorax': ('neck',),
    'head': ('head_top',),
    'nose': (),
  },
)
# The study's fork scores MPI-INF-3DHP against annot3 (lib/data_utils/mpii3d_utils.py and
# datasets/mpii3d.py): the test joints mapped into MPII-16 with thorax = 3DHP's spine and upper
# neck = its neck, then into Human3.6M-17 by mpii_to_h36m: spine = spine, thorax = neck, nose =
# head = head top (3DHP's 'head', the head's centre, is left out).
FORK_H36M_FROM_3DHP = _by_name(
  MPI_INF_3DHP28,
  H36M17,
  {
    'thorax': ('neck',),
    'nose': ('head_top',),
    'head': ('head_top',),
  },
)

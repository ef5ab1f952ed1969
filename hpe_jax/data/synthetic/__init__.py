"""Procedural people: a kinematic body model (body) and its rendering into scenes (render)."""

from hpe_jax.data.synthetic.body import Pose, sample_pose
from hpe_jax.data.synthetic.render import Scene, render_scene

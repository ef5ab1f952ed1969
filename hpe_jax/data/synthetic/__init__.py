"""Procedural people: a kinematic body model (body) and its rendering into scenes (render)."""

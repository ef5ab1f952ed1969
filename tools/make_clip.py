"""Runs the demo-clip command (hpe_jax.tools.make_clip) as `python tools/make_clip.py`."""

from hpe_jax.tools import make_clip

if __name__ == '__main__':
  make_clip.run()

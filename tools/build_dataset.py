"""Runs hpe-build-dataset (hpe_jax.tools.build_dataset) as `python tools/build_dataset.py`."""

from hpe_jax.tools import build_dataset

if __name__ == '__main__':
  build_dataset.run()

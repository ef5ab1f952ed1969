"""Runs hpe-import-weights (hpe_jax.tools.import_weights) as `python tools/import_weights.py`."""

from hpe_jax.tools import import_weights

if __name__ == '__main__':
  import_weights.run()

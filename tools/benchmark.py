"""Runs hpe-benchmark (hpe_jax.tools.benchmark) as `python tools/benchmark.py`."""

from hpe_jax.tools import benchmark

if __name__ == '__main__':
  benchmark.run()

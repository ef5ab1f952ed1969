"""Runs hpe_jax.tools.benchmark_analysis as `python tools/benchmark_analysis.py`."""

from hpe_jax.tools import benchmark_analysis

if __name__ == '__main__':
  benchmark_analysis.run()

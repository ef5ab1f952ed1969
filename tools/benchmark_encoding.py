"""Runs the video-encoding benchmark (hpe_jax.tools.benchmark_encoding) as
`python tools/benchmark_encoding.py`."""

from hpe_jax.tools import benchmark_encoding

if __name__ == '__main__':
  benchmark_encoding.run()

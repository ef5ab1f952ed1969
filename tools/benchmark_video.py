"""Runs hpe-benchmark-video (hpe_jax.tools.benchmark_video) as `python tools/benchmark_video.py`."""

from hpe_jax.tools import benchmark_video

if __name__ == '__main__':
  benchmark_video.run()

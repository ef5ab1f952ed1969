"""Runs hpe-benchmark-pipeline (hpe_jax.tools.benchmark_pipeline) as a script."""

from hpe_jax.tools import benchmark_pipeline

if __name__ == '__main__':
  benchmark_pipeline.run()

"""hpe_jax: 3D human pose estimation with 2D pre-training, in JAX / Flax NNX."""

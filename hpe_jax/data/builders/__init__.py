"""Our TFDS dataset builders; importing this package registers each of them with TFDS."""

from hpe_jax.data.builders import synthetic_humans

# TFDS names of the builders above.
NAMES = (synthetic_humans.SyntheticHumans.name,)

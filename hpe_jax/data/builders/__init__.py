"""Our TFDS dataset builders; importing this package registers each of them with TFDS."""

from hpe_jax.data.builders import flic
from hpe_jax.data.builders import human36m
from hpe_jax.data.builders import lsp
from hpe_jax.data.builders import mpi_inf_3dhp
from hpe_jax.data.builders import mpii
from hpe_jax.data.builders import occlusion_person
from hpe_jax.data.builders import synthetic_humans

# TFDS names of the builders above.
NAMES = (
  synthetic_humans.SyntheticHumans.name,
  mpii.Mpii.name,
  lsp.Lsp.name,
  lsp.LspExtended.name,
  flic.Flic.name,
  flic.FlicFull.name,
  human36m.Human36m.name,
  mpi_inf_3dhp.MpiInf3dhp.name,
  occlusion_person.OcclusionPerson.name,
)

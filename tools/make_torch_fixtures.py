"""Runs the fixture command (hpe_jax.tools.make_torch_fixtures) as
`python tools/make_torch_fixtures.py`."""

from hpe_jax.tools import make_torch_fixtures

if __name__ == '__main__':
  make_torch_fixtures.run()

"""Writes the weight-import test fixtures: tiny reference networks run in torch (needs torch).

  python tools/make_torch_fixtures.py [--out=tests/fixtures/torch_import]

(`python -m hpe_jax.tools.make_torch_fixtures` is the same.) tests/test_import_weights.py checks
our import of PyTorch weights against these files, so it runs without torch; where torch is
installed it also checks that they equal what this command writes now. The seeds are fixed: a
rerun gives the same weights and images, and outputs equal to float32 rounding. What the files
hold: hpe_jax/models/torch_reference.py. Exit codes: 0 written, 2 torch is not installed.
"""

from __future__ import annotations

import os

from absl import flags

from hpe_jax import cli

# The checkout's fixtures: hpe_jax/tools/ -> the repository root.
_DEFAULT_OUT = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  'tests',
  'fixtures',
  'torch_import',
)

_OUT = flags.DEFINE_string('out', _DEFAULT_OUT, 'The directory to write the .npz files to.')


def main(args: list[str]) -> None:
  del args
  try:
    from hpe_jax.models import torch_reference  # pylint: disable=g-import-not-at-top  (fast --help)
  except ModuleNotFoundError as e:
    if e.name != 'torch':
      raise
    cli.exit_with_error('torch is not installed: pip install -e ".[torch]", then rerun')
  for path in torch_reference.write_fixtures(_OUT.value):
    print(f'Wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)')


def run() -> None:
  cli.run(main)


if __name__ == '__main__':
  run()

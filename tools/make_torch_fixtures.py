"""Writes the weight-import test fixtures: tiny reference networks run in torch (needs torch).

  python tools/make_torch_fixtures.py [--out=tests/fixtures/torch_import]

tests/models/test_import_weights.py checks our import of PyTorch weights against these files, so it
runs without torch; where torch is installed it also checks that they equal what this command writes
now. The seeds are fixed: a rerun gives the same weights and images, and outputs equal to float32
rounding. What the files hold: tools/lib/torch_reference.py. Exit codes: 0 written, 2 torch is not
installed.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from hpe_jax import cli

# `python tools/X.py` puts tools/ on the path, not the repository root that holds tools.lib.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

_OUT = flags.DEFINE_string(
  'out',
  os.path.join(_REPO, 'tests', 'fixtures', 'torch_import'),
  'The directory to write the .npz files to.',
)


def main(args: list[str]) -> None:
  del args
  try:
    from tools.lib import torch_reference  # pylint: disable=g-import-not-at-top  (fast --help)
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

"""Builds a pose dataset from the files a user downloaded (no TensorFlow needed).

  hpe-build-dataset mpii --manual_dir=~/downloads/mpii [--data_dir=...] [--config=small]
  hpe-build-dataset lsp_extended --manual_dir=~/downloads/lspet --allow_missing
  hpe-build-dataset mpii --help_download      # what to download and how to lay it out

(`python -m hpe_jax.commands.build_dataset` is the same.) The build shows a progress bar per split
and ends with a report per split: examples written, and everything skipped with its reason and the
first few names. The report is also saved as build_report.json in the dataset's directory. Exit
codes: 0 built, 2 a problem (one line on stderr says which and what to do).
"""

from __future__ import annotations

from absl import app
from absl import flags

from hpe_jax import cli

_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Directory with the downloaded files.')
_DATA_DIR = flags.DEFINE_string(
  'data_dir', '', 'Output directory (default $HPE_DATA_DIR or ~/tensorflow_datasets).'
)
_CONFIG = flags.DEFINE_string(
  'config',
  'default',
  'Builder config: default (384 px crops; 192 for synthetic_humans) or small (192 px crops, '
  'for inputs up to 128 px); synthetic_humans has tiny, overhead and large (384 px crops).',
)
_ALLOW_MISSING = flags.DEFINE_bool(
  'allow_missing',
  False,
  'Build from the images that are present; missing ones are skipped and counted.',
)
_HELP_DOWNLOAD = flags.DEFINE_bool('help_download', False, 'Print the download instructions.')


def main(args: list[str]) -> None:
  from hpe_jax.data import builders  # pylint: disable=g-import-not-at-top  (--help stays fast)
  from hpe_jax.data import building  # pylint: disable=g-import-not-at-top

  if len(args) != 1:
    raise app.UsageError(f'name one dataset: one of {", ".join(builders.NAMES)}')
  name = args[0]
  if _HELP_DOWNLOAD.value:
    print(building.download_instructions(name) or f'{name} needs no download.')
    return
  directory = building.build(
    name,
    config=_CONFIG.value,
    data_dir=_DATA_DIR.value,
    manual_dir=_MANUAL_DIR.value or '',
    allow_missing=_ALLOW_MISSING.value,
  )
  print(f'Built {name}/{_CONFIG.value} in {directory}')


def run() -> None:
  cli.run(main, positional=True)


if __name__ == '__main__':
  run()

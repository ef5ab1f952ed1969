"""Builds a pose dataset from the files a user downloaded (no TensorFlow needed).

  python tools/build_dataset.py mpii --manual_dir=~/downloads/mpii [--data_dir=...] [--config=small]
  python tools/build_dataset.py lsp_extended --manual_dir=~/downloads/lspet --allow_missing

`python tools/build_dataset.py NAME --help_download` prints what to download and how to lay it
out. The build shows a progress bar per split and ends with a report per split: examples written,
and everything skipped with its reason and the first few names. The report is also saved as
build_report.json in the dataset's directory.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

from hpe_jax.data import builders
from hpe_jax.data import datasets
from hpe_jax.data.builders import base

_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Directory with the downloaded files.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'Output directory (default $HPE_DATA_DIR or '
                                '~/tensorflow_datasets).')
_CONFIG = flags.DEFINE_string('config', 'default', 'Builder config: default (384 px crops) or '
                              'small (192 px crops, for inputs up to 128 px).')
_ALLOW_MISSING = flags.DEFINE_bool('allow_missing', False, 'Build from the images that are '
                                   'present; missing ones are skipped and counted.')
_HELP_DOWNLOAD = flags.DEFINE_bool('help_download', False, 'Print the download instructions.')


def format_report(report: dict[str, dict]) -> str:
  """{split: {'counts': {...}, 'examples': {...}}} -> readable lines."""
  lines = []
  for split, entry in report.items():
    counts = dict(entry['counts'])
    lines.append(f'{split}: {counts.pop("written", 0)} examples written')
    for reason, count in sorted(counts.items()):
      names = ', '.join(entry['examples'].get(reason, []))
      lines.append(f'  {reason}: {count} (e.g. {names})')
  return '\n'.join(lines)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError(f'name one dataset: one of {", ".join(builders.NAMES)}')
  name = argv[1]
  logging.set_verbosity(logging.ERROR)  # TFDS warns about folders it looks into and skips
  if name not in builders.NAMES:
    sys.exit(f'error: unknown dataset {name!r}; hpe_jax builds {", ".join(builders.NAMES)}')
  builder_class = tfds.builder_cls(name)
  instructions = getattr(builder_class, 'MANUAL_DOWNLOAD_INSTRUCTIONS', '') or ''
  if _HELP_DOWNLOAD.value:
    print(instructions or f'{name} needs no download.')
    return
  configs = builder_class.builder_configs
  if _CONFIG.value not in configs:
    sys.exit(f'error: {name} has no config {_CONFIG.value!r}; it has {", ".join(sorted(configs))}')
  data_dir = datasets.default_data_dir(_DATA_DIR.value)
  kwargs = {'allow_missing': _ALLOW_MISSING.value} if issubclass(
      builder_class, base.PoseDatasetBuilder) else {}
  builder = builder_class(config=_CONFIG.value, data_dir=data_dir, file_format='array_record',
                          **kwargs)
  if builder.is_prepared():
    sys.exit(f'{name}/{_CONFIG.value} is already built in {builder.data_dir}; delete that '
             'directory to rebuild it.')
  manual_dir = os.path.expanduser(_MANUAL_DIR.value or '')
  if instructions and not (os.path.isdir(manual_dir) and os.listdir(manual_dir)):
    problem = 'is empty' if os.path.isdir(manual_dir) else 'is not a directory'
    sys.exit(f'error: --manual_dir={_MANUAL_DIR.value!r} {problem}. {name} is built from '
             f'downloaded files:\n{instructions}')
  try:
    datasets.prepare(builder, download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir or None))
  except (base.AnnotationError, base.MissingImagesError) as e:
    sys.exit(f'error: {e}')
  report = getattr(builder, 'report', {})
  if report:
    with open(os.path.join(builder.data_dir, 'build_report.json'), 'w') as f:
      json.dump(report, f, indent=1)
    print(format_report(report))
  print(f'Built {name}/{_CONFIG.value} in {builder.data_dir}')


if __name__ == '__main__':
  app.run(main)

"""Building a pose dataset from the files a user downloaded, with a report of what was skipped.

The builders (hpe_jax.data.builders) read the downloads; this module checks the request (dataset
name, builder config, download directory), builds once per data directory and saves the build's
report (examples written, everything skipped with its reason and the first few names) as
build_report.json beside the dataset.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

import tensorflow_datasets as tfds

from hpe_jax import progress
from hpe_jax.data import builders
from hpe_jax.data import datasets
from hpe_jax.data.builders import base

REPORT_FILE = 'build_report.json'
# Off a terminal (no progress bars), a split being written logs its count this often.
PROGRESS_SECONDS = 60.0


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


def _builder_class(name: str) -> type[tfds.core.DatasetBuilder]:
  if name not in builders.NAMES:
    raise datasets.DatasetError(
      f'unknown dataset {name!r}; hpe_jax builds {", ".join(builders.NAMES)}'
    )
  return tfds.builder_cls(name)


def _logged_split(split: str, examples, log: Callable[[str], None], periodic: bool):
  """Yields the (key, example) pairs of a split generator; logs '<split>: N examples in T' when it
  ends and, with `periodic`, the count so far every PROGRESS_SECONDS."""
  start = last = time.perf_counter()
  count = 0
  for count, example in enumerate(examples, 1):
    yield example
    now = time.perf_counter()
    if periodic and now - last >= PROGRESS_SECONDS:
      log(f'{split}: {count} examples so far ({count / (now - start):.1f}/s)')
      last = now
  log(f'{split}: {count} examples in {progress.duration(time.perf_counter() - start)}')


def _log_progress(builder: tfds.core.GeneratorBasedBuilder, log: Callable[[str], None]) -> None:
  """Makes `builder` log its listing of the examples (reading the annotations), then each split's
  count and time as it is written (TFDS writes the splits one after the other, each as its
  generator yields). Off a terminal (stdout or stderr redirected), where `datasets.prepare` turns
  TFDS's progress bars off, each split logs its count every PROGRESS_SECONDS instead."""
  on_terminal = sys.stdout.isatty() and sys.stderr.isatty()
  split_generators = builder._split_generators  # pylint: disable=protected-access

  def logged(dl_manager):
    log(f'{builder.name}: listing the examples of each split...')
    start = time.perf_counter()
    generators = split_generators(dl_manager)
    log(
      f'{builder.name}: listed {", ".join(generators)} in '
      f'{progress.duration(time.perf_counter() - start)}; writing them.'
    )
    return {
      split: _logged_split(split, examples, log, periodic=not on_terminal)
      for split, examples in generators.items()
    }

  builder._split_generators = logged  # pylint: disable=protected-access


def download_instructions(name: str) -> str:
  """What to download for dataset `name` and how to lay it out ('' for a generated one)."""
  return getattr(_builder_class(name), 'MANUAL_DOWNLOAD_INSTRUCTIONS', '') or ''


def build(
  name: str,
  *,
  config: str = 'default',
  data_dir: str = '',
  manual_dir: str = '',
  allow_missing: bool = False,
  log: Callable[[str], None] = print,
) -> str:
  """Builds `name`/`config` (array_record files) in `data_dir` (default $HPE_DATA_DIR or
  ~/tensorflow_datasets) from the downloads in `manual_dir`; logs the report. -> the dataset's
  directory. Raises DatasetError (unknown name or config, already built, nothing downloaded,
  images missing) or AnnotationError, each naming what to do."""
  builder_class = _builder_class(name)
  instructions = download_instructions(name)
  configs = builder_class.builder_configs
  if config not in configs:
    raise datasets.DatasetError(
      f'{name} has no config {config!r}; it has {", ".join(sorted(configs))}'
    )
  kwargs = (
    {'allow_missing': allow_missing} if issubclass(builder_class, base.PoseDatasetBuilder) else {}
  )
  builder = builder_class(
    config=config,
    data_dir=datasets.default_data_dir(data_dir),
    file_format='array_record',
    **kwargs,
  )
  if builder.is_prepared():
    raise datasets.DatasetError(
      f'{name}/{config} is already built in {builder.data_dir}; delete that directory to rebuild it'
    )
  expanded = os.path.expanduser(manual_dir)
  if instructions and not (os.path.isdir(expanded) and os.listdir(expanded)):
    problem = 'is empty' if os.path.isdir(expanded) else 'is not a directory'
    # One line: the instructions are a page (--help_download prints them).
    raise datasets.DatasetError(
      f'--manual_dir={manual_dir!r} {problem}; {name} is built from downloaded files: '
      f'`hpe-build-dataset {name} --help_download` says which and how to lay them out'
    )
  _log_progress(builder, log)
  try:
    datasets.prepare(
      builder, download_config=tfds.download.DownloadConfig(manual_dir=expanded or None)
    )
  except base.MissingImagesError as e:
    raise datasets.DatasetError(str(e)) from e
  report = getattr(builder, 'report', {})
  if report:
    with open(os.path.join(builder.data_dir, REPORT_FILE), 'w') as f:
      json.dump(report, f, indent=1)
    log(format_report(report))
  return builder.data_dir

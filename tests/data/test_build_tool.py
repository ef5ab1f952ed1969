"""hpe-build-dataset (hpe_jax.commands.build_dataset, hpe_jax.data.building): builds through the
command line, reports skips, fails with one clear message."""

import subprocess
import sys

from hpe_jax.data import building


def _build_dataset(*args):
  return subprocess.run(
    [sys.executable, '-m', 'hpe_jax.commands.build_dataset', *args],
    capture_output=True,
    text=True,
  )


def test_report_lists_written_and_every_skip_reason():
  report = {
    'train': {
      'counts': {'written': 2000, 'missing image': 8000},
      'examples': {'missing image': ['images/im02001.jpg']},
    }
  }
  assert building.format_report(report) == (
    'train: 2000 examples written\n  missing image: 8000 (e.g. images/im02001.jpg)'
  )


def test_builds_the_synthetic_dataset(tmp_path):
  result = _build_dataset('synthetic_humans', '--config=tiny', f'--data_dir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert 'Built synthetic_humans/tiny' in result.stdout
  assert list((tmp_path / 'synthetic_humans' / 'tiny').glob('*/dataset_info.json'))
  again = _build_dataset('synthetic_humans', '--config=tiny', f'--data_dir={tmp_path}')
  assert again.returncode == 2 and 'already built' in again.stderr


def test_unknown_dataset_is_named(tmp_path):
  result = _build_dataset('nonexistent', f'--data_dir={tmp_path}')
  assert result.returncode != 0 and "unknown dataset 'nonexistent'" in result.stderr


def test_unknown_config_is_named(tmp_path):
  result = _build_dataset('lsp', '--config=huge', f'--data_dir={tmp_path}')
  assert result.returncode != 0
  assert "lsp has no config 'huge'; it has default, small" in result.stderr


def test_missing_downloads_are_one_line(tmp_path):
  result = _build_dataset('mpii', f'--manual_dir={tmp_path / "nothing"}', f'--data_dir={tmp_path}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    f"error: --manual_dir='{tmp_path / 'nothing'}' is not a directory; mpii is built from "
    'downloaded files: `hpe-build-dataset mpii --help_download` says which and how to lay them out'
  ]

"""tools/build_dataset.py: builds through the CLI, reports skips, fails with one clear message."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tools'))

import build_dataset  # noqa: E402


def _run(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'build_dataset.py'), *args],
                        capture_output=True, text=True)


def test_report_lists_written_and_every_skip_reason():
  report = {'train': {'counts': {'written': 2000, 'missing image': 8000},
                      'examples': {'missing image': ['images/im02001.jpg']}}}
  assert build_dataset.format_report(report) == (
      'train: 2000 examples written\n'
      '  missing image: 8000 (e.g. images/im02001.jpg)')


def test_builds_the_synthetic_dataset(tmp_path):
  result = _run('synthetic_humans', '--config=tiny', f'--data_dir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert 'Built synthetic_humans/tiny' in result.stdout
  assert list((tmp_path / 'synthetic_humans' / 'tiny').glob('*/dataset_info.json'))
  again = _run('synthetic_humans', '--config=tiny', f'--data_dir={tmp_path}')
  assert 'already built' in again.stderr


def test_unknown_dataset_is_named(tmp_path):
  result = _run('nonexistent', f'--data_dir={tmp_path}')
  assert result.returncode != 0 and "unknown dataset 'nonexistent'" in result.stderr


def test_unknown_config_is_named(tmp_path):
  result = _run('lsp', '--config=huge', f'--data_dir={tmp_path}')
  assert result.returncode != 0 and "lsp has no config 'huge'; it has default, small" in result.stderr

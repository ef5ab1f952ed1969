"""The code is formatted as pyproject.toml's [tool.ruff] says: 2-space indents, 100 columns,
single quotes, sorted one-per-line imports, none unused. Fix a failure with
`ruff format . && ruff check --fix .`."""

import subprocess
import sys

from conftest import REPO


def _ruff(*args):  # ruff comes with the test extra: pip install -e ".[test]"
  return subprocess.run(
    [sys.executable, '-m', 'ruff', *args], cwd=REPO, capture_output=True, text=True
  )


def test_code_is_formatted():
  result = _ruff('format', '--check', '--diff', '.')
  assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_imports_sorted_and_used_and_lines_within_100_columns():
  result = _ruff('check', '--output-format=concise', '.')
  assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]

"""Every console script of pyproject.toml is a thin command: its module imports without jax
(the library waits for `main`), and its installed script's `--help` shows the module's docstring
and exits 0."""

from __future__ import annotations

import ast
import concurrent.futures
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
  SCRIPTS = tomllib.load(f)['project']['scripts']  # name -> 'module:function'

# Imports the command module, checks its entry point, says whether jax came along.
_IMPORT_CHECK = (
  'import importlib, sys\n'
  'module = importlib.import_module(sys.argv[1])\n'
  'assert callable(getattr(module, sys.argv[2])), sys.argv[2]\n'
  "print('jax imported' if 'jax' in sys.modules else 'no jax')\n"
)


def _installed(name: str) -> str | None:
  """The installed console script `name`: beside this interpreter, else on PATH."""
  path = os.path.join(sysconfig.get_path('scripts'), name)
  return path if os.path.isfile(path) else shutil.which(name)


def _check(name: str) -> dict:
  """Runs the import check and the installed script's --help of console script `name`."""
  module, function = SCRIPTS[name].split(':')
  imported = subprocess.run(
    [sys.executable, '-c', _IMPORT_CHECK, module, function],
    capture_output=True,
    text=True,
    timeout=120,
  )
  script = _installed(name)
  helped = (
    subprocess.run([script, '--help'], capture_output=True, text=True, timeout=120)
    if script
    else None
  )
  return {'imported': imported, 'script': script, 'help': helped}


@functools.cache
def _results() -> dict[str, dict]:
  """Every command checked once, a few at a time (each is a fresh interpreter)."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    return dict(zip(SCRIPTS, pool.map(_check, SCRIPTS)))


def _docstring_first_line(module: str) -> str:
  """The first line of `module`'s docstring, read from its source (importing it is the test)."""
  spec = importlib.util.find_spec(module)
  assert spec and spec.origin, f'no module {module}'
  with open(spec.origin) as f:
    source = f.read()
  return ast.get_docstring(ast.parse(source)).splitlines()[0]


def test_the_scripts_are_declared():
  assert {'hpe-train', 'hpe-evaluate', 'hpe-predict', 'hpe-build-dataset'} <= set(SCRIPTS)


@pytest.mark.parametrize('name', sorted(SCRIPTS))
def test_command_imports_without_jax(name):
  result = _results()[name]['imported']
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == 'no jax', f'{SCRIPTS[name]} imports jax at import time'


@pytest.mark.parametrize('name', sorted(SCRIPTS))
def test_installed_script_help_shows_the_docstring(name):
  result = _results()[name]
  assert result['script'], (
    f'{name} is not installed: pip install --no-deps -e . (re)writes the console scripts'
  )
  helped = result['help']
  assert helped.returncode == 0, helped.stderr[-3000:]
  first_line = _docstring_first_line(SCRIPTS[name].split(':')[0])
  assert first_line in helped.stdout, helped.stdout[:1000]
  # absl lists the flags of the module it runs as __main__: cli.run lends it the command's.
  assert '\n  --' in helped.stdout.partition('\nflags:\n')[2], helped.stdout

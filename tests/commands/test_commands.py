"""Every console script of pyproject.toml is a thin command: its module imports without jax
(the library waits for `main`), and its installed script's `--help` shows the module's docstring
and exits 0; so do `python -m hpe_jax.commands.X`, the `python -m hpe_jax.main` alias of hpe-train
and the developer tools (`python tools/X.py`). The commands live in hpe_jax/commands/, each named
as its script; the library imports nothing from tools/."""

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

from conftest import REPO
import pytest

with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
  SCRIPTS = tomllib.load(f)['project']['scripts']  # name -> 'module:function'

# The user commands: hpe_jax/commands/<name>.py, console script hpe-<name> (_ as -).
COMMANDS = sorted(
  name.removesuffix('.py')
  for name in os.listdir(os.path.join(REPO, 'hpe_jax', 'commands'))
  if name.endswith('.py') and name != '__init__.py'
)
# The developer tools: tools/<name>.py, run as `python tools/<name>.py` (not installed).
TOOLS = sorted(
  name.removesuffix('.py')
  for name in os.listdir(os.path.join(REPO, 'tools'))
  if name.endswith('.py') and name != '__init__.py'
)

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


def _check(module: str, function: str, command: list[str] | None) -> dict:
  """Runs the import check of `module` (from the repository root, where tools/ imports) and
  `command --help` (None: not installed)."""
  imported = subprocess.run(
    [sys.executable, '-c', _IMPORT_CHECK, module, function],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=REPO,
  )
  helped = (
    subprocess.run([*command, '--help'], capture_output=True, text=True, timeout=120, cwd=REPO)
    if command
    else None
  )
  return {'imported': imported, 'script': command and command[-1], 'help': helped}


def _checks() -> dict[str, tuple]:
  """What to check, by test id: each console script, `python -m` of each command module and of
  the alias, and each developer tool."""
  checks = {}
  for name, entry in SCRIPTS.items():
    script = _installed(name)
    checks[name] = (*entry.split(':'), [script] if script else None)
  for name in COMMANDS:
    module = f'hpe_jax.commands.{name}'
    checks[f'-m {module}'] = (module, 'run', [sys.executable, '-m', module])
  checks['-m hpe_jax.main'] = ('hpe_jax.main', 'run', [sys.executable, '-m', 'hpe_jax.main'])
  for name in TOOLS:
    command = [sys.executable, os.path.join(REPO, 'tools', f'{name}.py')]
    checks[f'tools/{name}.py'] = (f'tools.{name}', 'run', command)
  return checks


CHECKS = _checks()


@functools.cache
def _results() -> dict[str, dict]:
  """Every command checked once, a few at a time (each is a fresh interpreter)."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    return dict(zip(CHECKS, pool.map(lambda check: _check(*check), CHECKS.values())))


def _docstring_first_line(module: str) -> str:
  """The first line of `module`'s docstring, read from its source (importing it is the test)."""
  spec = importlib.util.find_spec(module)
  assert spec and spec.origin, f'no module {module}'
  with open(spec.origin) as f:
    source = f.read()
  return ast.get_docstring(ast.parse(source)).splitlines()[0]


def test_the_scripts_are_declared():
  assert {'hpe-train', 'hpe-evaluate', 'hpe-predict', 'hpe-build-dataset'} <= set(SCRIPTS)


def test_every_command_is_its_console_script():
  """hpe-X runs hpe_jax/commands/X.py's `run` (X with _ for -), and nothing else is installed."""
  assert SCRIPTS == {
    f'hpe-{name.replace("_", "-")}': f'hpe_jax.commands.{name}:run' for name in COMMANDS
  }
  assert {'train', 'evaluate', 'predict', 'analyze', 'export', 'study'} <= set(COMMANDS)
  assert {'benchmark', 'benchmark_pipeline', 'compare_peer', 'make_torch_fixtures'} <= set(TOOLS)


def test_the_library_imports_nothing_from_tools():
  importing = []
  for folder, _, files in os.walk(os.path.join(REPO, 'hpe_jax')):
    for name in files:
      if name.endswith('.py'):
        with open(os.path.join(folder, name)) as f:
          tree = ast.parse(f.read())
        for node in ast.walk(tree):
          modules = (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or '']
            if isinstance(node, ast.ImportFrom)
            else []
          )
          if any(module.split('.')[0] == 'tools' for module in modules):
            importing.append(os.path.relpath(os.path.join(folder, name), REPO))
  assert not importing, f'the library imports developer tools: {importing}'


@pytest.mark.parametrize('name', CHECKS)
def test_command_imports_without_jax(name):
  result = _results()[name]['imported']
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == 'no jax', f'{CHECKS[name][0]} imports jax at import time'


@pytest.mark.parametrize('name', CHECKS)
def test_installed_script_help_shows_the_docstring(name):
  result = _results()[name]
  assert result['script'], (
    f'{name} is not installed: pip install --no-deps -e . (re)writes the console scripts'
  )
  helped = result['help']
  assert helped.returncode == 0, helped.stderr[-3000:]
  module = CHECKS[name][0]
  # The alias runs hpe-train: its --help is train's.
  first_line = _docstring_first_line(
    'hpe_jax.commands.train' if module == 'hpe_jax.main' else module
  )
  assert first_line in helped.stdout, helped.stdout[:1000]
  # absl lists the flags of the module it runs as __main__: cli.run lends it the command's.
  assert '\n  --' in helped.stdout.partition('\nflags:\n')[2], helped.stdout

"""JAX's persistent compilation cache, on for every command: where it goes, off, a directory that
cannot be used, and a second `predict` that reads its step back instead of compiling it."""

import os
import subprocess
import sys
import time

from conftest import REPO
from conftest import photo_path
import jax
import pytest

from hpe_jax import compile_cache


def test_the_default_directory_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv('HPE_JAX_CACHE_DIR', str(tmp_path / 'mine'))
  assert compile_cache.default_dir() == str(tmp_path / 'mine')
  monkeypatch.delenv('HPE_JAX_CACHE_DIR')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'jax'))
  assert compile_cache.default_dir() == str(tmp_path / 'jax')
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compile_cache.default_dir() == str(tmp_path / 'xdg' / 'hpe_jax' / 'jax')


def test_a_directory_that_cannot_be_made_is_a_warning_not_an_error(capsys):
  before = jax.config.jax_compilation_cache_dir
  assert compile_cache.enable('/dev/null/cache') is None
  assert jax.config.jax_compilation_cache_dir == before
  warning = capsys.readouterr().err
  assert warning.startswith('warning: the compilation cache /dev/null/cache cannot be used')
  assert '--compile_cache=DIR' in warning and warning.count('\n') == 1


def _predict(workdir, out_dir, image, *flags, env=None):
  command = [sys.executable, '-m', 'hpe_jax.commands.predict', f'--workdir={workdir}']
  command += [f'--out_dir={out_dir}', *flags, image]
  environment = {**os.environ, 'JAX_DEBUG_LOG_MODULES': 'jax._src.compiler', **(env or {})}
  start = time.perf_counter()
  process = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=environment)
  assert process.returncode == 0, process.stderr
  return process.stderr, time.perf_counter() - start


@pytest.fixture(scope='module')
def image(tmp_path_factory):
  return photo_path(str(tmp_path_factory.mktemp('photo')))


@pytest.mark.slow
def test_a_second_predict_reads_the_compiled_step_back(tiny_depth_run, image, tmp_path):
  cache = tmp_path / 'cache'
  # Every step is worth caching here: the tiny model compiles in a fraction of a second.
  env = {'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  first, first_s = _predict(tiny_depth_run, tmp_path, image, f'--compile_cache={cache}', env=env)
  assert "PERSISTENT COMPILATION CACHE MISS for 'jit_predict_step'" in first
  assert any(name.startswith('jit_predict_step') for name in os.listdir(cache))
  second, second_s = _predict(tiny_depth_run, tmp_path, image, f'--compile_cache={cache}', env=env)
  assert "cache hit for 'jit_predict_step'" in second and 'MISS' not in second
  print(f'predict: {first_s:.2f} s compiling, {second_s:.2f} s from the cache')


@pytest.mark.slow
def test_off_compiles_every_time_and_writes_nothing(tiny_depth_run, image, tmp_path):
  cache = tmp_path / 'cache'
  env = {'HPE_JAX_CACHE_DIR': str(cache), 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  log, _ = _predict(tiny_depth_run, tmp_path, image, '--compile_cache=off', env=env)
  assert 'to persistent compilation cache' not in log  # jax writes nothing
  assert not cache.exists()

"""JAX's persistent compilation cache: a step compiled once is read back, not compiled again, by
the next process that needs it (a second `predict` or `evaluate`, a resumed run, the next cell of a
study).

  compile_cache.enable()                   # default_dir()
  compile_cache.enable('/scratch/jax')     # another directory

Every command enables it (hpe_jax.cli: --compile_cache=DIR, or off). jax keys each entry by the
program, the compiler options, the devices and jax's version, so a stale entry is never used.
"""

from __future__ import annotations

import os
import sys

# jax's options: read from the environment (upper case) when jax starts, through jax.config after.
_OPTIONS = {
  'jax_compilation_cache_dir': None,  # the directory
  # jax's default (1 s) leaves out a small model's predict step, whose compilation is most of a
  # short command's wait; below this, steps are not worth the disk.
  'jax_persistent_cache_min_compile_time_secs': 0.25,
}


def default_dir() -> str:
  """$HPE_JAX_CACHE_DIR, else jax's own $JAX_COMPILATION_CACHE_DIR, else
  $XDG_CACHE_HOME/hpe_jax/jax, else ~/.cache/hpe_jax/jax."""
  for variable in ('HPE_JAX_CACHE_DIR', 'JAX_COMPILATION_CACHE_DIR'):
    if os.environ.get(variable):
      return os.environ[variable]
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'hpe_jax', 'jax')


def enable(directory: str | None = None) -> str | None:
  """Turns the cache on in `directory` (None: `default_dir()`), created if need be.

  Returns:
    The directory, or None when it cannot be created or written: the cache only saves time, so
    a read-only home is a warning on stderr, not an error.
  """
  directory = os.path.abspath(os.path.expanduser(directory or default_dir()))
  try:
    os.makedirs(directory, exist_ok=True)
    writable = os.access(directory, os.W_OK)
  except OSError as e:
    writable, reason = False, e.strerror or str(e)
  else:
    reason = 'not writable'
  if not writable:
    print(
      f'warning: the compilation cache {directory} cannot be used ({reason}): every step is '
      'compiled anew; choose another with --compile_cache=DIR (or $HPE_JAX_CACHE_DIR)',
      file=sys.stderr,
      flush=True,
    )
    return None
  for option, value in {**_OPTIONS, 'jax_compilation_cache_dir': directory}.items():
    if value is None or option != 'jax_compilation_cache_dir' and option.upper() in os.environ:
      continue  # the user's own setting of jax's option stands
    if 'jax' in sys.modules:
      sys.modules['jax'].config.update(option, value)
    else:  # jax stays unimported for the commands that never need it
      os.environ[option.upper()] = str(value)
  return directory

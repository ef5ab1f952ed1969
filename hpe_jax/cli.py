"""What every command shares: flag parsing that reports a bad config in one line, the way our
errors end a command (`error: ...` on stderr, exit 2 or the error's own code), and a `--help` that
shows the command's docstring and flags however it was started.

  def main(args: list[str]) -> None: ...       # the command's work, given its positional args
  def run() -> None:
    cli.run(main)
  if __name__ == '__main__':
    run()

Commands (hpe_jax/commands/*.py, and the developer tools tools/*.py) define their flags at import
and import the library lazily inside `main`, so that `--help` and flag errors stay fast; library
modules define no flags. A command starts as its installed console script (hpe-build-dataset:
hpe_jax/commands/build_dataset.py), as `python -m hpe_jax.commands.build_dataset`, as `python -m
hpe_jax.main` (the alias of hpe-train) or, for a developer tool, as `python tools/X.py`: the same
`run()` in each case.
"""

from __future__ import annotations

import os
import sys
from typing import Callable
from typing import NoReturn

from absl import app
from absl import flags
from absl import logging
import ml_collections

from hpe_jax import compile_cache
from hpe_jax import errors

# absl's help flags: they print the usage and exit 1 (absl's convention); asking is no error.
_HELP_FLAGS = frozenset({'help', 'helpshort', 'helpfull', 'helpxml', '?'})

# Every command's: the one flag this module defines, since every command compiles through it.
_COMPILE_CACHE = flags.DEFINE_string(
  'compile_cache',
  None,
  'Where JAX keeps compiled steps for the next command (default: $HPE_JAX_CACHE_DIR, else '
  '$JAX_COMPILATION_CACHE_DIR, else ~/.cache/hpe_jax/jax); off: compile every time.',
)


class StepParser(flags.ArgumentParser):
  """A --step flag's value: a saved step number, best (train.keep_best's), or none for the
  newest (`default_config.parse_step`).

    _STEP = flags.DEFINE(cli.StepParser(), 'step', None, 'The saved step (default: the newest).')
  """

  def parse(self, argument):
    from hpe_jax import default_config  # pylint: disable=g-import-not-at-top  (a fast --help)

    return default_config.parse_step(argument)

  def flag_type(self) -> str:
    return 'step number or best'


def exit_with_error(message: str, code: int = 2) -> NoReturn:
  """Ends a command with `error: message` on stderr and exit `code` (2: a usage error)."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


def report(error: errors.HpeError) -> NoReturn:
  """Ends a command with `error`'s message and its exit code."""
  if error.last_words:
    # Library threads may still be printing (Orbax's failed writers): stderr goes quiet for them
    # first, so that this line is the last one, then the process ends without its shutdown. The
    # line starts on a line of its own: a thread may have stopped in the middle of one.
    sys.stdout.flush()
    sys.stderr.flush()
    stderr = os.dup(2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    os.write(stderr, f'\nerror: {error}\n'.encode())
    os._exit(error.exit_code)
  exit_with_error(str(error), error.exit_code)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, where a bad flag, config arg, config field or config file path ends the
  command with one line on stderr and exit code 2 instead of absl's traceback, and `--help`
  exits 0."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    exit_with_error(_innermost_error(e) or str(e).splitlines()[0])
  except (KeyError, AttributeError) as e:  # ml_collections' report of an unknown override
    field = str(e.args[0]).strip('\'"')
    exit_with_error(
      f'a --config.* override names no config field {field!r} (the fields and '
      'their defaults are in hpe_jax/default_config.py)'
    )
  except SystemExit as e:
    if e.code == 1 and _asks_for_help(argv):
      sys.exit(0)
    raise
  # A config file flag (ml_collections' has a config_filename) whose file did not load holds no
  # ConfigDict; other commands' --config (hpe-build-dataset's builder config) is a plain string.
  if (
    'config' in flags.FLAGS
    and hasattr(flags.FLAGS['config'], 'config_filename')
    and not isinstance(flags.FLAGS.config, ml_collections.ConfigDict)
  ):
    path = flags.FLAGS['config'].serialize().partition('=')[2]
    exit_with_error(f'cannot load --config={path}: no such file (configs/ holds the provided ones)')
  return remaining


def _asks_for_help(argv: list[str]) -> bool:
  """Whether the command line holds one of absl's help flags (before a `--`)."""
  for arg in argv[1:]:
    if arg == '--':
      return False
    if arg.startswith('-') and arg.lstrip('-').partition('=')[0] in _HELP_FLAGS:
      return True
  return False


def _innermost_error(error: BaseException | None) -> str | None:
  """The message of the first HpeError raised below `error` (ml_collections re-raises a config
  file's ConfigError with the traceback in its message; the original has the line)."""
  message = None
  while error is not None:
    if isinstance(error, errors.HpeError):
      message = str(error)
    error = error.__cause__ or error.__context__
  return message


def lend_usage(module_name: str) -> None:
  """Makes absl's usage text (`--help`, usage errors) that of the command `module_name`.

  absl takes the text from sys.modules['__main__'].__doc__ and lists the flags of the module at
  sys.argv[0]; a console-script wrapper or the hpe_jax/main.py alias is `__main__` there, with
  neither the docstring nor the flags. Nothing to do when the command itself runs as `__main__`.
  """
  for module in {module_name, sys.argv[0]}:  # --help lists it with the command's own flags
    flags.FLAGS.register_key_flag_for_module(module, flags.FLAGS['compile_cache'])
  if module_name == '__main__' or module_name not in sys.modules:
    return
  main_module = sys.modules.get('__main__')
  if main_module is not None:
    main_module.__doc__ = sys.modules[module_name].__doc__
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(
  main: Callable[[list[str]], None], *, required: tuple[str, ...] = (), positional: bool = False
) -> NoReturn:
  """Runs a command: parses the flags (`required` ones must be given), calls `main` with the
  positional arguments (refused unless `positional`), and turns an HpeError or a usage error
  (app.UsageError, e.g. wrong positional arguments) into its one line. Library logging (Orbax,
  TFDS) is kept to errors: they log every read and save."""
  for name in required:
    flags.mark_flag_as_required(name)
  lend_usage(main.__module__)

  def command(argv: list[str]) -> None:
    logging.set_verbosity(logging.ERROR)
    if _COMPILE_CACHE.value != 'off':
      compile_cache.enable(_COMPILE_CACHE.value)
    try:
      if len(argv) > 1 and not positional:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
      main(argv[1:])
    except errors.HpeError as e:
      report(e)
    except app.UsageError as e:  # as a bad flag: one line, not absl's page of usage
      exit_with_error(f'{e} (--help shows the usage)')

  app.run(command, flags_parser=parse_flags)

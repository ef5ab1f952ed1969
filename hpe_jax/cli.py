"""What every command shares: flag parsing that reports a bad config in one line, and the way
our errors end a command (`error: ...` on stderr, exit 2 or the error's own code).

  def main(args: list[str]) -> None: ...       # the command's work, given its positional args
  if __name__ == '__main__':
    cli.run(main)

Commands (hpe_jax.main, .evaluate, .predict, hpe_jax.tools.*) define their flags at import and
import the library lazily inside `main`, so that `--help` and flag errors stay fast; library
modules define no flags.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

from absl import app
from absl import flags
from absl import logging
import ml_collections

from hpe_jax import errors


def exit_with_error(message: str, code: int = 2) -> NoReturn:
  """Ends a command with `error: message` on stderr and exit `code` (2: a usage error)."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


def report(error: errors.HpeError) -> NoReturn:
  """Ends a command with `error`'s message and its exit code."""
  if error.last_words:
    print(f'error: {error}', file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(error.exit_code)
  exit_with_error(str(error), error.exit_code)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, where a bad flag, config arg, config field or config file path ends the
  command with one line on stderr and exit code 2 instead of absl's traceback."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    exit_with_error(_innermost_error(e) or str(e).splitlines()[0])
  except (KeyError, AttributeError) as e:  # ml_collections' report of an unknown override
    field = str(e.args[0]).strip('\'"')
    exit_with_error(f'a --config.* override names no config field {field!r} (the fields and '
                    'their defaults are in hpe_jax/default_config.py)')
  if 'config' in flags.FLAGS and not isinstance(flags.FLAGS.config, ml_collections.ConfigDict):
    path = flags.FLAGS['config'].serialize().partition('=')[2]
    exit_with_error(f'cannot load --config={path}: no such file (configs/ holds the provided '
                    'ones)')
  return remaining


def _innermost_error(error: BaseException | None) -> str | None:
  """The message of the first HpeError raised below `error` (ml_collections re-raises a config
  file's ConfigError with the traceback in its message; the original has the line)."""
  message = None
  while error is not None:
    if isinstance(error, errors.HpeError):
      message = str(error)
    error = error.__cause__ or error.__context__
  return message


def run(main: Callable[[list[str]], None], *, required: tuple[str, ...] = (),
        positional: bool = False) -> NoReturn:
  """Runs a command: parses the flags (`required` ones must be given), calls `main` with the
  positional arguments (refused unless `positional`), and turns an HpeError into its one line.
  Library logging (Orbax, TFDS) is kept to errors: they log every read and save."""
  for name in required:
    flags.mark_flag_as_required(name)

  def command(argv: list[str]) -> None:
    if len(argv) > 1 and not positional:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.ERROR)
    try:
      main(argv[1:])
    except errors.HpeError as e:
      report(e)

  app.run(command, flags_parser=parse_flags)

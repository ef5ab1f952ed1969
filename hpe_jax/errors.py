"""The base of every error a user can fix: commands end with its message as one line."""

from __future__ import annotations


class HpeError(Exception):
  """A problem the user can fix (a bad config field, missing data, an unusable workdir, ...).

  Its message names the file or field and says what to do; `hpe_jax.cli` prints it as one line
  and exits with `exit_code`. `last_words` asks the command to exit without the interpreter's
  shutdown, for errors after which library threads would print more (Orbax's failed writers).
  """

  exit_code = 2
  last_words = False


class ConfigError(HpeError, ValueError):
  """A config field has a value that cannot work; the message names the field and the fix."""

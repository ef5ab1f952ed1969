"""Files written whole or not at all: through a temporary file beside them, renamed into place,
so that a reader (or the next run, after a kill or a full disk) finds the old file or the new
one, never part of one."""

from __future__ import annotations

import os
from typing import Callable


def replace_atomically(path: str, write: Callable[[str], None]) -> None:
  """Runs write(temporary path), then renames the temporary to `path`.

  Raises:
    OSError: from `write` or the rename; the temporary is removed and `path` left as it was.
  """
  temporary = f'{path}.tmp'
  try:
    write(temporary)
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` whole or not at all (`replace_atomically`)."""

  def write(temporary: str) -> None:
    with open(temporary, 'w') as f:
      f.write(text)

  replace_atomically(path, write)

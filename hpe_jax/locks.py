"""Advisory file locks (flock(2)): one run per workdir, one build per dataset directory.

The OS releases a lock when its process ends, however it ends, so a killed process never leaves
a stale lock behind. The lock file holds the holder's PID, for the message of whoever waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Callable


class LockHeld(RuntimeError):
  """Another process holds the lock; `pid` names it ('unknown' if it wrote none)."""

  def __init__(self, path: str, pid: str):
    super().__init__(f'{path} is held by PID {pid}')
    self.pid = pid


@contextlib.contextmanager
def exclusive(path: str, *, on_wait: Callable[[str], None] | None = None):
  """Holds the lock file `path` for the block.

  If another process holds it: raises LockHeld, or with `on_wait` calls it with the holder's PID
  and waits for the lock.
  Raises:
    LockHeld: see above.
    OSError: the lock file cannot be created or written.
  """
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or 'unknown'
      if on_wait is None:
        raise LockHeld(path, holder) from None
      on_wait(holder)
      fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock

"""Advisory file locks (flock(2)): one run per workdir, one build per dataset directory, one
hpe-predict per output directory (a lock on the directory itself: `exclusive_directory`).

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


def _holder(fd: int) -> str:
  """The PID holding a flock on `fd`'s file, from /proc/locks (Linux); 'unknown' elsewhere."""
  stat = os.fstat(fd)
  device = f'{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}'
  try:
    with open('/proc/locks') as f:
      for line in f:
        fields = line.split()
        if 'FLOCK' in fields and device in fields:
          return fields[fields.index(device) - 1]
  except OSError:
    pass
  return 'unknown'


@contextlib.contextmanager
def exclusive_directory(path: str):
  """Holds a lock on the directory `path` itself for the block: it creates no file in it (one
  writer per output directory, whatever else the directory holds).

  Raises:
    LockHeld: another process (or another open of it in this one) holds it; `pid` from
      /proc/locks where the OS lists it, else 'unknown'.
    OSError: `path` is not a directory that can be opened.
  """
  fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise LockHeld(path, _holder(fd)) from None
    yield
  finally:
    os.close(fd)  # releases the lock

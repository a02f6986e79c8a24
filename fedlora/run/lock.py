"""`<workdir>/.lock`: one live run per workdir (fcntl.flock, the holder's pid inside).

The kernel releases a flock when its process dies, so a lock left by a killed run never blocks.
"""
from __future__ import annotations

import fcntl
import os

from fedlora.run.errors import RunError

LOCK_FILE = ".lock"


class WorkdirLock:
  """`with WorkdirLock(workdir): ...` holds the workdir; a second holder gets a RunError naming the pid."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = None

  def acquire(self) -> "WorkdirLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      pid = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
      os.close(fd)
      raise RunError(f"workdir {os.path.dirname(self.path)!r} is in use by another run (pid {pid}, "
                     f"lock {self.path}); wait for it to finish or stop it, or use another "
                     "--config.workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()

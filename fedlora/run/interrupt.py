"""Defer Ctrl-C while a checkpoint (or a metrics line) is being written, so the newest step is whole."""
from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred_sigint():
  """SIGINT inside the block is remembered and raised as KeyboardInterrupt when the block ends."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  got = []
  old = signal.signal(signal.SIGINT, lambda *_: got.append(1))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, old)
  if got:
    raise KeyboardInterrupt

"""What the processes of a multi-host run agree on: process 0 decides and writes files, the others
follow. Every function is a no-op (or the identity) for a single process, so single-process runs do
exactly what they did before; with several processes each is a collective (every process must call
it, in the same order).
"""
from __future__ import annotations

import jax
import numpy as np


def is_lead() -> bool:
  """True on process 0 (and in a single-process run): the one process that writes files."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process got here (e.g. after process 0 moved files the others will read)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def all_true(flag: bool) -> bool:
  """True when `flag` is true on every process (so all take the same branch)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  flags = multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))
  return bool(np.all(np.asarray(flags)))


def broadcast_text(text: str | None) -> str | None:
  """Process 0's `text` (None included) on every process, byte for byte (e.g. a file only process 0
  reads, so a recorded choice is applied identically everywhere)."""
  if jax.process_count() == 1:
    return text
  from jax.experimental import multihost_utils
  raw = np.frombuffer(text.encode(), np.uint8) if text is not None else np.zeros((0,), np.uint8)
  n = int(np.asarray(multihost_utils.broadcast_one_to_all(
      np.asarray([raw.size if text is not None else -1], np.int32)))[0])
  if n < 0:
    return None
  buf = np.zeros((max(n, 1),), np.uint8)
  if is_lead():
    buf[:n] = raw
  out = np.asarray(multihost_utils.broadcast_one_to_all(buf))[:n]
  return out.astype(np.uint8).tobytes().decode()


def gather_rows(values: np.ndarray) -> np.ndarray:
  """`[P, ...]`: every process's `values` (same shape and dtype on all), in process order."""
  values = np.asarray(values)
  if jax.process_count() == 1:
    return values[None]
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(values))

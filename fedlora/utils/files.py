"""Atomic file writes: a reader sees the old content or the new, never a blank or half-written file."""
from __future__ import annotations

import json
import os


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` via `<path>.tmp` + fsync + os.replace (atomic on POSIX)."""
  tmp = f"{path}.tmp"
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, obj, indent: int = 2) -> None:
  write_atomic(path, json.dumps(obj, indent=indent) + "\n")

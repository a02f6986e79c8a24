"""Per-round metrics as JSON lines in `<workdir>/metrics.jsonl`: append-only, never rewritten.

Each round appends one object with a "round" key (flushed and fsynced). A resumed run first appends a
marker `{"resume_from_round": t}`: records of rounds > t written before it belong to the abandoned
continuation and are dropped by readers — by round number, never by position. Readers keep the last
record per round. A blank or corrupt line (e.g. torn by a crash) is reported with its file and line
number and skipped; it never causes anything to be rewritten or later lines to be lost.
"""
from __future__ import annotations

import json
import os

import numpy as np

from fedlora.run.errors import warn
from fedlora.run.interrupt import deferred_sigint

RESUME_KEY = "resume_from_round"


def _plain(x):
  if isinstance(x, dict):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if hasattr(x, "tolist"):
    return np.asarray(x).tolist()
  return x


class MetricsWriter:
  """Appends one JSON object per round; on resume appends a `resume_from_round` marker first."""

  def __init__(self, workdir: str, resume_round: int):
    self.path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
      self._append({RESUME_KEY: int(resume_round)})

  def _append(self, obj: dict) -> None:
    line = json.dumps(_plain(obj)) + "\n"
    with deferred_sigint(), open(self.path, "a+b") as f:
      if f.tell() > 0:  # a torn last line (crash mid-write) must not swallow this record
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
          line = "\n" + line
      f.write(line.encode())
      f.flush()
      os.fsync(f.fileno())

  def write(self, record: dict) -> None:
    self._append(record)


def read_metrics(path: str, report: bool = True) -> list[dict]:
  """The valid records of a metrics.jsonl, one per round (the last written), sorted by round.

  Records after a `resume_from_round` marker replace the abandoned rounds > its round; blank or
  corrupt lines are skipped (reported as a warning naming the file and line when `report`)."""
  if not os.path.exists(path):
    return []
  by_round: dict[int, dict] = {}
  bad = []
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      try:
        obj = json.loads(raw.decode("utf-8"))
      except (UnicodeDecodeError, json.JSONDecodeError):
        bad.append(lineno)
        continue
      if isinstance(obj, dict) and isinstance(obj.get(RESUME_KEY), int):
        by_round = {r: v for r, v in by_round.items() if r <= obj[RESUME_KEY]}
      elif isinstance(obj, dict) and isinstance(obj.get("round"), int):
        by_round[obj["round"]] = obj
      else:
        bad.append(lineno)
  if bad and report:
    warn(f"{path}: skipped {len(bad)} blank or corrupt line(s) (line {', '.join(map(str, bad[:10]))}"
         f"{', ...' if len(bad) > 10 else ''}); every other record is kept")
  return [by_round[r] for r in sorted(by_round)]

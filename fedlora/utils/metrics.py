"""Per-round metrics as JSON lines in `<workdir>/metrics.jsonl` (one object per round), resume-safe."""
from __future__ import annotations

import json
import os

import numpy as np


def _plain(x):
  if isinstance(x, dict):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if hasattr(x, "tolist"):
    return np.asarray(x).tolist()
  return x


class MetricsWriter:
  """Appends one JSON object per round; on resume keeps only rounds <= the restored round."""

  def __init__(self, workdir: str, resume_round: int):
    self.path = os.path.join(workdir, "metrics.jsonl")
    kept = [r for r in read_metrics(self.path) if r["round"] <= resume_round]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      for r in kept:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(_plain(record)) + "\n")


def read_metrics(path: str) -> list[dict]:
  """All complete records of a metrics.jsonl (a torn last line from a crash is ignored)."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return out

"""Tracker 'jsonl': `<workdir>/metrics.jsonl`, the source of truth (fedlora/utils/metrics.py).

Every key of each round's record, one JSON object per line, append-only; a resumed run first appends
`{"resume_from_round": start}` so readers drop the rounds after `start` written before it.
"""
from __future__ import annotations

from fedlora.tracking import TRACKERS, Spec
from fedlora.utils.metrics import MetricsWriter


class JsonlTracker:
  def __init__(self, workdir: str, start: int, config: dict):
    self.writer = MetricsWriter(workdir, start)

  def write(self, record: dict) -> None:
    self.writer.write(record)

  def close(self) -> None:
    pass


TRACKERS.register("jsonl")(Spec(open=JsonlTracker, entries=("metrics.jsonl",)))

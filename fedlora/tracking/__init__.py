"""Where each round's record goes: one writer interface, trackers found by name (`config.tracking`).

`config.tracking` is a comma-separated list of registered trackers, `'jsonl'` always among them:
`<workdir>/metrics.jsonl` is the source of truth (summary.json, resume and the other trackers'
rebuilds read it); the others mirror its numbers where labs look.

| name        | writes                                                          | needs             |
|-------------|-----------------------------------------------------------------|-------------------|
| jsonl       | `metrics.jsonl` (fedlora/utils/metrics.py), every key of a record | -               |
| tensorboard | `tensorboard/events.out.tfevents.*`: each scalar at step = round, the config as hparams | tensorboard |
| wandb       | a W&B run (offline unless WANDB_MODE is set), its id in `wandb_run.json` | `pip install wandb` |

A tracker is one file here that registers a `Spec` with `TRACKERS`:

  open(workdir, start, config) -> Tracker   start: the round this run resumes after (0: fresh);
                                             config: the resolved config, flat {'a.b': value}
  missing() -> str | None                    why it cannot run here (a package not installed),
                                             checked when the config is validated
  entries                                    the names it writes at the workdir's top level

A `Tracker` has `write(record)` (one round's record, `record['round']` its step; called once per
round in round order, by process 0 only) and `close()`. Records of rounds <= `start` were written
by an earlier process; a round > `start` may have been written before an interruption too (the
run resumes from the last checkpoint), so a tracker must show each round once however it resumes.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import numpy as np

from fedlora.registry import Registry
from fedlora.section import ConfigError

TRACKERS = Registry("tracker", "fedlora.tracking", "tracking")
SOURCE = "jsonl"  # the tracker every run has: metrics.jsonl


class Tracker(Protocol):
  def write(self, record: dict) -> None: ...
  def close(self) -> None: ...


class Spec(NamedTuple):
  """What a tracker file registers (module docstring)."""
  open: Callable[[str, int, dict], Tracker]
  missing: Callable[[], "str | None"] = lambda: None
  entries: tuple = ()


def tracker_names(value) -> tuple:
  """The tracker names of a `config.tracking` value, validated: a ConfigError names the value, the
  bad name and the registered ones (or the package a tracker needs)."""
  allowed = TRACKERS.names()
  what = (f"a comma-separated list of {allowed} that includes {SOURCE!r} (metrics.jsonl, the "
          "source of truth), e.g. 'jsonl,tensorboard'")
  if not isinstance(value, str):
    raise ConfigError(f"config.tracking={value!r} is not allowed: {what}")
  names = tuple(n.strip() for n in value.split(","))
  for n in names:
    if n not in allowed:
      raise ConfigError(f"config.tracking={value!r} is not allowed: {n!r} is not a tracker; {what}")
  if len(set(names)) != len(names):
    raise ConfigError(f"config.tracking={value!r} is not allowed: a tracker is named twice; {what}")
  if SOURCE not in names:
    raise ConfigError(f"config.tracking={value!r} is not allowed: {SOURCE!r} is missing; {what}")
  for n in names:
    why = TRACKERS.get(n).obj.missing()
    if why:
      raise ConfigError(f"config.tracking={value!r} is not allowed here: tracker {n!r} {why}")
  return names


def workdir_entries() -> tuple:
  """Every top-level workdir entry a registered tracker writes."""
  return tuple(e for entry in TRACKERS.entries().values() for e in entry.obj.entries)


def scalars(record: dict) -> dict:
  """`{key: float}` of a record's numeric scalars (bools as 0/1; lists, strings and 'round' left
  out: 'round' is the step)."""
  out = {}
  for k, v in record.items():
    if k == "round":
      continue
    if isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)) or (
        isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "biuf"):
      out[k] = float(v)
  return out


class Trackers:
  """The trackers of one run, opened in the order named ('jsonl' first); `write` and `close` fan out."""

  def __init__(self, names, workdir: str, start: int, config: dict):
    names = tracker_names(names) if isinstance(names, str) else tuple(names)
    order = (SOURCE,) + tuple(n for n in names if n != SOURCE)
    self.trackers: list[Any] = []
    try:
      for n in order:
        self.trackers.append(TRACKERS.get(n).obj.open(workdir, int(start), dict(config)))
    except BaseException:
      self.close()
      raise

  def write(self, record: dict) -> None:
    for t in self.trackers:
      t.write(record)

  def close(self) -> None:
    """Closes every tracker (the first error raised after all were tried)."""
    first = None
    for t in reversed(self.trackers):
      try:
        t.close()
      except BaseException as e:  # noqa: BLE001 - close the others, then report
        first = first or e
    self.trackers = []
    if first is not None:
      raise first


__all__ = ["SOURCE", "Spec", "TRACKERS", "Tracker", "Trackers", "scalars", "tracker_names",
           "workdir_entries"]

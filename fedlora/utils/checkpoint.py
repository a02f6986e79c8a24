"""Orbax checkpoints of the whole run state (a PyTree of arrays), resumable bit-for-bit on any mesh.

Every random draw of a round is derived from `(seed, round)`, so restoring the state saved after round t
and continuing gives exactly the uninterrupted run. Each step holds two items: `state` (the PyTree) and
`run` (JSON: the config fingerprint and the round). Restoring:
- reads `run` first: a step written by another config is a fingerprint mismatch, named as such;
- restores `state` to host memory in the shapes and dtypes of a freshly initialised state of the new
  run (`like`), then places every leaf as `like`'s is placed (its sharding when committed, the default
  device otherwise), so a run saved on one mesh (1-D, 2-D, one device) resumes on any other;
- a step that cannot be read (corrupt or partial files) is reported, moved to
  `<workdir>/checkpoints_corrupt/` (kept, not deleted) and the previous step is tried. Multi-process:
  restoring is collective; when any process cannot read the step all treat it as corrupt, process 0
  alone moves it (and warns) and the others wait for the move (`fedlora.run.processes`).
Saving defers Ctrl-C until the step is complete, so the newest step is always whole.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from fedlora.run.errors import RunError, warn
from fedlora.run.fingerprint import describe_differences, differences, same_config
from fedlora.run.interrupt import deferred_sigint
from fedlora.run.processes import all_true, barrier, is_lead
from fedlora.section import Section, is_int


@dataclasses.dataclass(frozen=True)
class CheckpointConfig(Section):
  """Section `checkpoint`.

  every: save an orbax checkpoint every n rounds (and after the last)
  keep:  how many recent checkpoints to keep
  """
  SECTION = "checkpoint"
  every: int = 5
  keep: int = 2

  def check(self) -> None:
    for k in ("every", "keep"):
      self.need(is_int(getattr(self, k)) and getattr(self, k) >= 1, k, "an integer >= 1")


def _host(x):
  """Restore target of one leaf: host numpy of `x`'s shape and dtype (placed afterwards by `_place`)."""
  return np.zeros(np.shape(x), np.asarray(x).dtype if not isinstance(x, jax.Array) else x.dtype)


def _place(like, value):
  """`value` placed the way the fresh run placed `like`: same sharding for a committed jax.Array (any
  mesh), the default device (uncommitted, free to follow jit) otherwise, numpy for numpy."""
  if not isinstance(like, jax.Array):
    return value
  if getattr(like, "committed", True):
    return jax.device_put(value, like.sharding)
  return jax.numpy.asarray(value)


class Checkpointer:
  """`ocp.CheckpointManager` for one run folder (`<workdir>/checkpoints`), tagged with a fingerprint."""

  def __init__(self, workdir: str, keep: int, fingerprint: dict | None = None):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.keep = keep
    self.fingerprint = fingerprint
    self._mgr = self._open()

  def _open(self):
    return ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True))

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def save(self, step: int, state) -> None:
    run = {"round": int(step), "fingerprint": self.fingerprint}
    if jax.process_count() > 1:  # a process-local array (one device, e.g. a scalar the host made)
      # cannot be serialised by a multi-process save; it is the same on every process: save it as numpy
      state = jax.tree_util.tree_map(
          lambda x: np.asarray(x) if isinstance(x, jax.Array) and x.is_fully_addressable else x, state)
    with deferred_sigint():
      self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   run=ocp.args.JsonSave(run)))
      self._mgr.wait_until_finished()

  def _check_fingerprint(self, step: int) -> None:
    meta = self._mgr.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))["run"]
    fp = meta.get("fingerprint") or {}
    if self.fingerprint is not None and not same_config(fp, self.fingerprint):
      diff = differences(fp.get("items", {}), self.fingerprint["items"])
      raise RunError(
          f"checkpoint {self.directory}/{step} was written by a different config (fingerprint "
          f"{fp.get('hash')} != {self.fingerprint['hash']}); differing keys (checkpoint -> this "
          f"command): {describe_differences(diff)}. Use a new --config.workdir, or the config that "
          "wrote it")

  def restore(self, step: int, like):
    """The state of `step`, restored onto the shapes/dtypes/shardings of `like` (a fresh state of
    this run). RunError for a step of another config; other exceptions for unreadable files."""
    if self.fingerprint is not None:
      self._check_fingerprint(step)
    target = jax.tree_util.tree_map(_host, like)
    try:
      out = self._mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except (ValueError, KeyError, TypeError) as e:
      if self.fingerprint is None:
        raise RunError(f"checkpoint {self.directory}/{step} does not match this run's state "
                       f"({type(e).__name__}: {str(e)[:300]}); use a new --config.workdir") from e
      raise
    return jax.tree_util.tree_map(_place, like, out["state"])

  def restore_latest(self, like) -> tuple[int, object]:
    """`(step, state)` of the newest readable step, `(0, like)` when there is none.

    An unreadable step is reported, moved to `checkpoints_corrupt/` and the previous one is tried; a
    step of another config raises RunError (never a fallback)."""
    while True:
      steps = self.steps()
      if not steps:
        return 0, like
      step = steps[-1]
      state, error = None, None
      try:
        state = self.restore(step, like)
      except RunError:
        raise
      except Exception as e:  # noqa: BLE001 - any read failure of this step's files
        error = e
      if all_true(error is None):  # multi-process: every process read it, or all treat it as corrupt
        return step, state
      self._mgr.close()
      dest = os.path.join(self.workdir, "checkpoints_corrupt", f"{step}-{int(time.time())}")
      if is_lead():  # one process moves the folder; the others wait for it before listing the steps
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.move(os.path.join(self.directory, str(step)), dest)
      barrier(f"fedlora_corrupt_checkpoint_{step}")
      self._mgr = self._open()
      prev = [s for s in steps if s < step]
      if is_lead():
        why = (f"{type(error).__name__}: {' '.join(str(error).split())[:200]}" if error is not None
               else "unreadable on another process")
        warn(f"checkpoint {self.directory}/{step} is unreadable ({why}); moved it to {dest} and "
             + (f"falling back to step {prev[-1]}" if prev else "starting from round 0 (no other step)"))

  def close(self) -> None:
    self._mgr.close()

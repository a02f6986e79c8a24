"""Orbax checkpoints of the whole run state (a PyTree of arrays), resumable bit-for-bit.

Every random draw of a round is derived from `(seed, round)`, so restoring the state saved after round t
and continuing gives exactly the uninterrupted run.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for one run folder (`<workdir>/checkpoints`)."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self._mgr = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def save(self, step: int, state) -> None:
    self._mgr.save(step, args=ocp.args.StandardSave(state))
    self._mgr.wait_until_finished()

  def restore(self, step: int, like):
    """Restores into the structure/dtypes of `like` (a state of the same run).

    Raises ValueError naming the folder when the checkpoint does not fit this config.
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
    try:
      return self._mgr.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises several types for structure/shape mismatches
      raise ValueError(
          f"checkpoint {self.directory}/{step} does not match this config ({type(e).__name__}: "
          f"{str(e)[:300]}); use a fresh --config.workdir or the config that wrote it") from e

  def close(self) -> None:
    self._mgr.close()

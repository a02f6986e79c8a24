"""Parameter and byte counts of PyTrees (used for memory reports and communication accounting)."""
from __future__ import annotations

import jax
import numpy as np


def tree_size(tree) -> int:
  """Number of scalar entries in all leaves."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def tree_bytes(tree) -> int:
  """Bytes of all leaves at their own dtypes."""
  return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                 for x in jax.tree_util.tree_leaves(tree)))

"""Server-side aggregation of client updates (FedAvg over LoRA factors and head, separately)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_mean(deltas, weights):
  """`sum_c w_c delta_c / sum_c w_c` per leaf (zeros when every weight is 0); deltas leaves
  `[clients, ...]`, weights `[clients]`. The server optimisers (fedlora/server) step on it."""
  weights = weights.astype(jnp.float32)
  total = weights.sum()
  norm = jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), 0.0)
  return jax.tree_util.tree_map(lambda d: jnp.tensordot(norm, d, axes=1).astype(d.dtype), deltas)


def fedavg(global_tree, deltas, weights, server_lr: float = 1.0):
  """`global + server_lr * sum_c w_c delta_c / sum_c w_c`.

  Args:
    global_tree: leaves `[...]`. deltas: same structure, leaves `[clients, ...]`.
    weights: `[clients]` non-negative (data sizes; 0 for a dropped upload).
  When every weight is 0 (all uploads dropped) the global tree is returned unchanged.
  The factors A and B are averaged separately, as the paper's FedAvg of LoRA does.
  """
  weights = weights.astype(jnp.float32)
  total = weights.sum()
  norm = jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), 0.0)

  def avg(g, d):
    return g + server_lr * jnp.tensordot(norm, d, axes=1).astype(g.dtype)
  return jax.tree_util.tree_map(avg, global_tree, deltas)

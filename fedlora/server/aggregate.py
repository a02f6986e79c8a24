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


def senders_mean(deltas, weights):
  """Per coordinate, `sum_c w_c delta_c / sum_{c sent it} w_c`: the mean over the uploads that carry
  the coordinate, 0 where none does; deltas leaves `[clients, ...]`, weights `[clients]`.

  "Carries" means a nonzero value: every compressor sends the entries it drops as exact zeros, so a
  sparsified coordinate is averaged over its senders instead of being shrunk by the clients that
  dropped it (ours; the support-wise averaging of HeteroFL / FjORD, here for sparse uploads). A value
  that is exactly 0 because the client's update is 0 there is counted as not sent. For dense uploads
  (no zeros) this is `weighted_mean`.
  """
  weights = weights.astype(jnp.float32)

  def mean(d):
    num = jnp.tensordot(weights, d.astype(jnp.float32), axes=1)
    den = jnp.tensordot(weights, (d != 0).astype(jnp.float32), axes=1)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0).astype(d.dtype)
  return jax.tree_util.tree_map(mean, deltas)


MEANS = {"all": weighted_mean, "senders": senders_mean}


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

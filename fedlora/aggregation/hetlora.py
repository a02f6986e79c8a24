"""'hetlora': HetLoRA's zero-padding aggregation (Cho et al. 2024, "Heterogeneous LoRA for Federated
Fine-tuning of On-Device Foundation Models"), with per-component normalisation.

Client k of rank r_k trains the first r_k rank components of the global factors (truncation,
fedlora/lora/hetrank.py) and uploads ΔA_k `[d_in, R]`, ΔB_k `[R, d_out]`, zero-padded beyond r_k.
For rank component i (A's column i, B's row i) the server takes the weighted mean over the clients
that HOLD it (r_k > i):

    ΔA[:, i] = Σ_k w_k·[r_k > i]·ΔA_k[:, i] / Σ_k w_k·[r_k > i]      (0 when no client holds i)

and likewise ΔB[i, :]; w_k are the aggregation weights (data sizes, 0 for an upload that did not
arrive). paper: zero-padding to the largest rank and averaging; ours: the one rule implemented is
this per-component normalisation (the paper's optional sparsity-weighted variant, weights ∝
‖B_k A_k‖_F, and its rank self-pruning are not). With every rank equal to R this is the FedAvg mean.
The dense leaves (head) use `server.mean`. No state.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedlora.aggregation import AGGREGATIONS, Aggregation, Rule, is_adapter_leaf


def component_mean(d, weights, masks, which: str):
  """Per-component weighted mean over holders: d `[K, d_in, R]` ('lora_a') or `[K, R, d_out]`
  ('lora_b'), weights `[K]`, masks `[K, R]` -> `[d_in, R]` / `[R, d_out]`."""
  w = weights.astype(jnp.float32)[:, None] * masks.astype(jnp.float32)   # [K, R]
  den = w.sum(0)                                                         # [R]
  df = d.astype(jnp.float32)
  num = jnp.einsum("kr,kir->ir", w, df) if which == "lora_a" else jnp.einsum("kr,kro->ro", w, df)
  safe = jnp.where(den > 0, den, 1.0)
  out = num / (safe[None, :] if which == "lora_a" else safe[:, None])
  zero = (den > 0)[None, :] if which == "lora_a" else (den > 0)[:, None]
  return jnp.where(zero, out, 0.0).astype(d.dtype)


def build(section, scale) -> Aggregation:
  def mean(global_tr, state, deltas, weights, masks, base_mean, lr):
    dense = base_mean(deltas, weights)
    k = weights.shape[0]

    def leaf(path, d, m):
      which = is_adapter_leaf(path)
      if not which:
        return m
      r = d.shape[-1] if which == "lora_a" else d.shape[-2]
      mk = jnp.ones((k, r), jnp.float32) if masks is None else masks
      return component_mean(d, weights, mk, which)
    return jax.tree_util.tree_map_with_path(leaf, deltas, dense), state
  return Aggregation(lambda trainable: {}, mean)


AGGREGATIONS.register("hetlora")(Rule(build))

"""'flora': FLoRA's stacking aggregation (Wang et al. 2024, "FLoRA: Federated Fine-Tuning Large
Language Models with Heterogeneous Low-Rank Adaptations").

Client k trains factors A_k `[d_in, R]`, B_k `[R, d_out]` (its first r_k components; the rest are 0)
starting from the round's fresh factors. The server rebuilds A_k = trunc_k(A) + ΔA_k, B_k = trunc_k(B)
+ ΔB_k from the uploads and STACKS them along the rank axis with p_k = w_k / Σ w (delivered uploads):

    A_st = [p_1·A_1 | p_2·A_2 | ... | p_K·A_K]   `[d_in, K·R]`
    B_st = [B_1; B_2; ...; B_K]                   `[K·R, d_out]`,   A_st·B_st = Σ_k p_k·A_k·B_k

exactly (no cross terms, unlike averaging A and B separately). As in FLoRA, the stacked adapter is
merged into the frozen base weight, W <- W + η·s·A_st·B_st (s = alpha / lora.rank, η the round's
server lr), and every client restarts the next round from fresh LoRA factors: the run's initial
factors (A_0, B = 0; paper: a fresh initialisation; ours: the same A_0 every round, so no key is
drawn). The server state (`server['aggregation']`, checkpointed) is what FLoRA's server carries:
`merged`, the accumulated dense ΔW `[d_in, d_out]` of every adapted layer, and `fresh`, the initial
factors. The clients (and the evaluation) use the base `W_0 + merged` (the frozen weights are never
rewritten in place: W_0 + merged is formed each round, in the base's dtype, from float32 `merged`).
The dense leaves (head) are averaged with `server.mean` and stepped by the server optimiser, which
must be 'fedavg' (an optimiser state over the factors would be meaningless once they restart).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedlora.aggregation import AGGREGATIONS, Aggregation, Rule


def _is_adapter(node) -> bool:
  return isinstance(node, dict) and "lora_a" in node and "lora_b" in node


def _map_adapters(fn, tree, *rest):
  """`{path: fn(node, *rest_nodes)}` over the adapter nodes of a nested dict (other leaves dropped)."""
  out = {}
  for k, v in tree.items():
    if _is_adapter(v):
      out[k] = fn(v, *(r[k] for r in rest))
    elif isinstance(v, dict):
      sub = _map_adapters(fn, v, *(r[k] for r in rest))
      if sub:
        out[k] = sub
  return out


def stack(a_k, b_k, p):
  """FLoRA's stacking: a_k `[K, d_in, R]`, b_k `[K, R, d_out]`, p `[K]` ->
  (A_st `[d_in, K·R]` = the p_k·A_k side by side, B_st `[K·R, d_out]` = the B_k one under the other),
  so that A_st @ B_st = Σ_k p_k·A_k·B_k."""
  k, d_in, r = a_k.shape
  a_st = jnp.transpose(p[:, None, None] * a_k, (1, 0, 2)).reshape(d_in, k * r)
  return a_st, b_k.reshape(k * r, b_k.shape[-1])


def build(section, scale) -> Aggregation:
  def init(trainable):
    fresh = _map_adapters(lambda n: {"lora_a": n["lora_a"], "lora_b": n["lora_b"]}, trainable)
    merged = _map_adapters(lambda n: {"kernel": jnp.zeros((n["lora_a"].shape[0], n["lora_b"].shape[1]),
                                                          jnp.float32)}, trainable)
    return {"merged": merged, "fresh": fresh}

  def mean(global_tr, state, deltas, weights, masks, base_mean, lr):
    w = weights.astype(jnp.float32)
    total = w.sum()
    p = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)

    def product(g, d):  # the weighted mean of the clients' products, through the stacked factors
      a, b = g["lora_a"].astype(jnp.float32), g["lora_b"].astype(jnp.float32)
      k, r = d["lora_a"].shape[0], a.shape[-1]
      m = jnp.ones((k, r), jnp.float32) if masks is None else masks.astype(jnp.float32)
      a_k = a[None] * m[:, None, :] + d["lora_a"].astype(jnp.float32)
      b_k = b[None] * m[:, :, None] + d["lora_b"].astype(jnp.float32)
      a_st, b_st = stack(a_k, b_k, p)
      return {"kernel": (lr * scale) * (a_st @ b_st)}
    inc = _map_adapters(product, global_tr, deltas)
    merged = jax.tree_util.tree_map(jnp.add, state["merged"], inc)
    update = base_mean(deltas, weights)  # the head's mean; the factors restart in `finish`
    return update, dict(state, merged=merged)

  def finish(new_global, state):
    def reset(tree, fresh):
      out = dict(tree)
      for k, v in tree.items():
        if k in fresh:
          out[k] = dict(v, **fresh[k]) if _is_adapter(v) else reset(v, fresh[k])
      return out
    return reset(new_global, state["fresh"])

  def base(frozen, state):
    def add(tree, merged):
      out = dict(tree)
      for k, v in merged.items():
        if "kernel" in v and not isinstance(v["kernel"], dict):
          kern = tree[k]["kernel"]
          out[k] = dict(tree[k], kernel=(kern.astype(jnp.float32) + v["kernel"]).astype(kern.dtype))
        else:
          out[k] = add(tree[k], v)
      return out
    return add(frozen, state["merged"])

  return Aggregation(init, mean, finish, base)


def requires(section) -> None:
  section.need(section.name == "fedavg", "name", "'fedavg' with server.aggregation='flora' (the "
               "LoRA factors restart every round, so a server optimiser state over them is meaningless)")


AGGREGATIONS.register("flora")(Rule(build, requires))

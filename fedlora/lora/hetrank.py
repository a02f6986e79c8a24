"""Heterogeneous client LoRA ranks: which rank each client has, and the rank masks a client trains with.

The global adapter has rank R = `lora.rank`; client k has rank r_k <= R (`lora.client_ranks`) and
trains the first r_k rank components `(lora_a[:, :r_k], lora_b[:r_k, :])` of the global factors
(HetLoRA's truncation). Clients of different ranks still run vmapped over fixed `[.., R]` shapes: a
client's rank is a traced integer, its mask `m_k = [i < r_k for i < R]` multiplies its copy of the
global factors (truncation: the components >= r_k start at exactly 0), its gradients and its optimiser
updates, so the masked components stay exactly 0 and the client's update is 0 there.

Everything here is a pure function of PyTrees; adapter nodes are dicts holding `lora_a [d_in, R]` and
`lora_b [R, d_out]`, every other leaf is dense (the head) and is never masked.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _key(k) -> str:
  return str(getattr(k, "key", getattr(k, "idx", k)))


def rank_mask(rank, r: int) -> jax.Array:
  """`[r]` float32: 1 for the first `rank` components, 0 after (`rank` may be traced; `[K]` -> `[K, r]`)."""
  rank = jnp.asarray(rank)
  return (jnp.arange(r) < rank[..., None]).astype(jnp.float32)


def mask_tree(tree, rank, r: int):
  """A tree of `tree`'s structure whose leaves broadcast against it: `lora_a` -> `[1, r]`,
  `lora_b` -> `[r, 1]` (the rank mask of `rank`), every other leaf -> a scalar 1."""
  m = rank_mask(rank, r)

  def leaf(path, x):
    name = _key(path[-1]) if path else ""
    if name == "lora_a":
      return m[None, :]
    if name == "lora_b":
      return m[:, None]
    return jnp.ones((), jnp.float32)
  return jax.tree_util.tree_map_with_path(leaf, tree)


def apply_mask(tree, mask):
  """`tree * mask` leaf by leaf, dtypes kept (a masked entry becomes exactly 0)."""
  return jax.tree_util.tree_map(lambda x, m: (x * m).astype(x.dtype), tree, mask)


def slice_rank(tree, r: int):
  """The tree at rank `r` (static): `lora_a[..., :r]`, `lora_b[..., :r, :]`; other leaves as they are.
  Works on arrays and on `jax.ShapeDtypeStruct`s (a payload model reads only shapes)."""
  def leaf(path, x):
    name = _key(path[-1]) if path else ""
    if name not in ("lora_a", "lora_b"):
      return x
    if isinstance(x, jax.ShapeDtypeStruct):
      shape = x.shape[:-1] + (r,) if name == "lora_a" else x.shape[:-2] + (r, x.shape[-1])
      return jax.ShapeDtypeStruct(shape, x.dtype)
    return x[..., :r] if name == "lora_a" else x[..., :r, :]
  return jax.tree_util.tree_map_with_path(leaf, tree)


def own_rank_profile(profile: jax.Array, rank, r: int) -> jax.Array:
  """A client's planning profile `[r]` (sorted normalised mass over the zero-padded R = r components;
  the components >= rank carry none) re-expressed for ratios relative to the client's OWN rank:
  entry j is K((j+1)/r) - K(j/r) with K(ρ) the kept mass of ceil-free ρ·rank own components, so
  TSFA's `kept_mass(ρ, ·)` reads the client's own ratio ρ (exact on the grid m/r; ours)."""
  p = jnp.asarray(profile, jnp.float32)
  cum = jnp.concatenate([jnp.zeros((1,), p.dtype), jnp.cumsum(p)])
  x = jnp.arange(r + 1, dtype=jnp.float32) / r * jnp.asarray(rank, jnp.float32)  # own components kept
  j = jnp.clip(jnp.floor(x), 0, r - 1).astype(jnp.int32)
  kept = cum[j] + (x - j) * p[j]
  return jnp.diff(kept)


def assign_ranks(lora, num_clients: int, speeds=None) -> np.ndarray | None:
  """`[N]` int32 rank of every client from the `lora` section, or None when `client_ranks` is ()
  (every client has `lora.rank`: the homogeneous run, unchanged).

  'client': `client_ranks` has one rank per client. 'speed': `speeds [N]` (FLOP/s) sorts the
  clients (stable, slowest first); the client at sorted position j gets `sorted(client_ranks)[
  floor(j·Q/N)]` for Q listed ranks, so each rank goes to an equal-size speed quantile (±1 client).
  Raises ValueError naming the key when the length does not fit `num_clients`.
  """
  ranks = tuple(lora.client_ranks)
  if not ranks:
    return None
  n = int(num_clients)
  if lora.client_ranks_by == "client":
    if len(ranks) != n:
      raise ValueError(f"config.lora.client_ranks={ranks!r} is not allowed: with lora.client_ranks_by="
                       f"'client' it needs one rank per client, {n} (data.num_clients), got {len(ranks)}")
    return np.asarray(ranks, np.int32)
  if len(ranks) > n:
    raise ValueError(f"config.lora.client_ranks={ranks!r} is not allowed: with lora.client_ranks_by="
                     f"'speed' it lists at most data.num_clients={n} ranks (one per speed quantile)")
  if speeds is None or np.asarray(speeds).shape != (n,):
    raise ValueError(f"assign_ranks: client_ranks_by='speed' needs speeds [{n}]")
  order = np.argsort(np.asarray(speeds), kind="stable")
  out = np.empty((n,), np.int32)
  q = len(ranks)
  out[order] = np.asarray(sorted(ranks), np.int32)[(np.arange(n) * q) // n]
  return out

"""Per-rank importance of LoRA components and the sparsification-error term E(ρ) used by TSFA.

Layout: `a = lora_a: [d_in, r]`, `b = lora_b: [r, d_out]`; component i is `(a[:, i], b[i, :])`,
its rank-1 term `a[:, i] ⊗ b[i, :]` has Frobenius norm `s_i = ‖a[:, i]‖₂·‖b[i, :]‖₂`
(paper: s_i = ‖b_i‖·‖a_i‖). With orthogonal factors the s_i are the singular values of `a @ b`.
Cost O((d_in + d_out)·r); no `a @ b` product.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedlora.compress.base import adapter_pairs, map_parts


def rank_scores(a: jax.Array, b: jax.Array) -> jax.Array:
  """`s: [r]` with `s_i = ‖a[:, i]‖₂ · ‖b[i, :]‖₂` for `a: [d_in, r]`, `b: [r, d_out]`."""
  return jnp.linalg.norm(a, axis=0) * jnp.linalg.norm(b, axis=1)


def product_scores(a0: jax.Array, b0: jax.Array, da: jax.Array, db: jax.Array) -> jax.Array:
  """`s: [r]`, s_i = ‖(a0 + da)[:, i] ⊗ (b0 + db)[i, :] − a0[:, i] ⊗ b0[i, :]‖_F: the update's
  contribution to the product per rank component, without forming any `[d_in, d_out]` matrix.

  With u0 = a0[:, i], v0 = b0[i, :], Δu = da[:, i], Δv = db[i, :] and v = v0 + Δv, the contribution
  is u0 Δvᵀ + Δu v0ᵀ + Δu Δvᵀ = u0 Δvᵀ + Δu vᵀ, and for rank-1 terms
  ‖x yᵀ + p qᵀ‖_F² = ‖x‖²‖y‖² + ‖p‖²‖q‖² + 2 (x·p)(y·q), so
      s_i² = ‖u0‖²‖Δv‖² + ‖Δu‖²‖v‖² + 2 (u0·Δu)(Δv·v)
  (column/row norms and dot products only: O((d_in + d_out)·r); clamped at 0 against rounding).
  Written in the update (not as ‖u v‖² − ‖u0 v0‖²-style differences) so a small update relative to
  large factors does not cancel catastrophically.
  """
  v = b0 + db
  s2 = (jnp.sum(a0 * a0, 0) * jnp.sum(db * db, 1) + jnp.sum(da * da, 0) * jnp.sum(v * v, 1)
        + 2.0 * jnp.sum(a0 * da, 0) * jnp.sum(db * v, 1))
  return jnp.sqrt(jnp.maximum(s2, 0.0))


def score_tree(tree):
  """Same structure as `tree`, with `s: [r]` (rank_scores) at each adapter node, None elsewhere."""
  results, treedef, _ = map_parts(lambda p, a, b: rank_scores(a, b), lambda p, x: None, tree)
  return treedef.unflatten(results)


def _profile(s: jax.Array) -> jax.Array:
  """Sorted (descending) normalised mass `p: [r]`, `p_j = s_(j)² / Σ s²`; all zeros if Σ s² = 0."""
  e = jnp.sort(jnp.square(s), axis=-1)[..., ::-1]
  tot = e.sum(axis=-1, keepdims=True)
  return jnp.where(tot > 0, e / jnp.where(tot > 0, tot, 1.0), 0.0)


def importance_profile(tree):
  """Same structure as `tree`, with the sorted normalised mass `p: [r]` at each adapter node.

  `p_j = s_(j)² / Σ_i s_i²` with s sorted descending (sums to 1; all zeros for an all-zero adapter).
  `cumsum(p)[m-1]` is the fraction of the adapter's importance mass that keeping m components retains.
  """
  results, treedef, _ = map_parts(lambda p, a, b: _profile(rank_scores(a, b)),
                                  lambda p, x: None, tree)
  return treedef.unflatten(results)


def _dropped_and_total(s: jax.Array, ratio: jax.Array):
  """(dropped mass, total mass) of one adapter's scores `s: [r]` at ratio ρ (piecewise linear)."""
  r = s.shape[-1]
  e = jnp.sort(jnp.square(s.astype(jnp.float32)), axis=-1)[..., ::-1]
  total = e.sum(axis=-1)
  tail = jnp.cumsum(e[..., ::-1], axis=-1)[..., ::-1]          # tail[j] = Σ_{i >= j} e_i
  x = jnp.clip(jnp.asarray(ratio, jnp.float32) * r, 0.0, float(r))
  j = jnp.clip(jnp.floor(x), 0, r - 1).astype(jnp.int32)
  frac = x - j
  idx = jnp.broadcast_to(j, e.shape[:-1])[..., None]
  dropped = (jnp.take_along_axis(tail, idx, axis=-1)[..., 0]
             - frac * jnp.take_along_axis(e, idx, axis=-1)[..., 0])
  return jnp.maximum(dropped, 0.0), total


def dropped_mass(tree_or_scores, ratio) -> jax.Array:
  """Sparsification error E(ρ): the fraction of importance mass Σ s_i² that SOFT drops at ratio ρ.

  Input: a tree with adapters (scores from `rank_scores`), or an array of scores `[r]` (one adapter)
  or `[L, r]` (L adapters of equal rank). For several adapters the fractions are pooled:
  `E = Σ_l dropped_l / Σ_l total_l` (mass-weighted). 0 when all masses are 0.

  Smooth surrogate (ours): with x = ρ·r, the kept mass is the linear interpolation of the sorted
  cumulative mass at integers, K(x) = cum[⌊x⌋] + (x − ⌊x⌋)·e_(⌊x⌋+1). It is continuous and
  piecewise linear in ρ, equals the exact SOFT value where ρ·r is an integer, and otherwise
  upper-bounds the exact error of keeping ceil(ρ·r) components (K is non-decreasing). Differentiable
  in ρ almost everywhere (dE/dρ = −r·e_(⌊x⌋+1)/Σe), for the projected-gradient solver.
  `ratio` may be traced; vmap over clients by vmapping this function.
  """
  if isinstance(tree_or_scores, (jax.Array,)) or hasattr(tree_or_scores, "ndim"):
    s = jnp.asarray(tree_or_scores)
    if s.ndim not in (1, 2):
      raise ValueError(f"dropped_mass: scores must be [r] or [L, r], got shape {s.shape}")
    dropped, total = _dropped_and_total(s, ratio)
    dropped, total = dropped.sum(), total.sum()
  else:
    pairs = adapter_pairs(tree_or_scores)
    if not pairs:
      raise ValueError("dropped_mass: the tree holds no adapter (dict node with lora_a and lora_b)")
    dropped, total = jnp.float32(0.0), jnp.float32(0.0)
    for _, a, b in pairs:
      d, t = _dropped_and_total(rank_scores(a, b), ratio)
      dropped, total = dropped + d, total + t
  return jnp.where(total > 0, dropped / jnp.where(total > 0, total, 1.0), 0.0)

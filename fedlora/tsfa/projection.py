"""Exact Euclidean (and diagonally weighted) projections onto the scaled simplex and onto a box.

`project_simplex` solves, for `y: [K]`,
    minimise Σ_k (x_k − y_k)² / d_k   s.t.   Σ_k x_k = total,  x_k ≥ lower_k,
with `d = 1` (the Euclidean projection, the default) or positive metric weights `d` (the projection
in the norm ‖v‖²_{D⁻¹} that a diagonally scaled gradient step needs). Sort-based, O(K log K)
(Duchi et al. 2008, "Efficient projections onto the l1-ball"; weighted form as in Pardalos & Kovoor
1990): the solution is `x_k = max(y_k − λ·d_k, lower_k)` with the threshold λ found from the sorted
breakpoints `(y_k − lower_k)/d_k`. Clients with `mask` False are held at exactly 0 and take no part.

Pure jnp: jittable, vmappable over leading scenario axes (vmap it), differentiable a.e.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def project_simplex(y: jax.Array, total=1.0, *, lower=0.0, weights: jax.Array | None = None,
                    mask: jax.Array | None = None) -> jax.Array:
  """`[K]` projection of `y [K]` onto `{x : Σ x = total, x ≥ lower, x = 0 where ~mask}`.

  Args:
    y: `[K]` point to project.
    total: scalar budget (> 0, may be traced); must satisfy `total ≥ Σ_active lower`.
    lower: scalar or `[K]` lower bounds (default 0, the plain simplex).
    weights: optional `[K]` positive metric weights d (default 1 = Euclidean projection).
    mask: optional `[K]` bool, True = active; inactive entries are returned as exactly 0.
  """
  if isinstance(total, (int, float)) and not total > 0:
    raise ValueError(f"project_simplex: total={total!r} is not allowed: a budget > 0")
  y = jnp.asarray(y, jnp.float32)
  if y.ndim != 1:
    raise ValueError(f"project_simplex: y must be [K] (vmap for batches), got shape {y.shape}")
  k = y.shape[0]
  act = jnp.ones((k,), bool) if mask is None else jnp.asarray(mask, bool)
  lo = jnp.where(act, jnp.broadcast_to(jnp.asarray(lower, jnp.float32), (k,)), 0.0)
  d = jnp.ones((k,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
  d = jnp.where(act, d, 0.0)
  u = jnp.where(act, y - lo, 0.0)
  z = jnp.asarray(total, jnp.float32) - lo.sum()
  # Breakpoints t_k = u_k/d_k, descending; inactive ones last.
  t = jnp.where(act, u / jnp.where(act, d, 1.0), -jnp.inf)
  order = jnp.argsort(-t)
  u_s, d_s, t_s, a_s = u[order], d[order], t[order], act[order]
  cd = jnp.cumsum(d_s)
  lam = (jnp.cumsum(u_s) - z) / jnp.where(cd > 0, cd, 1.0)
  # Largest j whose breakpoint stays above its threshold: the active set is a prefix of the order.
  valid = a_s & (t_s > lam)
  j = jnp.maximum(jnp.max(jnp.where(valid, jnp.arange(k), -1)), 0)
  x = lo + jnp.maximum(u - lam[j] * d, 0.0)
  return jnp.where(act, x, 0.0)


def project_box(x: jax.Array, lo, hi) -> jax.Array:
  """Elementwise projection onto the box `[lo, hi]` (scalars or arrays broadcasting with `x`)."""
  return jnp.clip(jnp.asarray(x, jnp.float32), lo, hi)

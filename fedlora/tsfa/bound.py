"""Terms of the convergence bound as pure functions of (rank r, ratio ρ, measured constants).

The same functions serve the offline stage (choose r, V, ρ_min; `offline.py`) and the online
Lyapunov objective (choose ρ and bandwidth each round; `online.py`):

  bound(r, ρ) = representation(r) + covariance(r) + c_sp·Σ_k w_k·E_k(ρ_k) + latency term

* representation(r) = c_rep·q_rep^r (ours): the tail energy of the ideal update beyond rank r
  (Eckart–Young) when its spectrum decays geometrically, the same geometric model as the importance
  profiles SOFT measures. Falls with r.
* covariance(r) = c_cov·ζ²·r (ours): averaging B and A separately misses
  −(1/K)Σ_k (B_k − B̄)(A_k − Ā), a sum of r rank-1 cross terms each ∝ client drift ζ²; its squared
  norm grows linearly with r for near-orthogonal factors. Grows with r.
* sparsification E_k(ρ): dropped importance mass at ratio ρ from the client's sorted normalised
  profile `p [r]` (p_j = s_(j)²/Σ s², descending), linearly interpolated between integer m = ρ·r
  (identical to `fedlora.soft.importance.dropped_mass`); convex, piecewise linear, non-increasing.
* latency/payload: bits(ρ) = c0 + c1·ρ, τ_k = τ_k^fixed + bits_k/R_k(b_k); the offline stage
  charges `c_lat·max(τ/τ̄ − 1, 0)` (budget excess), the online stage `Q·smooth_max(τ)`.

Shapes: `[K]` per client, profiles `[K, r]` (or `[r]`). float32.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedlora.compress.base import kept_mass
from fedlora.wireless.latency import spectral_rate


class PilotConstants(NamedTuple):
  """Constants of the bound, measured in a short pilot run (defaults: a generic, normalised setting).

  All error terms are relative to the initial optimality gap (dimensionless).
    rep_coeff:        c_rep = 1.0, representation error at r = 0 (the whole ideal update).
    rep_decay:        q_rep = 0.7, per-rank spectral decay of the ideal update (pilot: ratio of
                      consecutive sorted s_i² of a full-rank-ish pilot adapter).
    cov_coeff:        c_cov = 0.01, covariance term per rank component per unit drift.
    drift:            ζ² = 1.0, client drift (pilot: variance of client updates / mean norm²).
    sparse_coeff:     c_sp = 1.0, weight of the dropped importance mass.
    importance_decay: q_s = 0.8, geometric decay of s_i² used as the profile when none is measured.
    latency_coeff:    c_lat = 1.0, offline penalty per unit relative excess over the latency budget.
  """
  rep_coeff: float = 1.0
  rep_decay: float = 0.7
  cov_coeff: float = 0.01
  drift: float = 1.0
  sparse_coeff: float = 1.0
  importance_decay: float = 0.8
  latency_coeff: float = 1.0

  def validate(self) -> "PilotConstants":
    for name in ("rep_coeff", "cov_coeff", "drift", "sparse_coeff", "latency_coeff"):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and v >= 0):
        raise ValueError(f"PilotConstants.{name}={v!r} is not allowed: a number >= 0")
    for name in ("rep_decay", "importance_decay"):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and 0 < v < 1):
        raise ValueError(f"PilotConstants.{name}={v!r} is not allowed: a decay factor in (0, 1)")
    return self


def representation_error(r, consts: PilotConstants):
  """`c_rep·q_rep^r`: falls geometrically with the rank r (scalar or array)."""
  return consts.rep_coeff * jnp.power(jnp.float32(consts.rep_decay), jnp.asarray(r, jnp.float32))


def covariance_error(r, consts: PilotConstants):
  """`c_cov·ζ²·r`: the separate-aggregation covariance term, grows linearly with r."""
  return consts.cov_coeff * consts.drift * jnp.asarray(r, jnp.float32)


def geometric_profile(r: int, decay: float) -> jax.Array:
  """`[r]` sorted normalised profile `p_j ∝ decay^(j−1)`, summing to 1."""
  p = jnp.power(jnp.float32(decay), jnp.arange(int(r), dtype=jnp.float32))
  return p / p.sum()


def normalise_profile(s2: jax.Array) -> jax.Array:
  """`[..., r]` squared scores s_i² (any order) -> sorted descending, normalised to sum 1.

  An all-zero row stays all zero (nothing to drop: E = 0 for every ρ).
  """
  e = jnp.sort(jnp.asarray(s2, jnp.float32), axis=-1)[..., ::-1]
  tot = e.sum(axis=-1, keepdims=True)
  return jnp.where(tot > 0, e / jnp.where(tot > 0, tot, 1.0), 0.0)


def sparsification_error(rho: jax.Array, profile: jax.Array) -> jax.Array:
  """E(ρ) = Σp − kept_mass(ρ) ≥ 0: dropped importance mass, `[...]`; non-increasing, convex in ρ."""
  return jnp.maximum(jnp.asarray(profile, jnp.float32).sum(axis=-1) - kept_mass(rho, profile), 0.0)


def payload_bits(rho: jax.Array, c0: jax.Array, c1: jax.Array) -> jax.Array:
  """`[K]` affine payload model bits(ρ) = c0 + c1·ρ (c0: masks + dense leaves; c1: values at ρ = 1)."""
  return c0 + c1 * rho


def client_latency(rho: jax.Array, share: jax.Array, snr_full: jax.Array, c0: jax.Array,
                   c1: jax.Array, fixed: jax.Array, bandwidth_hz) -> jax.Array:
  """`[K]` latency τ_k = fixed_k + bits_k(ρ_k)/(B·share_k·log2(1 + snr_k/share_k)) in seconds.

  `share = b/B` (bandwidth fraction), `snr_full = p·g/(N0·B)` (SNR over the whole band B).
  +inf where share = 0 and bits > 0.
  """
  rate = bandwidth_hz * spectral_rate(share, snr_full)
  bits = payload_bits(rho, c0, c1)
  ok = rate > 0
  up = jnp.where(ok, bits / jnp.where(ok, rate, 1.0), jnp.where(bits > 0, jnp.inf, 0.0))
  return fixed + up


def smooth_max(tau: jax.Array, temperature, mask: jax.Array | None = None) -> jax.Array:
  """`T·logsumexp(τ/T)` over the last axis (active entries only): max ≤ this ≤ max + T·log K."""
  z = jnp.asarray(tau, jnp.float32) / temperature
  if mask is not None:
    z = jnp.where(mask, z, -jnp.inf)
  return temperature * jax.nn.logsumexp(z, axis=-1)


def latency_excess(tau, budget, consts: PilotConstants):
  """Offline latency term `c_lat·max(τ/τ̄ − 1, 0)`: zero inside the budget."""
  return consts.latency_coeff * jnp.maximum(jnp.asarray(tau, jnp.float32) / budget - 1.0, 0.0)


class BoundTerms(NamedTuple):
  """The bound's terms (scalars or arrays of the broadcast shape)."""
  representation: jax.Array
  covariance: jax.Array
  sparsification: jax.Array
  latency: jax.Array
  total: jax.Array


def bound_terms(r, rho, profile, tau, budget, consts: PilotConstants, weights=None) -> BoundTerms:
  """All terms at rank r for ratios `rho [K]` (or scalar), profiles `[K, r]` (or `[r]`), latency τ.

  The sparsification term is `c_sp·Σ_k w_k·E_k(ρ_k)` (w defaults to uniform; scalar ρ: one client).
  """
  e = sparsification_error(rho, profile)
  if e.ndim:
    w = jnp.full(e.shape, 1.0 / e.shape[-1]) if weights is None else jnp.asarray(weights, jnp.float32)
    e = jnp.sum(w * e, axis=-1)
  rep = representation_error(r, consts)
  cov = covariance_error(r, consts)
  spa = consts.sparse_coeff * e
  lat = latency_excess(tau, budget, consts)
  return BoundTerms(rep, cov, spa, lat, rep + cov + spa + lat)


def soft_payload_model(rank: int, adapter_dims, bits_per_value: int = 32, dense_bits: float = 0.0):
  """Affine payload `(c0, c1)` of one SOFT upload: bits(ρ) ≈ c0 + c1·ρ.

  Per adapter `(d_in, d_out)` SOFT sends m·(d_in + d_out)·q + r bits with m = ceil(ρ·r); the affine
  relaxation (ours) replaces m by ρ·r: c1 = r·Σ(d_in + d_out)·q, c0 = r·#adapters + dense_bits
  (e.g. a classifier head sent dense). Exact where ρ·r is an integer.
  """
  dims = [tuple(int(v) for v in d) for d in adapter_dims]
  if int(rank) < 1 or not dims or any(len(d) != 2 or min(d) < 1 for d in dims):
    raise ValueError(f"soft_payload_model: rank={rank!r} must be >= 1 and adapter_dims={adapter_dims!r} "
                     "a non-empty list of (d_in, d_out) pairs of positive ints")
  if bits_per_value not in (16, 32):
    raise ValueError(f"bits_per_value={bits_per_value!r} is not allowed: 16 or 32")
  c1 = float(rank) * sum(a + b for a, b in dims) * bits_per_value
  c0 = float(rank) * len(dims) + float(dense_bits)
  return c0, c1


def fit_geometric_decay(profile) -> float:
  """Least-squares decay q of `p_j ∝ q^j` over the positive entries of a sorted profile `[r]`.

  For a pilot run: q_s (importance_decay) from the measured importance profile, and q_rep from the
  profile of a pilot adapter trained at a generous rank. Returns a float in (0, 1).
  """
  import numpy as np
  p = np.asarray(profile, np.float64).ravel()
  j = np.nonzero(p > 0)[0]
  if j.size < 2:
    raise ValueError(f"fit_geometric_decay: need >= 2 positive entries, got profile={p.tolist()}")
  slope = np.polyfit(j.astype(np.float64), np.log(p[j]), 1)[0]
  return float(np.clip(np.exp(slope), 1e-6, 1 - 1e-6))

"""TSFA offline stage: pick the structural LoRA rank r, the Lyapunov weight V and the floor ρ_min.

For each candidate r ∈ {1, 2, 4, …, r_max} the bound (bound.py) is evaluated for a *typical* round
under the average latency budget τ̄ and the band B_tot:
  * typical client (ours): equal share B_tot/K of the band, the path gain at the mean distance of a
    uniform-in-disc client (≈ 2R/3) with mean fading E[h] = 1, compute latency `fixed_latency`;
  * payload bits(ρ) = c0 + c1·ρ with c1 = r·bits_per_component, c0 = r·mask_bits_per_rank + dense_bits;
  * ρ(r) = the largest ratio in [ρ_min(r), 1] whose typical latency fits τ̄ (payload grows with r, so
    a large rank is forced to sparsify harder); if even ρ_min(r) misses τ̄ the excess is charged by
    the bound's latency term;
  * total = representation(r) + covariance(r) + c_sp·E(ρ(r)) + latency excess; pick the argmin.

Rules (ours, documented choices the paper leaves open):
  * ρ_min(r): the smallest m/r (m ≥ 1 kept components) whose pilot sparsification error E(m/r) is at
    most `max_drop` (default 0.5: never drop more than half of the update's importance mass).
  * V: from the drift-plus-penalty bound. With C = ½·max|τ − τ̄|² and ΔP the range of the penalty
    Σ w E (= E(ρ_min)), the time-average latency over T rounds exceeds τ̄ by at most
    sqrt(2(C + V·ΔP)/T). V is the largest value keeping that ≤ ε·τ̄:  V = (ε²τ̄²T/2 − C)/ΔP, with
    ε = `violation_tol` (0.05) and T = `horizon_rounds`; floored at `v_floor`·τ̄² when the horizon is
    too short for the guarantee (reported in `notes`).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedlora.tsfa.bound import (PilotConstants, bound_terms, geometric_profile, normalise_profile,
                                sparsification_error)
from fedlora.wireless.channel import ChannelConfig, path_gain
from fedlora.wireless.latency import shannon_rate

COLUMNS = ("rank", "rho_min", "rho", "latency_s", "representation", "covariance", "sparsification",
           "latency_term", "total")


class OfflineResult(NamedTuple):
  rank: int                 # chosen structural rank r
  rho_min: float            # ratio floor for the online stage
  V: float                  # Lyapunov weight for the online stage (s²)
  table: dict               # column name -> np.ndarray over candidates (COLUMNS)
  notes: tuple              # human-readable remarks on the rules (e.g. V floored)


def candidate_ranks(r_max: int) -> list:
  """`[1, 2, 4, …]` up to r_max, with r_max itself appended when it is not a power of two."""
  if not (isinstance(r_max, int) and r_max >= 1):
    raise ValueError(f"r_max={r_max!r} is not allowed: an integer >= 1")
  ranks = [1 << i for i in range(int(math.log2(r_max)) + 1)]
  return ranks if ranks[-1] == r_max else ranks + [r_max]


def rank_profile(r: int, consts: PilotConstants, profile=None) -> np.ndarray:
  """`[r]` profile used at rank r: the measured one's first r entries renormalised, else geometric."""
  if profile is None:
    return np.asarray(geometric_profile(r, consts.importance_decay))
  p = np.asarray(profile, np.float32).ravel()
  if p.size < r:
    raise ValueError(f"measured profile has {p.size} entries; rank {r} needs at least {r} "
                     "(measure the pilot at rank >= r_max, or pass profile=None)")
  return np.asarray(normalise_profile(p[:r]))


def rho_floor(r: int, prof, max_drop) -> jax.Array:
  """Smallest m/r (m ≥ 1) with E(m/r) ≤ max_drop (1.0 when none qualifies below r)."""
  grid = jnp.arange(1, r + 1, dtype=jnp.float32) / r
  e = sparsification_error(grid, jnp.broadcast_to(prof, (r, r)))
  return jnp.min(jnp.where(e <= max_drop + 1e-7, grid, 1.0))


@jax.jit
def _evaluate_rank(prof, rate, tau_bar, fixed, c0, c1, max_drop, consts):
  """One table row at rank r = len(prof): (ρ_min, ρ, τ, BoundTerms, E(ρ_min))."""
  r = prof.shape[-1]
  lo = rho_floor(r, prof, max_drop)
  rho = jnp.clip(((tau_bar - fixed) * rate - c0) / c1, lo, 1.0)
  tau = fixed + (c0 + c1 * rho) / rate
  return lo, rho, tau, bound_terms(r, rho, prof, tau, tau_bar, consts), sparsification_error(lo, prof)


def choose(*, r_max: int, clients_per_round: int, latency_budget: float, bits_per_component: float,
           fixed_latency: float, channel: ChannelConfig = ChannelConfig(),
           consts: PilotConstants = PilotConstants(), profile: Sequence[float] | None = None,
           mask_bits_per_rank: float = 0.0, dense_bits: float = 0.0, horizon_rounds: int = 1000,
           violation_tol: float = 0.05, max_drop: float = 0.5, v_floor: float = 1e-2,
           typical_distance_m: float | None = None) -> OfflineResult:
  """Evaluate the bound for r ∈ candidate_ranks(r_max) and pick r, ρ_min, V (module docstring).

  Args:
    r_max: largest candidate rank.
    clients_per_round: K sharing the band (equal split for the typical client).
    latency_budget: τ̄ (s).
    bits_per_component: payload of one rank component over all adapters, Σ(d_in + d_out)·q.
    fixed_latency: typical compute (+ downlink) latency per round (s).
    channel: ChannelConfig (band, powers, path loss).
    consts: PilotConstants from a pilot run.
    profile: optional measured sorted importance profile of length ≥ r_max (else geometric).
    mask_bits_per_rank: bits per unit rank independent of ρ (SOFT: #adapters, one mask bit each).
    dense_bits: bits sent dense every round (e.g. the classifier head).
    horizon_rounds, violation_tol, v_floor: the V rule; max_drop: the ρ_min rule.
    typical_distance_m: distance of the typical client (default: 2R/3, the mean in a disc).
  """
  consts.validate()
  for name, v, ok, allowed in (
      ("clients_per_round", clients_per_round, isinstance(clients_per_round, int) and clients_per_round >= 1, "an integer >= 1"),
      ("latency_budget", latency_budget, latency_budget > 0, "> 0 s"),
      ("bits_per_component", bits_per_component, bits_per_component > 0, "> 0 bits"),
      ("fixed_latency", fixed_latency, fixed_latency >= 0, ">= 0 s"),
      ("mask_bits_per_rank", mask_bits_per_rank, mask_bits_per_rank >= 0, ">= 0 bits"),
      ("dense_bits", dense_bits, dense_bits >= 0, ">= 0 bits"),
      ("horizon_rounds", horizon_rounds, isinstance(horizon_rounds, int) and horizon_rounds >= 1, "an integer >= 1"),
      ("violation_tol", violation_tol, violation_tol > 0, "> 0"),
      ("max_drop", max_drop, 0 <= max_drop <= 1, "in [0, 1]"),
      ("v_floor", v_floor, v_floor > 0, "> 0")):
    if not ok:
      raise ValueError(f"{name}={v!r} is not allowed: {allowed}")
  tau_bar = float(latency_budget)
  dist = 2.0 * channel.cell_radius_m / 3.0 if typical_distance_m is None else float(typical_distance_m)
  if not channel.min_distance_m <= dist <= channel.cell_radius_m:
    raise ValueError(f"typical_distance_m={dist!r} is not allowed: within "
                     f"[{channel.min_distance_m}, {channel.cell_radius_m}] m")
  gain = path_gain(np.float32([dist]), channel)
  rate = float(shannon_rate(np.float32([channel.bandwidth_hz / clients_per_round]), gain, channel)[0])

  rows, spreads = {c: [] for c in COLUMNS}, []
  for r in candidate_ranks(r_max):
    c1 = r * float(bits_per_component)
    c0 = r * float(mask_bits_per_rank) + float(dense_bits)
    lo, rho, tau, t, spread = _evaluate_rank(jnp.asarray(rank_profile(r, consts, profile)), rate,
                                             tau_bar, float(fixed_latency), c0, c1, float(max_drop),
                                             consts)
    for c, v in zip(COLUMNS, (r, lo, rho, tau, t.representation, t.covariance, t.sparsification,
                              t.latency, t.total)):
      rows[c].append(float(v))
    spreads.append(float(spread))
  table = {c: np.asarray(v) for c, v in rows.items()}
  best = int(np.argmin(table["total"]))
  rank, lo = int(table["rank"][best]), float(table["rho_min"][best])

  notes = []
  spread = spreads[best]  # ΔP: range of the penalty Σ w E (Σ w = 1) over [ρ_min, 1]
  c1 = rank * float(bits_per_component)
  c0 = rank * float(mask_bits_per_rank) + float(dense_bits)
  tau_hi = fixed_latency + (c0 + c1) / rate
  c_drift = 0.5 * max(tau_hi - tau_bar, tau_bar - fixed_latency, 0.0) ** 2
  budget = 0.5 * violation_tol ** 2 * tau_bar ** 2 * horizon_rounds
  if spread <= 0:
    v = tau_bar ** 2
    notes.append("no sparsification error is possible at this rank: V = τ̄² (it has no effect)")
  else:
    v = (budget - c_drift) / spread
    if v < v_floor * tau_bar ** 2:
      v = v_floor * tau_bar ** 2
      notes.append(f"horizon of {horizon_rounds} rounds too short for the {violation_tol:.0%} "
                   f"violation guarantee: V floored at {v_floor}·τ̄²")
  if table["latency_term"][best] > 0:
    notes.append(f"rank {rank}: even ρ_min misses the budget for the typical client "
                 f"({table['latency_s'][best]:.3g} s > {tau_bar:.3g} s)")
  return OfflineResult(rank, lo, float(v), table, tuple(notes))


def format_table(result: OfflineResult) -> str:
  """Plain-text table of the bound's terms per candidate rank, the choice marked with '*'."""
  t = result.table
  head = ["", "rank", "rho_min", "rho", "latency[s]", "repr", "cov", "sparse", "lat", "total"]
  lines = ["  ".join(f"{h:>10}" for h in head)]
  for i in range(len(t["rank"])):
    mark = "*" if int(t["rank"][i]) == result.rank else ""
    vals = [mark, f"{int(t['rank'][i])}"] + [f"{t[c][i]:.4g}" for c in COLUMNS[1:]]
    lines.append("  ".join(f"{v:>10}" for v in vals))
  lines.append(f"chosen: rank={result.rank}  rho_min={result.rho_min:.4g}  V={result.V:.4g} s^2")
  lines.extend(f"note: {n}" for n in result.notes)
  return "\n".join(lines)

"""TSFA online stage: Lyapunov drift-plus-penalty choice of sparsification ratios and bandwidth.

Virtual queue `Q(t+1) = max(Q(t) + τ(t) − τ̄, 0)` (τ(t): the realised round latency). Each round:

    minimise_{ρ ∈ [ρ_min, 1]^K, b ≥ 0, Σ b = B}  V·Σ_k w_k·E_k(ρ_k) + Q_eff·T·logsumexp(τ_k(ρ_k, b_k)/T)

with `τ_k = τ_k^fixed + (c0_k + c1_k·ρ_k)/R_k(b_k)` (bound.py), `Q_eff = Q + tie_break·V/τ̄`.

Solver (the user's design, made robust): accelerated proximal projected gradient on (ρ, x = b/B):
  * the latency term is the smooth part (gradient by `jax.grad`); E_k is convex piecewise linear, so
    instead of differentiating through its kinks its exact prox is taken together with the box
    [ρ_min, 1] (with V = 0 this is exactly the clip);
  * x takes a gradient step and the sort-based projection onto the simplex {x ≥ x_floor, Σ x = 1};
  * everything is in normalised units (latency / τ̄, bandwidth / B, objective / (V/τ̄² + Q/τ̄)), and
    the step is diagonally preconditioned by the Gauss-Newton curvature of the log-sum-exp latency
    (`precondition=True`; the projection is then taken in the matching weighted norm, still exact and
    sort-based). This is what keeps it reliable when client latencies span orders of magnitude;
    `precondition=False` is the plain Euclidean projected gradient;
  * a temperature homotopy (`continuation`): the log-sum-exp starts smooth and sharpens to
    `temperature`. With a sharp max, first-order steps move all latencies together only by ~T per
    iteration, while the optimum trades Σ w E against the common latency level; following the path
    slowly keeps the iterate near it (measured: slower schedules cut the final gap at K = 1,000
    from ~6e-3 to ~1e-3 in the same 500 iterations);
  * the start is the better of the warm start and the equal-latency split at the warm-start ratios
    (`_equalised_shares`, the exact min-max split);
  * backtracking line search on the quadratic upper bound, FISTA momentum with monotone restart
    (`accelerate`), a static iteration budget `max_iters` and early exit at tolerance `tol`
    (`lax.while_loop`). Jittable and vmappable over scenarios.

Accuracy (benchmarks/bench_tsfa_solver.py, hard random cells): within ~1e-5 of SLSQP for K ≤ 10,
within ~1e-3 of the best known point for K = 100 and 1,000 (the problem is non-convex in (ρ, b)
jointly: bits(ρ)/R(b)).

State and API (optax style): `init(num_clients, cfg) -> TSFAState`,
`update(state, inputs, realised_latency, cfg, client_ids=None) -> (rho, bandwidth, diag, state)`,
built from `observe` (queue update) and `plan` (the per-round solve).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from fedlora.section import Section
from fedlora.tsfa.bound import client_latency, smooth_max, sparsification_error
from fedlora.tsfa.projection import project_simplex
from fedlora.wireless.channel import ChannelConfig
from fedlora.wireless.latency import snr_per_hz, spectral_rate


def _static(default):
  return struct.field(pytree_node=False, default=default)


@struct.dataclass
class OnlineConfig(Section):
  """Section `tsfa.online`: settings of the online stage (a leafless pytree: pass it straight into jit).

    latency_budget: τ̄ (s), the long-term average round-latency budget.
    V:              Lyapunov penalty weight (s²; from `offline.choose`): larger = less sparsification
                    error, larger queue/slower convergence to the budget.
    rho_min:        lower bound of the ratio, in (0, 1] (from `offline.choose`).
    bandwidth_hz:   B_tot (Hz), the FDMA uplink band (not a key: `with_band` sets it from
                    wireless.channel.bandwidth_hz).
    temperature:    ours: log-sum-exp temperature as a fraction of τ̄; the smooth max exceeds
                    the max by at most temperature·τ̄·ln K, small next to the budget, while keeping
                    the problem smooth enough for a first-order solver.
    max_iters:      ours: static iteration budget (measured on hard random cells: 110-340
                    iterations are used for K = 10, 250-400 for K = 100 and 1,000).
    tol:            ours: stop once the step's predicted decrease (the quadratic model term)
                    is below tol·|objective| at the final temperature.
    share_floor:    ours: every active client keeps at least share_floor/K_active of the band
                    (R > 0 so τ stays finite; the optimum is interior anyway because τ → ∞ as b → 0).
    tie_break:      ours: adds tie_break·V/τ̄ to Q so that with an empty queue bandwidth still
                    goes to the lowest-latency split (the paper's objective is flat in b when Q = 0).
    precondition:   ours: diagonal Gauss-Newton preconditioning (see module docstring).
    accelerate:     ours: FISTA momentum with monotone restart.
    max_backtracks: ours: halvings of the step per iteration before giving up on the iteration.
    continuation:   ours: the temperature starts at start_temperature·max_k τ_k/τ̄ (of the
                    start point) and shrinks by this factor per iteration down to `temperature`
                    (module docstring); 0.85-0.95 converge faster but stall further from the
                    optimum for K ≥ 100. 1.0 switches the homotopy off.
    start_temperature: ours (fraction of the start point's largest normalised latency).
    initial_queue:  ours (s): Q(0). With an empty queue the first round's plan pays no latency
                    cost, so it sends everything (ρ = 1) and the next rounds pay the excess back;
                    starting at about the queue's steady value (a place-holder backlog, as in
                    Neely's drift-plus-penalty) plans the first rounds as the later ones.
    robust:         ours: plan on conservative gains under imperfect CSI
                    (wireless.channel.csi_error_std): each client's gain estimate is scaled to the
                    quantile its true gain falls below with probability miss_prob
                    (`wireless.channel.conservative_gain`), so a client whose planned latency meets a
                    deadline misses it with probability <= miss_prob. False: plan on the estimates.
    miss_prob:      ours: the per-client probability of the robust plan, in (0, 1); read only
                    with robust=True.
  """
  SECTION = "tsfa.online"
  DERIVED = ("bandwidth_hz",)
  latency_budget: float = _static(2.0)
  V: float = _static(1.0)
  rho_min: float = _static(0.125)
  temperature: float = _static(0.01)
  max_iters: int = _static(300)
  tol: float = _static(1e-6)
  share_floor: float = _static(1e-6)
  tie_break: float = _static(1e-3)
  precondition: bool = _static(True)
  accelerate: bool = _static(True)
  max_backtracks: int = _static(40)
  continuation: float = _static(0.98)
  start_temperature: float = _static(0.1)
  initial_queue: float = _static(0.0)
  robust: bool = _static(False)
  miss_prob: float = _static(0.05)
  bandwidth_hz: float | None = _static(None)

  def check(self) -> None:
    need = self.need
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    need(num(self.latency_budget) and self.latency_budget > 0, "latency_budget", "> 0 seconds")
    need(num(self.V) and self.V >= 0, "V", ">= 0")
    need(num(self.rho_min) and 0 < self.rho_min <= 1, "rho_min", "a ratio in (0, 1]")
    need(self.bandwidth_hz is None or (num(self.bandwidth_hz) and self.bandwidth_hz > 0),
         "bandwidth_hz", "> 0 Hz")
    need(num(self.temperature) and self.temperature > 0, "temperature", "> 0 (fraction of τ̄)")
    need(isinstance(self.max_iters, int) and self.max_iters >= 1, "max_iters", "an integer >= 1")
    need(num(self.tol) and self.tol >= 0, "tol", ">= 0")
    need(num(self.share_floor) and 0 <= self.share_floor < 1, "share_floor", "in [0, 1)")
    need(num(self.tie_break) and self.tie_break >= 0, "tie_break", ">= 0")
    need(num(self.continuation) and 0 < self.continuation <= 1, "continuation", "a factor in (0, 1]")
    need(num(self.start_temperature) and self.start_temperature > 0, "start_temperature", "> 0")
    need(num(self.initial_queue) and self.initial_queue >= 0, "initial_queue", ">= 0 seconds")
    need(isinstance(self.max_backtracks, int) and self.max_backtracks >= 0, "max_backtracks",
         "an integer >= 0")
    need(isinstance(self.robust, bool), "robust", "True or False")
    need(num(self.miss_prob) and 0 < self.miss_prob < 1, "miss_prob", "a probability in (0, 1)")

  def with_band(self, bandwidth_hz: float) -> "OnlineConfig":
    """This section with the uplink band B_tot (Hz) the solver plans over."""
    return dataclasses.replace(self, bandwidth_hz=float(bandwidth_hz))


class RoundInputs(NamedTuple):
  """What the planner knows at the start of a round, per scheduled client `[K]`."""
  snr: jax.Array            # [K] p·ĝ/(N0·B_tot): planning SNR over the full band (ĝ incl. fading)
  bits_c0: jax.Array        # [K] payload at ρ → 0 (masks, dense leaves), bits
  bits_c1: jax.Array        # [K] extra payload at ρ = 1 (the r kept components' values), bits
  fixed_latency: jax.Array  # [K] compute (+ downlink) seconds, τ^cmp = FLOPs/f_k
  weights: jax.Array        # [K] w_k = n_k/Σ n (over the scheduled clients)
  profile: jax.Array        # [K, r] sorted normalised importance mass p (see bound.py)
  mask: jax.Array           # [K] bool, True = scheduled (False pads fixed shapes)


def make_inputs(gain_est, bits_c0, bits_c1, fixed_latency, weights, profile, chan: ChannelConfig,
                mask=None) -> RoundInputs:
  """RoundInputs from estimated gains `[K]` (ĝ = path gain·fading, with CSI error) and `chan`."""
  g = jnp.asarray(gain_est, jnp.float32)
  f32 = lambda a: jnp.broadcast_to(jnp.asarray(a, jnp.float32), g.shape)
  m = jnp.ones(g.shape, bool) if mask is None else jnp.asarray(mask, bool)
  return RoundInputs(snr_per_hz(g, chan) / chan.bandwidth_hz, f32(bits_c0), f32(bits_c1),
                     f32(fixed_latency), f32(weights), jnp.asarray(profile, jnp.float32), m)


class TSFAState(NamedTuple):
  """Online-stage state."""
  queue: jax.Array   # scalar Q(t), seconds
  rho: jax.Array     # [N] last ratio per client (warm start)
  share: jax.Array   # [N] last bandwidth share b/B per client (warm start)
  round: jax.Array   # int32 number of plans issued


class Diagnostics(NamedTuple):
  objective: jax.Array      # V·Σ w E + Q_eff·smooth_max(τ) at the solution (s²)
  sparsification: jax.Array # Σ_k w_k E_k(ρ_k)
  latency: jax.Array        # [K] planned latency τ_k (s), with the planning gains
  max_latency: jax.Array    # planned round latency max_k τ_k (s)
  smooth_latency: jax.Array # smooth max (s)
  queue: jax.Array          # Q used for this plan (s)
  iterations: jax.Array     # solver iterations used
  converged: jax.Array      # bool: stopped by tolerance before max_iters


def init(num_clients: int, cfg: OnlineConfig) -> TSFAState:
  """Queue Q(0) = cfg.initial_queue (0: empty), ρ = 1 and an equal bandwidth split as the first
  warm start."""
  n = int(num_clients)
  if n < 1:
    raise ValueError(f"num_clients={num_clients!r} is not allowed: an integer >= 1")
  return TSFAState(jnp.float32(cfg.initial_queue), jnp.ones((n,), jnp.float32),
                   jnp.full((n,), 1.0 / n, jnp.float32), jnp.int32(0))


def observe(state: TSFAState, realised_latency, cfg: OnlineConfig) -> TSFAState:
  """Queue update `Q ← max(Q + τ − τ̄, 0)` with the realised round latency τ (s)."""
  q = jnp.maximum(state.queue + jnp.asarray(realised_latency, jnp.float32) - cfg.latency_budget, 0.0)
  return state._replace(queue=q)


# ----------------------------------------------------------------------------------------------------
# The per-round problem in normalised units
# ----------------------------------------------------------------------------------------------------

class _Problem(NamedTuple):
  snr: jax.Array      # [K]
  a0: jax.Array       # [K] c0/(B·τ̄)
  a1: jax.Array       # [K] c1/(B·τ̄)
  fixed: jax.Array    # [K] τ^fixed/τ̄
  w: jax.Array        # [K] weights, 0 where inactive
  profile: jax.Array  # [K, r]
  mask: jax.Array     # [K]
  c_e: jax.Array      # weight of Σ w E in the normalised objective
  c_l: jax.Array      # weight of the smooth max latency (normalised)
  floor: jax.Array    # lower bound of the shares


def _norm_latency(rho, x, p: _Problem):
  """`[K]` latency / τ̄; inactive clients evaluated at a harmless point."""
  xs = jnp.where(p.mask, x, 1.0)
  return client_latency(rho, xs, p.snr, p.a0, p.a1, p.fixed, 1.0)


def _smooth(z, p: _Problem, temperature):
  rho, x = z
  return p.c_l * smooth_max(_norm_latency(rho, x, p), temperature, p.mask)


def _penalty(rho, p: _Problem):
  return p.c_e * jnp.sum(p.w * sparsification_error(rho, p.profile))


def _prox_rho(y, step, coef, profile, lo):
  """Exact `argmin_{ρ ∈ [lo, 1]} coef·E(ρ) + (ρ − y)²/(2·step)` per client (`[K]`, E convex PL).

  On segment j (ρ·r ∈ [j, j+1]) E has slope −r·p_j; the minimiser restricted to each segment ∩ box is
  a clipped shifted point; the best of the r candidates is the prox. O(K·r).
  """
  r = profile.shape[-1]
  j = jnp.arange(r, dtype=jnp.float32)
  seg_lo = jnp.maximum(j / r, lo)
  seg_hi = jnp.minimum((j + 1) / r, 1.0)
  valid = seg_lo <= seg_hi
  cand = jnp.clip(y[:, None] + (step * coef)[:, None] * r * profile, seg_lo, seg_hi)
  cum = jnp.cumsum(profile, axis=-1) - profile  # mass before component j
  e = profile.sum(-1, keepdims=True) - (cum + (cand * r - j) * profile)
  phi = coef[:, None] * e + jnp.square(cand - y[:, None]) / (2.0 * step[:, None])
  phi = jnp.where(valid, phi, jnp.inf)
  best = jnp.argmin(phi, axis=-1)
  return jnp.take_along_axis(cand, best[:, None], -1)[:, 0]


def _metric(z, p: _Problem, temperature, damping=1e-3):
  """Diagonal step metric `(D_ρ [K], D_x [K])` = 1/(Gauss-Newton curvature + damping).

  Curvature of c_l·T·lse(τ/T) along client k's own coordinates: c_l·σ_k·(∂²τ_k + (∂τ_k)²/T) with
  σ = softmax(τ/T) (ρ enters τ linearly, so only the second term for ρ). The damping (ours: 1e-3
  of the largest curvature; for x in log-share units, x²·h) bounds the steps of clients that are
  far from the max (σ ≈ 0): large but finite, so the line search still governs them.
  """
  rho, x = z
  lat = lambda r_, x_, s, a0, a1, f: client_latency(r_, x_, s, a0, a1, f, 1.0)
  xs = jnp.where(p.mask, x, 1.0)
  args = (rho, xs, p.snr, p.a0, p.a1, p.fixed)
  tau = jax.vmap(lat)(*args)
  d_rho = jax.vmap(jax.grad(lat, 0))(*args)
  d_x = jax.vmap(jax.grad(lat, 1))(*args)
  dd_x = jax.vmap(jax.grad(jax.grad(lat, 1), 1))(*args)
  sig = jax.nn.softmax(jnp.where(p.mask, tau / temperature, -jnp.inf))
  h_rho = p.c_l * sig * jnp.square(d_rho) / temperature
  h_x = p.c_l * sig * (dd_x + jnp.square(d_x) / temperature)
  h_rho = h_rho + damping * jnp.max(h_rho) + 1e-12
  h_x = h_x + damping * jnp.max(h_x * jnp.square(xs)) / jnp.square(xs) + 1e-12
  return jnp.where(p.mask, 1.0 / h_rho, 0.0), jnp.where(p.mask, 1.0 / h_x, 0.0)


class _Iter(NamedTuple):
  z: tuple         # accepted iterate (rho [K], x [K])
  y: tuple         # extrapolation point (feasible)
  t: jax.Array     # FISTA momentum scalar
  step: jax.Array  # step length η (in the preconditioned metric)
  k: jax.Array     # iterations done
  done: jax.Array  # stopped by tolerance


def _equalised_shares(rho, p: _Problem, iters: int = 24):
  """`[K]` shares that give every active client the same latency L at ratios ρ (min-max split).

  Bisection on log(L − max_k fixed_k) outside and on log x per client inside (x ∈ [floor, 1]): this
  is the exact minimiser of max_k τ_k over the simplex at fixed ρ, and a far better start than an
  equal split when latencies span orders of magnitude. Returned normalised onto the simplex.
  """
  bits = jnp.where(p.mask, p.a0 + p.a1 * rho, 0.0)
  fixed = jnp.where(p.mask, p.fixed, -jnp.inf)
  l_lo = jnp.max(fixed)
  k_act = jnp.maximum(jnp.sum(p.mask), 1)
  uni = jnp.full(rho.shape, 1.0) / k_act
  l_hi = jnp.max(jnp.where(p.mask, _norm_latency(rho, uni, p), -jnp.inf))
  span = jnp.maximum(l_hi - l_lo, 1e-30)
  log_fl = jnp.log(p.floor)

  def shares_at(level):
    need = bits / jnp.maximum(level - p.fixed, 1e-30)  # required normalised rate
    def inner(_, c):
      lo, hi = c
      mid = 0.5 * (lo + hi)
      ok = spectral_rate(jnp.exp(mid), p.snr) >= need
      return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)
    lo, hi = jax.lax.fori_loop(0, iters, inner, (jnp.full(rho.shape, log_fl), jnp.zeros(rho.shape)))
    x = jnp.exp(hi)
    x = jnp.where(spectral_rate(jnp.ones_like(x), p.snr) < need, 2.0, x)  # needs more than the band
    return jnp.where(p.mask, x, 0.0)

  def outer(_, c):
    lo, hi = c
    mid = 0.5 * (lo + hi)
    fits = shares_at(l_lo + span * jnp.exp(mid)).sum() <= 1.0
    return jnp.where(fits, lo, mid), jnp.where(fits, mid, hi)
  lo, hi = jax.lax.fori_loop(0, iters, outer, (jnp.log(jnp.float32(1e-7)), jnp.float32(0.0)))
  x = shares_at(l_lo + span * jnp.exp(hi))
  return project_simplex(x / jnp.maximum(x.sum(), 1e-30), 1.0, lower=p.floor, mask=p.mask)


def _max_extrapolation(z, z_prev, lo, hi):
  """Largest β ≥ 0 with lo ≤ z + β(z − z_prev) ≤ hi elementwise (inf if unconstrained)."""
  d = z - z_prev
  up = jnp.where(d > 0, (hi - z) / jnp.where(d > 0, d, 1.0), jnp.inf)
  dn = jnp.where(d < 0, (z - lo) / jnp.where(d < 0, -d, 1.0), jnp.inf)
  return jnp.maximum(jnp.min(jnp.minimum(up, dn)), 0.0)


def _solve(p: _Problem, rho0, x0, cfg: OnlineConfig):
  """Accelerated, preconditioned proximal projected gradient (see module docstring) from (rho0, x0)."""
  lo = jnp.float32(cfg.rho_min)
  t_final = jnp.float32(cfg.temperature)
  objective = lambda z, temp: _smooth(z, p, temp) + _penalty(z[0], p)

  def propose(y, g, d, step):
    d_rho, d_x = d
    rho = _prox_rho(y[0] - step * d_rho * g[0], step * d_rho, p.c_e * p.w, p.profile, lo)
    rho = jnp.where(p.mask, rho, y[0])
    x = project_simplex(y[1] - step * d_x * g[1], 1.0, lower=p.floor,
                        weights=jnp.where(p.mask, d_x, 1.0), mask=p.mask)
    return rho, x

  def temperature(k):
    return jnp.maximum(t_final, t_start * cfg.continuation ** k.astype(jnp.float32))

  def body(s: _Iter) -> _Iter:
    temp = temperature(s.k)
    f_z = objective(s.z, temp)  # at this iteration's temperature
    g_y, g = jax.value_and_grad(lambda z: _smooth(z, p, temp))(s.y)
    if cfg.precondition:
      d = _metric(s.y, p, temp)
    else:
      ones = jnp.where(p.mask, 1.0, 0.0)
      d = (ones, ones)

    def attempt(step):
      z = propose(s.y, g, d, step)
      dz = (z[0] - s.y[0], z[1] - s.y[1])
      lin = jnp.sum(g[0] * dz[0]) + jnp.sum(g[1] * dz[1])
      quad = sum(jnp.sum(jnp.where(p.mask, jnp.square(a) / jnp.where(p.mask, b, 1.0), 0.0))
                 for a, b in zip(dz, d)) / (2.0 * step)
      val = _smooth(z, p, temp)
      ok = (val <= g_y + lin + quad + 1e-6 * jnp.abs(g_y)) & jnp.isfinite(val)
      return z, val, quad, ok

    def backtrack(c):
      step, n, *_ = c
      return (step * 0.5, n + 1) + attempt(step * 0.5)

    first = (s.step, jnp.int32(0)) + attempt(s.step)
    step, _, z_new, val, quad, _ = jax.lax.while_loop(
        lambda c: (c[1] < cfg.max_backtracks) & ~c[5], backtrack, first)
    f_new = val + _penalty(z_new[0], p)
    better = f_new <= f_z
    # Monotone FISTA (Beck & Teboulle 2009): keep the better point, restart momentum otherwise.
    z = jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), z_new, s.z)
    f = jnp.minimum(f_new, f_z)
    if cfg.accelerate:
      t_new = jnp.where(better, 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * s.t * s.t)), 1.0)
      beta = jnp.where(better, (s.t - 1.0) / t_new, 0.0)
      # Shorten the extrapolation so that y stays feasible (Σx is preserved automatically).
      beta = jnp.minimum(beta, jnp.minimum(_max_extrapolation(z[0], s.z[0], lo, 1.0),
                                           _max_extrapolation(z[1], s.z[1], p.floor, 1.0)))
      y = jax.tree_util.tree_map(lambda a, b: a + beta * (a - b), z, s.z)
    else:
      t_new, y = s.t, z
    # Stop at the final temperature when the model's predicted decrease is below tol·|f|, or when
    # a plain (restarted, t = 1) step fails to decrease f: in exact arithmetic an accepted step
    # from z cannot increase f, so that only happens at float32 resolution.
    final = temp <= t_final
    done = final & ((better & (quad <= cfg.tol * jnp.abs(f))) | (~better & (s.t <= 1.0) & (s.k > 0)))
    return _Iter(z, y, t_new, step * 2.0, s.k + 1, done)

  x_eq = _equalised_shares(rho0, p)
  x0 = jnp.where(objective((rho0, x_eq), t_final) < objective((rho0, x0), t_final), x_eq, x0)
  z0 = (rho0, x0)
  tau0 = jnp.where(p.mask, _norm_latency(rho0, x0, p), 0.0)
  t_start = jnp.maximum(t_final, cfg.start_temperature * jnp.max(tau0))
  if cfg.continuation >= 1.0:
    t_start = t_final
  s0 = _Iter(z0, z0, jnp.float32(1.0), jnp.float32(1.0), jnp.int32(0), jnp.bool_(False))
  s = jax.lax.while_loop(lambda s: (s.k < cfg.max_iters) & ~s.done, body, s0)
  return s.z[0], s.z[1], s.k, s.done


def _problem(inputs: RoundInputs, queue, cfg: OnlineConfig) -> _Problem:
  tb = jnp.float32(cfg.latency_budget)
  m = jnp.asarray(inputs.mask, bool)
  v = cfg.V / cfg.latency_budget ** 2
  q = (queue + cfg.tie_break * cfg.V / cfg.latency_budget) / tb
  scale = v + q + 1e-30
  n_act = jnp.maximum(jnp.sum(m), 1)
  return _Problem(
      snr=jnp.where(m, inputs.snr, 1.0),
      a0=jnp.where(m, inputs.bits_c0, 0.0) / (cfg.bandwidth_hz * tb),
      a1=jnp.where(m, inputs.bits_c1, 0.0) / (cfg.bandwidth_hz * tb),
      fixed=jnp.where(m, inputs.fixed_latency, 0.0) / tb,
      w=jnp.where(m, inputs.weights, 0.0),
      profile=jnp.where(m[:, None], inputs.profile, 0.0),
      mask=m, c_e=v / scale, c_l=q / scale, floor=cfg.share_floor / n_act)


def _check_inputs(inputs: RoundInputs) -> None:
  k = inputs.mask.shape
  if len(k) != 1:
    raise ValueError(f"RoundInputs.mask must be [K], got shape {inputs.mask.shape} (vmap for batches)")
  for name in ("snr", "bits_c0", "bits_c1", "fixed_latency", "weights"):
    shape = getattr(inputs, name).shape
    if shape != k:
      raise ValueError(f"RoundInputs.{name} has shape {shape}; expected {k} like mask")
  if inputs.profile.ndim != 2 or inputs.profile.shape[0] != k[0] or inputs.profile.shape[1] < 1:
    raise ValueError(f"RoundInputs.profile has shape {inputs.profile.shape}; expected [K={k[0]}, r>=1]")


def _evaluate(rho, bandwidth_hz, inputs: RoundInputs, queue, cfg: OnlineConfig):
  """(objective, Σ w E, τ [K] (0 where inactive), smooth max τ) in seconds / s²."""
  m = inputs.mask
  share = jnp.where(m, jnp.asarray(bandwidth_hz, jnp.float32) / cfg.bandwidth_hz, 1.0)
  tau = client_latency(rho, share, inputs.snr, inputs.bits_c0, inputs.bits_c1, inputs.fixed_latency,
                       cfg.bandwidth_hz)
  tau = jnp.where(m, tau, 0.0)
  spars = jnp.sum(jnp.where(m, inputs.weights * sparsification_error(rho, inputs.profile), 0.0))
  t_smooth = smooth_max(tau, cfg.temperature * cfg.latency_budget, m)
  q_eff = queue + cfg.tie_break * cfg.V / cfg.latency_budget
  return cfg.V * spars + q_eff * t_smooth, spars, tau, t_smooth


def objective(rho, bandwidth_hz, inputs: RoundInputs, queue, cfg: OnlineConfig):
  """The per-round objective `V·Σ_k w_k·E_k(ρ_k) + Q_eff·smooth_max(τ)` in s², `Q_eff = Q + tie_break·V/τ̄`.

  `rho [K]`, `bandwidth_hz [K]`; inactive clients (mask False) are ignored.
  """
  _check_inputs(inputs)
  return _evaluate(rho, bandwidth_hz, inputs, queue, cfg)[0]


def solve(inputs: RoundInputs, queue, cfg: OnlineConfig, rho0=None, share0=None):
  """One round: `(rho [K], bandwidth_hz [K], Diagnostics)` for queue Q (s).

  Warm start: `rho0 [K]` (clipped to [ρ_min, 1]) and `share0 [K]` (b/B, renormalised over the
  active clients); defaults ρ = 1 and an equal split. The equal-latency split at rho0 is tried too
  and the better start kept. Inactive clients get ρ = 0 and b = 0. Jittable (cfg is static) and
  vmappable over all array arguments.
  """
  _check_inputs(inputs)
  p = _problem(inputs, queue, cfg)
  k = p.mask.shape[0]
  rho0 = jnp.ones((k,), jnp.float32) if rho0 is None else jnp.asarray(rho0, jnp.float32)
  share0 = jnp.ones((k,), jnp.float32) if share0 is None else jnp.asarray(share0, jnp.float32)
  share0 = jnp.where(p.mask, jnp.maximum(share0, 0.0), 0.0)
  tot = share0.sum()
  share0 = jnp.where(tot > 0, share0 / jnp.where(tot > 0, tot, 1.0),
                     p.mask / jnp.maximum(p.mask.sum(), 1))
  x0 = project_simplex(share0, 1.0, lower=p.floor, mask=p.mask)
  rho, x, iters, conv = _solve(p, jnp.clip(rho0, cfg.rho_min, 1.0), x0, cfg)
  rho = jnp.where(p.mask, rho, 0.0)
  b = x * cfg.bandwidth_hz
  obj, spars, tau, t_smooth = _evaluate(rho, b, inputs, queue, cfg)
  diag = Diagnostics(obj, spars, tau, jnp.max(tau), t_smooth, jnp.asarray(queue, jnp.float32), iters,
                     conv)
  return rho, b, diag


def plan(state: TSFAState, inputs: RoundInputs, cfg: OnlineConfig, client_ids=None):
  """Solve this round from the state's queue and warm start -> (rho [K], b [K] Hz, diag, state)."""
  k = inputs.mask.shape[0]
  ids = jnp.arange(k) if client_ids is None else jnp.asarray(client_ids)
  rho, b, diag = solve(inputs, state.queue, cfg, state.rho[ids], state.share[ids])
  m = inputs.mask
  new = state._replace(rho=state.rho.at[ids].set(jnp.where(m, rho, state.rho[ids])),
                       share=state.share.at[ids].set(jnp.where(m, b / cfg.bandwidth_hz, state.share[ids])),
                       round=state.round + 1)
  return rho, b, diag, new


def update(state: TSFAState, inputs: RoundInputs, realised_latency, cfg: OnlineConfig,
           client_ids=None):
  """`observe` the previous round's realised latency (ignored on the first call), then `plan`.

  Args:
    state: TSFAState from `init(N, cfg)` or the previous `update`.
    inputs: this round's RoundInputs `[K]` (see `make_inputs`).
    realised_latency: scalar seconds the PREVIOUS round really took (e.g. `Realised.round_latency`).
    client_ids: `[K]` ids of the scheduled clients in `[0, N)` (warm starts follow the client);
      None = slots 0..K−1.
  Returns: (rho [K], bandwidth_hz [K], Diagnostics, new TSFAState).
  """
  observed = observe(state, realised_latency, cfg)
  state = jax.tree_util.tree_map(lambda a, b: jnp.where(state.round > 0, a, b), observed, state)
  return plan(state, inputs, cfg, client_ids)


def min_round_latency(inputs: RoundInputs, cfg: OnlineConfig):
  """Scalar seconds: the smallest planned round latency `max_k τ_k` any bandwidth split reaches with
  every active client at the smallest ratio ρ_min (the exact min-max split, `_equalised_shares`).

  Above `cfg.latency_budget`, no plan of this round meets τ̄, whatever V and the queue are: the
  budget is infeasible for these clients and gains (the trainer warns and counts such rounds).
  Jittable and vmappable like `solve`.
  """
  _check_inputs(inputs)
  p = _problem(inputs, jnp.float32(0.0), cfg)
  rho = jnp.full(p.mask.shape, cfg.rho_min, jnp.float32)
  x = _equalised_shares(rho, p)
  tau = jnp.where(p.mask, _norm_latency(rho, x, p), 0.0)
  return jnp.max(tau) * jnp.float32(cfg.latency_budget)

"""TSFA online solver: time per round and objective gap to a scipy SLSQP reference.

For K = 10 / 100 / 1,000 clients (random cells: uniform-in-disc clients, Rayleigh fading, payloads
spread over two decades, compute latencies 0.05-1 s, r = 8), the jitted `fedlora.tsfa.solve` is
timed: compile (first call) apart, 1 warm-up, median of repeats, `block_until_ready`. Its objective
is compared with scipy SLSQP (analytic gradient, float64, independent numpy objective) where that is
tractable: K = 10 (5 instances, best of 4 starts) and K = 100 (2 instances, best of 2 starts, ~10-20 s
each; SLSQP sometimes stops early there, "more than 3n iterations in LSQ subproblem"); for K = 1,000
(2,000 variables) SLSQP is intractable. For every size the same solver on a much slower homotopy
(continuation 0.995, 5,000 iterations, tol 0) is a second reference; the gap is taken to the better
of the two. A vmapped batch of 16 K=100 scenarios is timed too.
Gap = (f_solver − f_ref)/|f_ref|: negative means the solver beat the reference.

  python benchmarks/bench_tsfa_solver.py [--quick] [--smoke] [--out PATH | --replace]

--quick: fewer instances (2 / 1 / 1); --smoke: one K = 10 instance, 1 SLSQP start, a 200-iteration
slow homotopy, a vmapped batch of 2 x K = 10, 2 repeats. Writes the results file: runs/bench/
tsfa_solver.json, --out PATH, or with --replace the committed one. The committed results:
  python benchmarks/bench_tsfa_solver.py --replace
This module also holds the numpy reference objective and the SLSQP reference used by tests/test_tsfa.py.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

LN2 = np.log(2.0)


# ----------------------------------------------------------------------------------------------------
# Independent numpy reference (float64): instance generator, objective + gradient, SLSQP
# ----------------------------------------------------------------------------------------------------

def random_instance(rng: np.random.Generator, k: int, r: int = 8, budget: float = 1.0) -> dict:
  """One round's problem with the method.md channel defaults, written out in numpy."""
  radius, d0, bw = 500.0, 10.0, 20e6
  d = np.sqrt(rng.uniform(size=k) * (radius ** 2 - d0 ** 2) + d0 ** 2)
  gain = 10 ** (-(128.1 + 37.6 * np.log10(d / 1000.0)) / 10) * rng.exponential(size=k)
  p_w, n0 = 10 ** ((23 - 30) / 10), 10 ** ((-174 - 30) / 10)
  decay = rng.uniform(0.5, 0.95, size=k)
  prof = decay[:, None] ** np.arange(r)[None]
  return dict(
      snr=p_w * gain / (n0 * bw), c0=np.full(k, 1e3),
      c1=rng.uniform(1e6, 2e7, size=k) * 10 ** rng.uniform(-1, 1, size=k),
      fixed=rng.uniform(0.05, 1.0, size=k), w=rng.dirichlet(np.ones(k)),
      profile=prof / prof.sum(1, keepdims=True), queue=rng.uniform(0.2, 5.0) * budget,
      V=rng.uniform(0.5, 5.0) * budget ** 2, budget=budget, bandwidth=bw, rho_min=1.0 / r)


def reference_objective(rho, share, inst: dict, temperature: float = 0.01, tie_break: float = 1e-3):
  """(f, ∇f) of V·Σ w E(ρ) + Q_eff·T·lse(τ/T) at (ρ [K], share = b/B [K]), float64."""
  rho, x = np.asarray(rho, np.float64), np.asarray(share, np.float64)
  k, s, bw = len(rho), inst["snr"], inst["bandwidth"]
  lg = np.log1p(s / x) / LN2
  rate = bw * x * lg
  drate = bw * (lg - s / ((x + s) * LN2))
  bits = inst["c0"] + inst["c1"] * rho
  tau = inst["fixed"] + bits / rate
  t = temperature * inst["budget"]
  m = tau.max()
  e = np.exp((tau - m) / t)
  lse, sig = m + t * np.log(e.sum()), e / e.sum()
  prof = inst["profile"]
  r = prof.shape[1]
  xr = np.clip(rho * r, 0, r)
  j = np.clip(np.floor(xr).astype(int), 0, r - 1)
  cum = np.concatenate([np.zeros((k, 1)), np.cumsum(prof, 1)], 1)
  pj = prof[np.arange(k), j]
  drop = np.maximum(prof.sum(1) - (cum[np.arange(k), j] + (xr - j) * pj), 0.0)
  q = inst["queue"] + tie_break * inst["V"] / inst["budget"]
  f = inst["V"] * np.dot(inst["w"], drop) + q * lse
  g_rho = inst["V"] * inst["w"] * (-r * pj) + q * sig * inst["c1"] / rate
  g_x = q * sig * (-bits * drate / rate ** 2)
  return f, np.concatenate([g_rho, g_x])


def equal_latency_shares(inst: dict, rho) -> np.ndarray:
  """Shares b/B giving all clients one latency at ratios ρ (nested bisection, float64)."""
  bits = inst["c0"] + inst["c1"] * np.asarray(rho, np.float64)
  s, bw, fixed = inst["snr"], inst["bandwidth"], inst["fixed"]

  def shares(level):
    need = bits / np.maximum(level - fixed, 1e-300) / bw
    lo, hi = np.full(len(s), -60.0), np.zeros(len(s))
    for _ in range(80):
      mid = 0.5 * (lo + hi)
      ok = np.exp(mid) * np.log1p(s / np.exp(mid)) / LN2 >= need
      lo, hi = np.where(ok, lo, mid), np.where(ok, mid, hi)
    return np.exp(hi)

  lo, hi = fixed.max(), fixed.max() + 1e6
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (lo, mid) if shares(mid).sum() <= 1 else (mid, hi)
  x = shares(hi)
  return x / x.sum()


def slsqp_reference(inst: dict, starts: int = 4, seed: int = 0, maxiter: int = 3000):
  """Best SLSQP local optimum over `starts` starts: (f, rho, share).

  Start 0: ρ = 1 with the equal-latency split; start 1: ρ = 1 with an equal split; further starts
  random (ρ uniform in the box, shares Dirichlet).
  """
  import scipy.optimize as so
  k = len(inst["w"])
  rng = np.random.default_rng(seed)
  cons = [{"type": "eq", "fun": lambda z: z[k:].sum() - 1.0,
           "jac": lambda z: np.concatenate([np.zeros(k), np.ones(k)])}]
  bounds = [(inst["rho_min"], 1.0)] * k + [(1e-9, 1.0)] * k
  best = None
  for i in range(starts):
    if i == 0:
      z0 = np.concatenate([np.ones(k), equal_latency_shares(inst, np.ones(k))])
    elif i == 1:
      z0 = np.concatenate([np.ones(k), np.ones(k) / k])
    else:
      z0 = np.concatenate([rng.uniform(inst["rho_min"], 1, k), rng.dirichlet(np.ones(k))])
    res = so.minimize(lambda z: reference_objective(z[:k], z[k:], inst), z0, jac=True,
                      method="SLSQP", bounds=bounds, constraints=cons,
                      options=dict(maxiter=maxiter, ftol=1e-14))
    if best is None or res.fun < best.fun:
      best = res
  return float(best.fun), best.x[:k], best.x[k:]


def to_inputs(inst: dict, pad_to: int | None = None):
  """`fedlora.tsfa.RoundInputs` for an instance, optionally padded with inactive clients."""
  import jax.numpy as jnp
  from fedlora.tsfa import RoundInputs
  k = len(inst["w"])
  n = k if pad_to is None else pad_to
  pad = lambda a, v=0.0: np.concatenate([a, np.full((n - k,) + a.shape[1:], v)]).astype(np.float32)
  return RoundInputs(jnp.asarray(pad(inst["snr"], 1.0)), jnp.asarray(pad(inst["c0"])),
                     jnp.asarray(pad(inst["c1"])), jnp.asarray(pad(inst["fixed"])),
                     jnp.asarray(pad(inst["w"])), jnp.asarray(pad(inst["profile"])),
                     jnp.asarray(np.arange(n) < k))


def online_config(inst: dict, **kw):
  from fedlora.tsfa import OnlineConfig
  return OnlineConfig(latency_budget=inst["budget"], V=float(inst["V"]), rho_min=inst["rho_min"],
                      bandwidth_hz=inst["bandwidth"], **kw)


# ----------------------------------------------------------------------------------------------------
# Benchmark
# ----------------------------------------------------------------------------------------------------

def _bench(quick: bool, smoke: bool = False) -> dict:
  import jax
  import jax.numpy as jnp
  from benchmarks.common import timed, write_result
  from fedlora.tsfa import solve

  solve_jit = jax.jit(solve, static_argnames="cfg")
  plan = [(10, 5 if not quick else 2, 4), (100, 2 if not quick else 1, 2), (1000, 2 if not quick else 1, 0)]
  slow_iters, bsz, k_batch, reps = 5000, 16, 100, None
  if smoke:
    plan, slow_iters, bsz, k_batch, reps = [(10, 1, 1)], 200, 2, 10, 2
  rows = []
  for k, n_inst, starts in plan:
    for i in range(n_inst):
      inst = random_instance(np.random.default_rng(1000 * k + i), k)
      inp, cfg = to_inputs(inst), online_config(inst)
      q = jnp.float32(inst["queue"])
      first, med, times = timed(lambda: solve_jit(inp, q, cfg=cfg), repeats=reps or (7 if k < 1000 else 5))
      rho, b, diag = solve_jit(inp, q, cfg=cfg)
      f = reference_objective(np.float64(rho), np.float64(b) / inst["bandwidth"], inst)[0]
      row = dict(clients=k, instance=i, compile_s=first - med, run_ms=1e3 * med,
                 run_ms_all=[1e3 * t for t in times], iterations=int(diag.iterations),
                 converged=bool(diag.converged), objective=f)
      # Second reference for every size: the same solver on a much slower homotopy (a different
      # path: continuation 0.995 from 3x the start temperature, 5,000 iterations, tol 0).
      slow = online_config(inst, continuation=0.995, start_temperature=0.3, max_iters=slow_iters, tol=0.0)
      rho_s, b_s, _ = solve_jit(inp, q, cfg=slow)
      f_slow = reference_objective(np.float64(rho_s), np.float64(b_s) / inst["bandwidth"], inst)[0]
      row.update(slow_homotopy_objective=f_slow)
      f_ref = f_slow
      if starts:
        t0 = time.perf_counter()
        f_slsqp = slsqp_reference(inst, starts=starts)[0]
        row.update(slsqp_objective=f_slsqp, slsqp_starts=starts, slsqp_s=time.perf_counter() - t0,
                   gap_vs_slsqp=(f - f_slsqp) / abs(f_slsqp))
        f_ref = min(f_ref, f_slsqp)
      row.update(reference="best of SLSQP and slow homotopy" if starts else
                 "slow homotopy (SLSQP intractable)", reference_objective=f_ref,
                 rel_gap=(f - f_ref) / abs(f_ref))
      rows.append(row)
      vs = f", vs SLSQP {row['gap_vs_slsqp']:+.2e}" if starts else ""
      print(f"K={k:5d} #{i}: compile {row['compile_s']:.2f} s, run {row['run_ms']:.2f} ms, "
            f"{row['iterations']} it, gap {row['rel_gap']:+.2e} vs {row['reference']}{vs}", flush=True)

  # vmapped batch of scenarios
  k = k_batch
  insts = [random_instance(np.random.default_rng(77 + j), k) for j in range(bsz)]
  cfg = online_config(insts[0]).replace(V=2.0)
  stack = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[to_inputs(x) for x in insts])
  qs = jnp.float32([x["queue"] for x in insts])
  vsolve = jax.jit(jax.vmap(lambda i, q: solve(i, q, cfg)))
  first, med, times = timed(lambda: vsolve(stack, qs), repeats=reps or 5)
  batch = dict(clients=k, scenarios=bsz, compile_s=first - med, run_ms=1e3 * med,
               run_ms_per_scenario=1e3 * med / bsz)
  print(f"vmap {bsz} x K={k}: run {batch['run_ms']:.1f} ms ({batch['run_ms_per_scenario']:.2f} "
        f"ms/scenario)", flush=True)

  summary = []
  for k, _, _ in plan:
    rs = [r for r in rows if r["clients"] == k]
    summary.append(dict(clients=k, instances=len(rs), reference=rs[0]["reference"],
                        compile_s=float(np.median([r["compile_s"] for r in rs])),
                        run_ms=float(np.median([r["run_ms"] for r in rs])),
                        iterations=int(np.median([r["iterations"] for r in rs])),
                        max_rel_gap=float(max(r["rel_gap"] for r in rs)),
                        max_gap_vs_slsqp=(float(max(r["gap_vs_slsqp"] for r in rs))
                                          if "gap_vs_slsqp" in rs[0] else None)))
  print("\n clients | instances | compile s | run ms (median) | iterations | max gap vs ref | "
        "max gap vs SLSQP | reference")
  for s in summary:
    sq = f"{s['max_gap_vs_slsqp']:+16.2e}" if s["max_gap_vs_slsqp"] is not None else f"{'n/a':>16}"
    print(f" {s['clients']:7d} | {s['instances']:9d} | {s['compile_s']:9.2f} | {s['run_ms']:15.2f} | "
          f"{s['iterations']:10d} | {s['max_rel_gap']:+14.2e} | {sq} | {s['reference']}")
  path = write_result("tsfa_solver", dict(summary=summary, rows=rows, vmap_batch=batch,
                                          solver_defaults=dict(max_iters=cfg.max_iters, tol=cfg.tol,
                                                               temperature=cfg.temperature)))
  print(f"wrote {path}")
  return dict(summary=summary, rows=rows, vmap_batch=batch)


def main(argv=None) -> int:
  from benchmarks.common import argument_parser
  ap = argument_parser(__doc__)
  ap.add_argument("--quick", action="store_true", help="fewer instances")
  args = ap.parse_args(argv)
  _bench(args.quick, args.smoke)
  return 0


if __name__ == "__main__":
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
  sys.exit(main())

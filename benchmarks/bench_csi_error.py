"""Deadline misses under imperfect CSI, with and without robust TSFA planning (`tsfa.online.robust`).

Two modes (configs/wireless_compare.py's channel, budget τ̄ and deadline `wireless.deadline_factor·τ̄`):
  mode=solver  no training: `draws` independent rounds of `clients` clients per σ (placement, fading
               and CSI error redrawn), each planned by TSFA's online solver on the CSI estimates
               (plain) or on their miss_prob quantile (robust), realised on the true gains; all
               draws vmapped in one jitted call per σ and plan. Per σ and plan: the fraction of
               client-rounds whose realised latency exceeds (a) the client's own planned latency,
               (b) the round's planned latency max_k τ_k, (c) the deadline, and (c) among the
               clients planned within the deadline (the guarantee: <= miss_prob when robust); and
               the mean planned round latency and ratio. The same draws for every σ and plan; a
               realised latency within 1e-5 (relative) of the planned one is not a miss. The payload and compute are the SOFT rank-8 client of
               configs/wireless_compare.py (`c0_bits`, `c1_bits`, `compute_s`: measured with
               `compressor.payload` and `local_flops` on its built experiment). Writes
               csi_error_solver.json.
  mode=train   federated training runs of configs/wireless_compare.py per σ, plan and seed; per run:
               final accuracy, deadline misses, dropped uploads, mean round latency, uplink bits.
               Writes csi_error.json. (CPU hours at full size: run it on a free machine.)

Keys:
  mode=solver            solver | train
  sigmas=0,0.1,0.2,0.4   wireless.channel.csi_error_std values
  plans=plain,robust     plain: tsfa.online.robust=False; robust: True
  miss_prob=0.05         tsfa.online.miss_prob of the robust plan
  solver mode: draws=2000 clients=10 queue=2.0 (Q in s, a backlog so latency matters) seed=0
               c0_bits, c1_bits, compute_s (defaults above) deadline_factor=2.0 latency_budget=1.0 (τ̄, s)
  train mode:  seeds=0,1,2  workdirs=runs/csi_error (each run in <workdirs>/<plan>_s<σ>_seed<n>)
               key=value any config override for every run (fed.rounds=12 ...)
  smoke=1                solver: 64 draws of 4 clients; train: the SMOKE config, one run
The committed results (benchmarks/results/csi_error_solver.json):
  python benchmarks/bench_csi_error.py mode=solver replace=1
The training study (not committed):
  python benchmarks/bench_csi_error.py mode=train fed.rounds=12 data.max_length=64 eval.every=4
"""
from __future__ import annotations

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (ROOT, check_choices, checked_config, fail, no_unknown,  # noqa: E402
                               parse_overrides, pop_list, pop_one, script_setup, smoke, write_result)

script_setup()

import numpy as np  # noqa: E402

import wireless_compare  # noqa: E402

PLANS = ("plain", "robust")
# SOFT at rank 8 on configs/wireless_compare.py, measured on its built experiment `exp`:
# exp.method.compressor.payload(exp.parts.trainable) = (61696, 2359296) bits and
# fedlora.methods.uplink.local_flops(exp.parts.frozen, tokens) = 3.2707e11 FLOP at the mean 1e12 FLOP/s.
C0_BITS, C1_BITS, COMPUTE_S = 61696.0, 2359296.0, 0.32707


def solver_mode(ov: dict) -> dict:
  import jax
  import jax.numpy as jnp

  from fedlora.tsfa import online
  from fedlora.wireless import channel as wch
  from fedlora.wireless.latency import realise

  sigmas = pop_list(ov, "sigmas", "0,0.1,0.2,0.4", float)
  plans = check_choices("plans", pop_list(ov, "plans", ",".join(PLANS)), PLANS)
  p = pop_one(ov, "miss_prob", 0.05, float)
  draws = pop_one(ov, "draws", 64 if smoke() else 2000, int)
  k = pop_one(ov, "clients", 4 if smoke() else 10, int)
  queue = pop_one(ov, "queue", 2.0, float)
  seed = pop_one(ov, "seed", 0, int)
  c0 = pop_one(ov, "c0_bits", C0_BITS, float)
  c1 = pop_one(ov, "c1_bits", C1_BITS, float)
  compute = pop_one(ov, "compute_s", COMPUTE_S, float)
  factor = pop_one(ov, "deadline_factor", 2.0, float)
  base = wireless_compare.get_config()
  budget = pop_one(ov, "latency_budget", base.tsfa.online.latency_budget, float)
  no_unknown(ov, ["mode", "sigmas", "plans", "miss_prob", "draws", "clients", "queue", "seed",
                  "c0_bits", "c1_bits", "compute_s", "deadline_factor", "latency_budget"])
  for key, v, ok in (("draws", draws, draws >= 1), ("clients", k, k >= 1), ("queue", queue, queue >= 0),
                     ("c0_bits", c0, c0 >= 0), ("c1_bits", c1, c1 > 0), ("compute_s", compute, compute >= 0),
                     ("deadline_factor", factor, factor > 0), ("latency_budget", budget, budget > 0)):
    if not (ok and math.isfinite(v)):
      fail(f"{key}={v!r} is not allowed: draws, clients >= 1; c1_bits, deadline_factor, "
           "latency_budget > 0; queue, c0_bits, compute_s >= 0 (all finite)")
  chan0 = wch.ChannelConfig(bandwidth_hz=base.wireless.channel.bandwidth_hz,
                            compute_speed_flops=base.wireless.channel.compute_speed_flops)
  try:
    cfg = online.OnlineConfig(latency_budget=budget, V=base.tsfa.online.V,
                              rho_min=base.tsfa.online.rho_min, miss_prob=p).with_band(chan0.bandwidth_hz)
    factors = {s: wch.csi_quantile_factor(s, p) for s in sigmas}
  except ValueError as e:
    fail(str(e))
  deadline = factor * budget
  rank = base.lora.rank

  slack = 1.0 + 1e-5  # a realised latency equal to the planned one (float32 order) is not a miss

  @jax.jit
  def scenario(sigma, plan_factor, key):
    """One σ (traced: one compile for all) and plan: the same draws for every σ and plan."""
    def one(key):
      k_pos, k_round, k_csi = jax.random.split(key, 3)
      state = wch.init(k_pos, k, chan0)
      rc = wch.sample_round(state, k_round, jnp.arange(k), chan0)  # σ = 0 here: gain_est = gain
      g_est = wch.estimate_gain(k_csi, rc.gain, sigma)  # the channel's own error model at σ
      fixed = compute * chan0.compute_speed_flops / state.speeds  # compute_s at the mean speed
      inputs = online.make_inputs(g_est * plan_factor, c0, c1, fixed, jnp.full((k,), 1.0 / k),
                                  jnp.full((k, rank), 1.0 / rank), chan0)
      rho, bw, diag = online.solve(inputs, jnp.float32(queue), cfg)
      rho = jnp.maximum(jnp.floor(rho * rank + 1e-4), 1.0) / rank  # SOFT's rank grid (uplink.py)
      real = realise(bw, c0 + c1 * rho, rc.gain, fixed, deadline, chan0)
      return (real.latency > diag.latency * slack, real.latency > diag.max_latency * slack,
              real.missed, diag.latency <= deadline, diag.max_latency, jnp.mean(rho))
    return jax.vmap(one)(jax.random.split(key, draws))

  rows = {}
  for s in sigmas:
    for plan in plans:
      t0 = time.perf_counter()
      own, rnd, ddl, within, lat, rho = map(np.asarray, jax.block_until_ready(scenario(
          jnp.float32(s), jnp.float32(factors[s] if plan == "robust" else 1.0), jax.random.PRNGKey(seed))))
      n = own.size
      rows[f"{plan}/sigma={s:g}"] = {
          "plan": plan, "csi_error_std": s, "planning_factor": factors[s] if plan == "robust" else 1.0,
          "miss_own_planned_latency": float(own.mean()),
          "miss_round_planned_latency": float(rnd.mean()),
          "miss_deadline": float(ddl.mean()),
          "planned_within_deadline": float(within.mean()),
          "miss_deadline_when_planned_within": float(ddl[within].mean()) if within.any() else None,
          "mc_standard_error_at_miss_prob": math.sqrt(p * (1 - p) / n),
          "mean_planned_round_latency_s": float(lat.mean()), "mean_ratio": float(rho.mean()),
          "seconds": time.perf_counter() - t0}
      r = rows[f"{plan}/sigma={s:g}"]
      print(f"σ={s:<5g}{plan:<8} miss own {r['miss_own_planned_latency']:.4f}  round "
            f"{r['miss_round_planned_latency']:.4f}  deadline {r['miss_deadline']:.4f} (planned within: "
            f"{r['miss_deadline_when_planned_within']})  planned τ "
            f"{r['mean_planned_round_latency_s']:.3f} s  mean ρ {r['mean_ratio']:.3f}", flush=True)
  args = {"sigmas": sigmas, "plans": plans, "miss_prob": p, "draws": draws, "clients": k,
          "queue_s": queue, "seed": seed, "c0_bits": c0, "c1_bits": c1, "compute_s": compute,
          "latency_budget_s": budget, "deadline_s": deadline, "rank": rank, "V": cfg.V,
          "rho_min": cfg.rho_min, "bandwidth_hz": chan0.bandwidth_hz}
  return {"args": args, "rows": rows}


def train_mode(ov: dict) -> dict:
  sigmas = pop_list(ov, "sigmas", "0,0.1,0.2,0.4", float)
  plans = check_choices("plans", pop_list(ov, "plans", ",".join(PLANS)), PLANS)
  p = pop_one(ov, "miss_prob", 0.05, float)
  seeds = pop_list(ov, "seeds", "0" if smoke() else "0,1,2", int)
  out_root = str(ov.pop("workdirs", os.path.join(ROOT, "runs", "csi_error")))
  if smoke():
    sigmas, plans = sigmas[-1:], plans[-1:]
  configs = {}
  for s in sigmas:
    for plan in plans:
      for seed in seeds:
        label = f"{plan}/sigma={s:g}/seed={seed}"
        configs[label] = checked_config(wireless_compare.get_config(), {
            "wireless.channel.csi_error_std": s, "tsfa.online.robust": plan == "robust",
            "tsfa.online.miss_prob": p, "seed": seed}, ov, {
            "workdir": os.path.join(out_root, f"{plan}_s{s:g}_seed{seed}"), "progress": False})
  from fedlora.train import run
  from fedlora.utils.metrics import read_metrics
  runs = {}
  for label, c in configs.items():
    print(f"--- {label}", flush=True)
    summ = run(c)
    recs = read_metrics(os.path.join(c.workdir, "metrics.jsonl"))
    sent = sum(len(r["missed"]) for r in recs if "missed" in r)
    runs[label] = {
        "final_test_accuracy": summ["final_test_accuracy"],
        "deadline_misses": int(sum(r.get("deadline_misses", 0) for r in recs)),
        "uploads": int(sent),
        "mean_round_latency_s": float(np.mean([r["round_latency"] for r in recs])),
        "mean_ratio": float(np.mean([np.mean(r["ratio"]) for r in recs])),
        "cum_uplink_bits": 8 * summ["cum_uplink_bytes"],
        "latency_budget_infeasible_rounds": summ.get("latency_budget_infeasible_rounds")}
    r = runs[label]
    print(f"{label}: acc {100 * r['final_test_accuracy']:.2f} %, misses {r['deadline_misses']}/"
          f"{r['uploads']}, mean τ {r['mean_round_latency_s']:.3f} s", flush=True)
  return {"overrides": ov, "args": {"sigmas": sigmas, "plans": plans, "miss_prob": p, "seeds": seeds},
          "runs": runs}


def main(argv):
  ov = parse_overrides(argv)
  mode = pop_one(ov, "mode", "solver", str)
  check_choices("mode", [mode], ("solver", "train"))
  payload = solver_mode(ov) if mode == "solver" else train_mode(ov)
  path = write_result("csi_error_solver" if mode == "solver" else "csi_error", payload)
  if path:
    print(f"-> {path}")


if __name__ == "__main__":
  main(sys.argv[1:])

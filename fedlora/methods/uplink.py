"""The wireless uplink of a round: channel draw, ratio/bandwidth plan, realised latency, drops.

`make_uplink(config, compressor, ...)` returns (init_state, plan, deliver, plot) for `Method`:
  * plan: draws this round's block fading for the K sampled clients (and the planner's CSI estimate),
    then either solves TSFA's online problem (`allocation='tsfa'`: per-client ratio ρ_k and bandwidth
    b_k) or uses the configured fixed ratio with an equal bandwidth split (`allocation='fixed'`).
  * deliver: with the TRUE gains, realised latency τ_k = compute + bits_k / R_k(b_k); an upload later
    than the round deadline (`wireless.deadline_factor · tsfa.latency_budget`) is dropped and counted;
    the TSFA virtual queue observes the realised round latency.
TSFA plans with the method's own compressor: its payload model `compressor.payload(trainable)` and
the importance profile each client's compressor reported (`CompressOut.profile`, the same scores it
selects by; uniform before the client's first upload). ours: the server plans with the profile the
client reported last time it took part — r floats of 32 bits, counted as `profile` bits by the trainer.
With `wireless.channel.downlink=True` each client's fixed latency also holds the downlink broadcast of
the global trainable tree (`broadcast_bits` at the downlink rate, `wireless.latency.downlink_latency`).
With `tsfa.online.robust=True` TSFA plans (upload and downlink) on conservative gains
(`wireless.channel.conservative_gain`: each client's true gain is below it with probability
`tsfa.online.miss_prob`); the realised latencies still use the true gains.
Infeasible budget (ours, TSFA only): before round 1, `init_state` computes the smallest round latency
any split reaches at ρ_min for the expected channel (`expected_min_latency`); above τ̄ it warns once.
Every round records `min_round_latency` (the same at ρ_min for the round's own planning gains) and
`latency_budget_infeasible` (it exceeds τ̄); the first such round warns (unless the warning before
round 1 was given), summary.json counts them (`latency_budget_infeasible_rounds`).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from fedlora.lora.hetrank import slice_rank
from fedlora.run.errors import warn
from fedlora.tsfa import online
from fedlora.wireless import channel as wch
from fedlora.wireless.latency import downlink_latency, realise, shannon_rate


def local_flops(frozen: dict, tokens_per_round: int) -> float:
  """ours: the standard 6·N·tokens estimate of a training step (forward 2N, backward 4N per token),
  N = frozen non-embedding parameters (adapters are negligible)."""
  n = 0
  for path, x in jax.tree_util.tree_leaves_with_path(frozen):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if "embed" not in name:
      n += int(np.prod(x.shape))
  return 6.0 * n * tokens_per_round


def make_uplink(config, compressor, *, allocation: str, ratio: float, rank_grid: bool = False,
                broadcast_bits: float = 0.0, client_ranks=None):
  """(init_state, plan, deliver, plot) closures for a method that goes through the wireless channel.

  compressor: the method's Compressor; TSFA plans with `compressor.payload(trainable)`.
  allocation: 'tsfa' (online ρ_k, b_k) or 'fixed' (`ratio`, equal bandwidth split).
  rank_grid: the compressor keeps whole rank components (SOFT, SVD), so a ratio ρ really sends
  ceil(ρ·r) of r. ours: TSFA's continuous ratio is then rounded DOWN to the grid m/r (m >= 1), so the
  realised payload never exceeds the one the latency plan was made for.
  broadcast_bits: downlink bits each sampled client receives per round (latency only with
  `wireless.channel.downlink=True`).
  client_ranks: `[N]` heterogeneous client ranks (fedlora/lora/hetrank.py) or None. With ranks, the
  payload model of client k is the compressor's at its own rank, `payload(trainable sliced to r_k)`
  (per-client c0_k, c1_k for TSFA), its ratio ρ_k is relative to its own r_k components and the rank
  grid is m/r_k.
  """
  chan = config.wireless.channel
  use_tsfa = allocation == "tsfa"
  tcfg = config.tsfa.online.with_band(chan.bandwidth_hz)
  deadline = config.tsfa.online.latency_budget * config.wireless.deadline_factor
  ratio = float(ratio)
  robust = use_tsfa and tcfg.robust
  cache, warned = {}, {"budget": False}

  def planning_gain(gain_est):
    """`[K]` the gains TSFA plans on: the estimates, or their conservative quantile (robust)."""
    if not robust:
      return gain_est
    return wch.conservative_gain(gain_est, chan.csi_error_std, tcfg.miss_prob)

  hetero = client_ranks is not None

  def consts(inputs):
    if "c" not in cache:
      if hetero:  # [N] each client's own-rank payload model
        by_rank = {int(r): compressor.payload(slice_rank(inputs.trainable, int(r)))
                   for r in sorted(set(np.asarray(client_ranks).tolist()))}
        c0 = jnp.asarray([by_rank[int(r)][0] for r in client_ranks], jnp.float32)
        c1 = jnp.asarray([by_rank[int(r)][1] for r in client_ranks], jnp.float32)
      else:
        c0, c1 = compressor.payload(inputs.trainable)
      c0 += inputs.extra_upload_bits  # e.g. SCAFFOLD's dense Δc_i rides along (0 without it)
      tokens = config.fed.local_steps * config.fed.batch_size * config.data.max_length
      cache["c"] = (c0, c1, local_flops(inputs.frozen, tokens))
    return cache["c"]

  def init_state(inputs):
    n = int(inputs.num_examples.shape[0])
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2 * 10**6)
    cs = wch.init(key, n, chan)
    ts = online.init(n, tcfg)
    r = config.lora.rank
    if use_tsfa:
      check_budget(cs, inputs)
    return {"channel": cs._asdict(), "tsfa": ts._asdict(),
            "profiles": jnp.full((n, r), 1.0 / r, jnp.float32)}

  @jax.jit
  def _plan(mstate, ids, key, weights, c0, c1, flops):
    cs = wch.ChannelState(**mstate["channel"])
    rc = wch.sample_round(cs, key, ids, chan)
    compute = flops / cs.speeds[ids]
    g_plan = planning_gain(rc.gain_est)  # rc.gain_est itself unless tsfa.online.robust
    fixed = compute + downlink_latency(broadcast_bits, g_plan, chan)  # what the planner sees
    k = ids.shape[0]
    if use_tsfa:
      inputs = online.make_inputs(g_plan, c0, c1, fixed, weights, mstate["profiles"][ids], chan)
      rho, bw, diag, ts = online.plan(online.TSFAState(**mstate["tsfa"]), inputs, tcfg, ids)
      if rank_grid and hetero:  # each client's own grid m / r_k
        r = ranks[ids]
        rho = jnp.maximum(jnp.floor(rho * r + 1e-4), 1.0) / r
      elif rank_grid:
        r = config.lora.rank
        rho = jnp.maximum(jnp.floor(rho * r + 1e-4), 1.0) / r
      extra = {"solver_iters": diag.iterations, "planned_round_latency": diag.max_latency,
               "sparsification_error": diag.sparsification}
      mstate = dict(mstate, tsfa=ts._asdict())
    else:
      rho = jnp.full((k,), ratio, jnp.float32)
      bw = jnp.full((k,), chan.bandwidth_hz / k, jnp.float32)
      extra = {}
    plan = {"ratio": rho, "bandwidth_hz": bw, "gain": rc.gain, "gain_est": rc.gain_est,
            "compute_latency": compute,
            "downlink_latency": downlink_latency(broadcast_bits, rc.gain, chan), "ids": ids, **extra}
    return plan, mstate

  ranks = jnp.asarray(client_ranks, jnp.float32) if hetero else None

  def plan(mstate, ids, key, inputs):
    c0, c1, flops = consts(inputs)
    if hetero:
      c0, c1 = c0[ids], c1[ids]
    w = inputs.num_examples[ids].astype(jnp.float32)
    out, mstate = _plan(mstate, ids, key, w / w.sum(), c0, c1, flops)
    if use_tsfa:  # apart from _plan, whose computation stays what it was
      out = dict(out, min_round_latency=_min_latency(out["gain_est"], out["compute_latency"], c0, c1))
    return out, mstate

  @jax.jit
  def _min_latency(gain_est, compute, c0, c1):
    """Smallest round latency (s) of this round's plan problem at ρ_min (`online.min_round_latency`)."""
    g = planning_gain(gain_est)
    return online.min_round_latency(_latency_inputs(g, compute, c0, c1, chan), tcfg)

  def _latency_inputs(g, compute, c0, c1, band):
    """RoundInputs for the latency alone (weights and profile do not enter it)."""
    k = g.shape[0]
    fixed = compute + downlink_latency(broadcast_bits, g, chan)  # the downlink keeps the real band
    return online.make_inputs(g, c0, c1, fixed, jnp.full((k,), 1.0 / k), jnp.ones((k, 1)), band)

  def check_budget(cs, inputs):
    """Warns once when τ̄ cannot be met at ρ_min with the expected channel (module docstring).

    The expected round: every client at mean fading (E[h] = 1; with robust, its conservative gain),
    all N clients on N/K times the band, i.e. the level at which the K clients of a round need the
    band on average; returns that latency (s)."""
    n, k = int(cs.distances_m.shape[0]), int(config.fed.clients_per_round)
    c0, c1, flops = consts(inputs)
    band = chan.replace(bandwidth_hz=chan.bandwidth_hz * n / k)
    g = planning_gain(wch.path_gain(cs.distances_m, chan))
    compute = flops / cs.speeds
    lat = float(online.min_round_latency(_latency_inputs(g, compute, c0, c1, band),
                                         tcfg.with_band(band.bandwidth_hz)))
    cache["expected_min_latency"] = lat
    if lat > tcfg.latency_budget and not warned["budget"]:
      warned["budget"] = True
      warn(budget_message(lat, float(jnp.max(compute)), "with the expected channel (mean fading) a "
                          f"round of {k} of the {n} clients"))
    return lat

  def budget_message(lat, compute_max, what):
    t = config.tsfa.online
    return (f"the latency budget tsfa.online.latency_budget τ̄ = {t.latency_budget} s cannot be met by "
            f"any ratio: {what} takes at least {lat:.4g} s at the smallest ratio tsfa.online.rho_min = "
            f"{t.rho_min} with the best bandwidth split (compute alone up to {compute_max:.4g} s)"
            f"{', planning on robust gains' if robust else ''}. TSFA then sends at ρ_min and the "
            "latency queue only grows (uploads past the deadline, wireless.deadline_factor · τ̄, are "
            "dropped). Raise tsfa.online.latency_budget, lower fed.clients_per_round, raise "
            "wireless.channel.bandwidth_hz, or lower tsfa.online.rho_min or lora.rank; summary.json "
            "counts the rounds (latency_budget_infeasible_rounds)")

  @jax.jit
  def _deliver(mstate, plan, bits, profiles):
    fixed = plan["compute_latency"] + plan["downlink_latency"]
    real = realise(plan["bandwidth_hz"], bits, plan["gain"], fixed, deadline, chan)
    ts = online.observe(online.TSFAState(**mstate["tsfa"]), real.round_latency, tcfg)
    prof = mstate["profiles"].at[plan["ids"]].set(profiles)
    rate = shannon_rate(plan["bandwidth_hz"], plan["gain"], chan)
    rec = {"latency": real.latency, "upload_latency": real.latency - fixed,
           "compute_latency": plan["compute_latency"], "downlink_latency": plan["downlink_latency"],
           "rate_bps": rate,
           "bandwidth_hz": plan["bandwidth_hz"], "missed": real.missed,
           "round_latency": real.round_latency, "queue": ts.queue}
    return (~real.missed).astype(jnp.float32), dict(mstate, tsfa=ts._asdict(), profiles=prof), rec

  def deliver(mstate, plan, bits, profiles):
    delivered, mstate, rec = _deliver(mstate, plan, bits, profiles)
    rec = {k: np.asarray(v) for k, v in rec.items()}
    rec["deadline_misses"] = int(rec["missed"].sum())
    for k in ("solver_iters", "planned_round_latency", "sparsification_error"):
      if k in plan:
        rec[k] = np.asarray(plan[k])
    if "min_round_latency" in plan:
      lat = float(plan["min_round_latency"])
      rec["min_round_latency"] = lat
      rec["latency_budget_infeasible"] = lat > config.tsfa.online.latency_budget
      if rec["latency_budget_infeasible"] and not warned["budget"]:
        warned["budget"] = True
        warn(budget_message(lat, float(np.max(rec["compute_latency"])),
                            f"this round's {len(rec['latency'])} clients (planning gains)"))
    return delivered, mstate, rec

  def plot(records, workdir):
    plot_uplink(records, os.path.join(workdir, "uplink.png"), config.tsfa.online.latency_budget)

  return init_state, plan, deliver, plot


def plot_uplink(records, out_png, budget):
  """Round latency vs budget (with running average), queue, per-round mean ratio, deadline misses."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if not records or "round_latency" not in records[0]:
    return
  t = [r["round"] for r in records]
  lat = np.array([r["round_latency"] for r in records], float)
  fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
  ax[0].plot(t, lat, ".", alpha=0.6, label="round latency")
  ax[0].plot(t, np.cumsum(lat) / np.arange(1, len(lat) + 1), "-", label="running mean")
  ax[0].axhline(budget, color="k", ls="--", label="budget τ̄")
  ax[0].set_xlabel("round"), ax[0].set_ylabel("s"), ax[0].legend(fontsize=8)
  ax[1].plot(t, [np.mean(r["ratio"]) for r in records], "-", label="mean ratio ρ")
  ax[1].set_xlabel("round"), ax[1].set_ylabel("ratio"), ax[1].set_ylim(0, 1.05)
  ax[2].plot(t, [r["queue"] for r in records], "-", label="queue Q")
  ax[2].bar(t, [r["deadline_misses"] for r in records], alpha=0.4, color="r", label="misses")
  ax[2].set_xlabel("round"), ax[2].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)

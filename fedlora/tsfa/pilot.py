"""TSFA's offline stage inside a run: a short pilot at r_max measures the bound's constants, then
`offline.choose` picks the rank r, V and ρ_min the run continues with (`tsfa.offline.enabled`).

`offline_stage(config, build) -> config` (called by the trainer before it builds the experiment,
with the trainer's `build`):
  1. if `<workdir>/tsfa_offline.json` exists, its recorded choice is applied (a resumed run rebuilds
     the same shapes; the pilot is not rerun);
  2. else a pilot of `tsfa.offline.pilot_rounds` rounds runs in `<workdir>/pilot/` with the SAME
     method and compressor at rank `tsfa.offline.r_max`, every client uploading at ρ = 1 (no
     channel, no drops: the pilot measures, it does not allocate), and measures (ours, the paper
     does not give its estimators):
       * importance decay: the pooled profile `[r_max]` the compressor reports (its own scores),
         averaged over clients and rounds -> `profile` for `choose` and the geometric decays
         `rep_decay` = `importance_decay` (`bound.fit_geometric_decay`);
       * covariance of separately averaged factors: per round, with client factors A_k = A + ΔA_k,
         B_k = B + ΔB_k and data weights w_k, Cov = Σ_k w_k A_k B_k − (Σ_k w_k A_k)(Σ_k w_k B_k)
         = Σ_k w_k (A_k − Ā)(B_k − B̄); C = Σ_adapters ‖Cov‖_F² / Σ_adapters ‖Σ_k w_k A_k B_k − A B‖_F²
         (covariance energy relative to the ideal product update; dense d_in×d_out products, fine
         for a pilot); the bound's covariance(r) = c_cov·ζ²·r is set to C·r/r_max
         (`drift` = mean C, `cov_coeff` = 1/r_max);
       * compute latency: 6·N·tokens FLOPs over the mean client speed (`methods.uplink.local_flops`);
       * bits per component: the compressor's payload model at r_max, c1/r_max, and the
         ρ-independent bits per rank (c0 − dense bits)/r_max;
  3. `offline.choose` evaluates the bound for r ∈ {1, 2, 4, …, r_max} under τ̄ and B_tot and picks
     r, ρ_min, V (horizon `tsfa.offline.horizon_rounds`, 0 = fed.rounds);
  4. the table of terms, the constants and the pilot's measurements are written to
     `<workdir>/tsfa_offline.json` (and printed); the returned config has `lora.rank = r`,
     `tsfa.online.V = V`, `tsfa.online.rho_min = ρ_min`. The pilot's own uplink is reported there
     (`pilot.uplink_bits`), not added to the main run's totals.
Multi-process runs: every process runs the (collective) pilot; process 0 alone reads and writes
`tsfa_offline.json` and `pilot/metrics.jsonl`, and the file it read is broadcast, so all processes
apply the same choice.
"""
from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np

from fedlora.run.processes import broadcast_text, is_lead

FILE = "tsfa_offline.json"


def _apply(config, choice: dict):
  online = config.tsfa.online.replace(V=float(choice["V"]), rho_min=float(choice["rho_min"]))
  return config.replace(lora=config.lora.replace(rank=int(choice["rank"])),
                        tsfa=config.tsfa.replace(online=online))


def covariance_ratio(global_tr, deltas, weights) -> tuple[float, float]:
  """(Σ‖Cov‖², Σ‖ideal product update‖²) over adapters for client deltas `[K, ...]` (module doc)."""
  from fedlora.compress.base import adapter_pairs
  w = np.asarray(weights, np.float64)
  w = w / w.sum()
  cov_e = upd_e = 0.0
  for (_, a0, b0), (_, da, db) in zip(adapter_pairs(global_tr), adapter_pairs(deltas)):
    a = np.asarray(a0, np.float64)[None] + np.asarray(da, np.float64)   # [K, d_in, r]
    b = np.asarray(b0, np.float64)[None] + np.asarray(db, np.float64)   # [K, r, d_out]
    ideal = np.einsum("k,kir,kro->io", w, a, b)
    sep = np.einsum("k,kir->ir", w, a) @ np.einsum("k,kro->ro", w, b)
    cov_e += float(np.sum((ideal - sep) ** 2))
    upd_e += float(np.sum((ideal - np.asarray(a0, np.float64) @ np.asarray(b0, np.float64)) ** 2))
  return cov_e, upd_e


def run_pilot(config, build) -> dict:
  """The pilot (module docstring, step 2); returns its measurements. `build`: config -> the built
  experiment (the trainer's `build`, passed in: this module never imports the trainer)."""
  from fedlora.compress.base import dense_bits_of
  from fedlora.methods.uplink import local_flops
  from fedlora.utils.metrics import MetricsWriter
  o = config.tsfa.offline
  pc = config.replace(
      lora=config.lora.replace(rank=int(o.r_max)),
      tsfa=config.tsfa.replace(offline=o.replace(enabled=False)),
      wireless=config.wireless.replace(enabled=False),
      method=config.method.replace(allocation="fixed", ratio=1.0),
      workdir=os.path.join(config.workdir, "pilot"))
  exp = build(pc)
  writer = None
  if is_lead():  # multi-process: the pilot runs on every process, process 0 alone writes its metrics
    os.makedirs(pc.workdir, exist_ok=True)
    writer = MetricsWriter(pc.workdir, 0)
  state = exp.algorithm.init()
  tr, cstates, server = state["trainable"], state["client_states"], state["server"]
  profiles, ratios_c, up_bits = [], [], 0.0
  for t in range(1, int(o.pilot_rounds) + 1):
    ids, _, k_clients = exp.algorithm.clients(t)  # the clients and keys the main round would use
    ctx = exp.round_fns.context(server, t)
    out, cstates = exp.round_fns.client_phase(tr, exp.parts.frozen, exp.clients, ids, k_clients,
                                              jnp.ones(ids.shape, jnp.float32), cstates, ctx)
    weights = exp.clients.num_examples[ids].astype(jnp.float32)
    cov_e, upd_e = covariance_ratio(tr, out.delta, weights)
    ratio_c = cov_e / upd_e if upd_e > 0 else 0.0
    tr, server = exp.round_fns.server_phase(tr, server, out.delta, weights, t, out.control_delta)
    prof = np.asarray(out.profile, np.float64)                      # [K, r_max]
    profiles.append(prof)
    ratios_c.append(ratio_c)
    up_bits += float(jnp.sum(out.bits))
    if writer is not None:
      writer.write({"round": t, "clients": ids, "train_loss": float(out.metrics["loss"].mean()),
                    "uplink_bits": out.bits, "covariance_ratio": ratio_c,
                    "profile": prof.mean(0)})
  c0, c1 = exp.method.compressor.payload(exp.parts.trainable)
  dense = dense_bits_of(exp.parts.trainable, pc.compress.bits_per_value)
  tokens = pc.fed.local_steps * pc.fed.batch_size * pc.data.max_length
  profile = np.concatenate(profiles).mean(0)
  tot = profile.sum()
  profile = profile / tot if tot > 0 else np.full_like(profile, 1.0 / profile.size)
  r = int(o.r_max)
  return {"rounds": int(o.pilot_rounds), "r_max": r, "profile": profile.tolist(),
          "covariance_ratio": ratios_c, "uplink_bits": up_bits,
          "compute_latency_s": local_flops(exp.parts.frozen, tokens)
          / float(config.wireless.channel.compute_speed_flops),
          "bits_per_component": c1 / r, "mask_bits_per_rank": max(c0 - dense, 0.0) / r,
          "dense_bits": dense}


def choose_from_pilot(config, pilot: dict):
  """`(OfflineResult, PilotConstants)` from the pilot's measurements (module docstring, step 3)."""
  from fedlora.tsfa.bound import PilotConstants, fit_geometric_decay
  from fedlora.tsfa.offline import choose
  o = config.tsfa.offline
  prof = np.asarray(pilot["profile"])
  try:
    decay = fit_geometric_decay(prof)
  except ValueError:       # fewer than two positive entries: essentially rank one
    decay = 1e-6
  consts = PilotConstants(rep_coeff=1.0, rep_decay=decay, cov_coeff=1.0 / pilot["r_max"],
                          drift=float(np.mean(pilot["covariance_ratio"])), sparse_coeff=1.0,
                          importance_decay=decay, latency_coeff=1.0)
  res = choose(r_max=pilot["r_max"], clients_per_round=int(config.fed.clients_per_round),
               latency_budget=float(config.tsfa.online.latency_budget),
               bits_per_component=pilot["bits_per_component"],
               fixed_latency=pilot["compute_latency_s"],
               channel=config.wireless.channel, consts=consts,
               profile=prof, mask_bits_per_rank=pilot["mask_bits_per_rank"],
               dense_bits=pilot["dense_bits"],
               horizon_rounds=int(o.horizon_rounds or config.fed.rounds),
               violation_tol=float(o.violation_tol), max_drop=float(o.max_drop))
  return res, consts


def offline_stage(config, build):
  """Applies (running the pilot first if needed) the offline choice; see the module docstring.
  `build`: config -> the built experiment (the trainer's `build`)."""
  if not config.tsfa.offline.enabled:
    return config
  path = os.path.join(config.workdir, FILE)
  o = config.tsfa.offline
  text = None
  if is_lead() and os.path.exists(path):
    with open(path) as f:
      text = f.read()
  text = broadcast_text(text)  # multi-process: process 0's file decides for every process
  if text is not None:
    rec = json.loads(text)
    if rec["pilot"]["r_max"] != o.r_max or rec["pilot"]["rounds"] != o.pilot_rounds:
      raise ValueError(f"{path} was written with r_max={rec['pilot']['r_max']}, pilot_rounds="
                       f"{rec['pilot']['rounds']}; this config has r_max={o.r_max}, pilot_rounds="
                       f"{o.pilot_rounds}: use the config that wrote it or a fresh workdir")
    return _apply(config, rec["chosen"])
  from fedlora.tsfa.offline import format_table
  pilot = run_pilot(config, build)
  res, consts = choose_from_pilot(config, pilot)
  chosen = {"rank": res.rank, "V": res.V, "rho_min": res.rho_min}
  rec = {"chosen": chosen, "table": {k: v.tolist() for k, v in res.table.items()},
         "notes": list(res.notes), "constants": consts._asdict(), "pilot": pilot}
  if not is_lead():  # every process ran the same pilot and choice; process 0 alone writes it
    return _apply(config, chosen)
  os.makedirs(config.workdir, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(rec, f, indent=1)
  os.replace(tmp, path)
  print(f"TSFA offline stage (pilot: {pilot['rounds']} rounds at r_max={pilot['r_max']}):\n"
        f"{format_table(res)}", flush=True)
  return _apply(config, chosen)

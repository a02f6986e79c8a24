"""What each compressor keeps of a round's update, measured on the product the model uses.

SOFT keeps m = ceil(ρ·r) whole rank components (a_i, b_i) of the client's update; SVD truncation
keeps the update's projection on the top-m singular directions of the client's product; top-k and
random-k keep entries. The accuracy sweep (`sweep_methods.py`) cannot separate them beyond seed
noise, so this script measures the cause directly, on the same client updates for every compressor:

  1. global factors: `init` (the run's initial adapters, B = 0) and `trained` (the last checkpoint
     of a finished sweep run, `label`/`seed`, default main/soft_r4 seed 0);
  2. K sampled clients run their local steps DENSELY (method 'ideal'; the sweep's data, seed and
     common overrides), giving updates (Δa_k, Δb_k) per adapter;
  3. each compressor at each ratio ρ compresses every client's update (no error feedback) to (Δa'_k, Δb'_k).

Per adapter (a0 [d_in, r], b0 [r, d_out]), with P(a, b) = a @ b:
  client error     ‖P(a0 + Δa', b0 + Δb') − P(a0 + Δa, b0 + Δb)‖_F / ‖P(a0 + Δa, b0 + Δb) − P(a0, b0)‖_F
                   (what the client's sent update misses of its own product change; median over k);
  aggregate error  the same for the server's mean of the K updates (factors averaged separately, as
                   FedAvg of LoRA does; plain mean: the sweep weights by examples);
  factor kept      ‖(Δa', Δb')‖² / ‖(Δa, Δb)‖² (energy of the factor update that is sent).
Prints median / 90th percentile over adapters and writes benchmarks/results/update_capture.json.

Keys:
  label=soft_r4 group=main seed=0   the sweep run whose final checkpoint gives the trained factors
  sweep=benchmarks/results/sweep_methods.json   the sweep results file naming its folder and the
                                    sweep's common overrides (which the clients train with)
  ratios=0.25,0.125                 numbers in (0, 1]
  clients=10                        an integer >= 1
  compressors=soft,soft_product,svd,topk,randk   of COMPRESSORS below
  name=update_capture               the results file's name (<name>.json)
  trained=1                         0: the init factors only, no checkpoint needed
  key=value                         config overrides of the clients' and the init factors' config
                                    (e.g. `lora.init=graded optim.name=sgd`)
  smoke=1                           the first ratio, at most 2 clients, compressors soft and topk (the
                                    sizes are the sweep's: `sweep=` a smoke run's results file)
The committed results:
  python benchmarks/bench_update_capture.py replace=1                    (update_capture.json)
  python benchmarks/bench_update_capture.py name=update_capture_graded label=soft_product group=graded lora.init=graded lora.init_decay=0.5 replace=1
  python benchmarks/bench_update_capture.py name=update_capture_reorth label=reorth_updated group=reorth replace=1
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (RESULTS, check_choices, checked_config, fail, parse_overrides,  # noqa: E402
                               pop_list, pop_one, script_setup, smoke, write_result)

script_setup()

import numpy as np  # noqa: E402

# name -> (registered compressor, its options)
COMPRESSORS = {"soft": ("soft", {"score_on": "delta"}), "soft_product": ("soft", {"score_on": "product"}),
               "soft_updated": ("soft", {"score_on": "updated"}), "svd": ("svd", {}),
               "topk": ("topk", {}), "randk": ("randk", {})}


def pairs(tree) -> dict:
  """`{path: (a, b)}` of every adapter of `tree` (`adapter_pairs`), as numpy float64."""
  from fedlora.compress.base import adapter_pairs
  return {p: (np.asarray(a, np.float64), np.asarray(b, np.float64)) for p, a, b in adapter_pairs(tree)}


def errors(a0, b0, da, db, da_s, db_s) -> dict:
  """Client errors for one adapter: da, db `[K, ...]` dense updates, da_s, db_s the sent ones."""
  p0 = a0 @ b0
  out = {"client": [], "kept": []}
  for k in range(da.shape[0]):
    full = (a0 + da[k]) @ (b0 + db[k])
    sent = (a0 + da_s[k]) @ (b0 + db_s[k])
    out["client"].append(np.linalg.norm(sent - full) / max(np.linalg.norm(full - p0), 1e-30))
    out["kept"].append((np.sum(da_s[k] ** 2) + np.sum(db_s[k] ** 2))
                       / max(np.sum(da[k] ** 2) + np.sum(db[k] ** 2), 1e-30))
  full = (a0 + da.mean(0)) @ (b0 + db.mean(0))
  sent = (a0 + da_s.mean(0)) @ (b0 + db_s.mean(0))
  return {"client": float(np.median(out["client"])), "kept": float(np.median(out["kept"])),
          "aggregate": float(np.linalg.norm(sent - full) / max(np.linalg.norm(full - p0), 1e-30))}


def restore_like(like, restored):
  """`restored` (nested dicts of numpy, a checkpoint read without a target) in `like`'s structure."""
  import jax
  import jax.numpy as jnp

  def get(path, _):
    node = restored
    for p in path:
      node = node[str(getattr(p, "key", getattr(p, "idx", p)))]
    return jnp.asarray(node)
  return jax.tree_util.tree_map_with_path(get, like)


def measure(exp, glob, ids, ratios, names, key) -> dict:
  """`{ratio: {compressor: median / p90 over adapters of the client and aggregate errors, kept}}`."""
  import jax
  import jax.numpy as jnp
  from fedlora.compress import get_compressor
  rf = exp.round_fns
  n = int(exp.clients.num_clients)
  states = rf.init_client_states(glob, n)
  out, _ = rf.client_phase(glob, exp.parts.frozen, exp.clients, ids, key, jnp.ones(ids.shape[0]),
                           states, rf.context(rf.init_server(glob), 1))
  dense = jax.tree_util.tree_map(np.asarray, out.delta)  # [K, ...]: the ideal method sends all
  g, d_pairs = pairs(glob), pairs(dense)
  res = {}
  for name in names:
    reg, opts = COMPRESSORS[name]
    comp = get_compressor(reg, opts)
    upd = jax.jit(comp.update)
    for ratio in ratios:
      sent = []
      for k in range(ids.shape[0]):
        d_k = jax.tree_util.tree_map(lambda x, k=k: jnp.asarray(x[k]), dense)
        o = upd(comp.init(glob), d_k, jnp.float32(ratio), jax.random.fold_in(key, k), glob)
        sent.append(jax.tree_util.tree_map(np.asarray, o.delta))
      stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *sent)
      rows = [errors(*g[p], *d_pairs[p], a_s, b_s) for p, (a_s, b_s) in pairs(stacked).items()]
      res.setdefault(str(ratio), {})[name] = {
          f"{m}_{q}": float(np.percentile([r[m] for r in rows], 50 if q == "median" else 90))
          for m in ("client", "aggregate", "kept") for q in ("median", "p90")}
  return res


def main(argv):
  import jax
  from benchmarks import sweep_methods as sweep
  from benchmarks.bench_soft_alignment import final_state
  from fedlora.train import build
  ov = parse_overrides(argv)
  label, group = str(ov.pop("label", "soft_r4")), str(ov.pop("group", "main"))
  seed, k = pop_one(ov, "seed", 0, int), pop_one(ov, "clients", 10, int)
  ratios = pop_list(ov, "ratios", "0.25,0.125", float)
  out_name = str(ov.pop("name", "update_capture"))
  names = check_choices("compressors", pop_list(
      ov, "compressors", ",".join(c for c in COMPRESSORS if c != "soft_updated")), COMPRESSORS)
  trained = pop_one(ov, "trained", 1, bool)
  sweep_file = str(ov.pop("sweep", os.path.join(RESULTS, "sweep_methods.json")))
  if k < 1:
    fail(f"clients={k}: an integer >= 1")
  bad = [r for r in ratios if not 0.0 < r <= 1.0]
  if bad or not ratios:
    fail(f"ratios={ratios}: numbers in (0, 1]")
  if smoke():
    ratios, k, names = ratios[:1], min(k, 2), [n for n in names if n in ("soft", "topk")] or names[:1]
  if not os.path.exists(sweep_file):
    fail(f"sweep={sweep_file!r}: no such results file of benchmarks/sweep_methods.py")
  with open(sweep_file) as f:
    sweep_res = json.load(f)
  rows = sweep_res["groups"].get(group, {})
  if label not in rows:
    fail(f"group={group!r} label={label!r} is not in {sweep_file}: groups {sorted(sweep_res['groups'])}, "
         f"labels of that group {sorted(rows)}")
  row = rows[label]
  common = sweep_res["common_overrides"]
  wd = row.get("workdirs", {}).get(str(seed)) or os.path.join(row.get("folder", ""), f"seed{seed}")
  step, state = final_state(wd) if trained else (None, None)
  if trained and step is None:
    fail(f"{wd} holds no checkpoint: run benchmarks/sweep_methods.py runs={label} seeds={seed} first "
         "(or trained=0)")
  # `ov`: what is left are config overrides, checked (with the sweep's) before anything is built
  config = checked_config(sweep.run_config("ideal", {"wireless.enabled": False}, common, "", seed), ov,
                          use_smoke=False)  # smoke=1 reads a smoke sweep: its common overrides are SMOKE
  exp = build(config)
  ids = jax.random.choice(jax.random.PRNGKey(seed), int(exp.clients.num_clients),
                          (min(k, int(exp.clients.num_clients)),), replace=False)
  key = jax.random.PRNGKey(1000 + seed)
  out = {}
  globs = [("init", exp.parts.trainable)]
  if trained:
    globs.append(("trained", restore_like(exp.parts.trainable, state["trainable"])))
  for tag, glob in globs:
    out[tag] = measure(exp, glob, ids, ratios, names, key)
    for ratio, rows in out[tag].items():
      print(f"\nglobal factors: {tag}" + (f" ({group}/{label} seed {seed}, round {step})"
                                          if tag == "trained" else " (round 0)") + f", ratio {ratio}")
      print(f"{'compressor':<14}{'client err med':>15}{'p90':>7}{'aggregate err med':>19}{'p90':>7}"
            f"{'factor kept med':>16}")
      for name, r in rows.items():
        print(f"{name:<14}{r['client_median']:>15.3f}{r['client_p90']:>7.3f}"
              f"{r['aggregate_median']:>19.3f}{r['aggregate_p90']:>7.3f}{r['kept_median']:>16.3f}")
  path = write_result(out_name, {"label": f"{group}/{label}", "seed": seed, "round": step,
                                         "ratios": ratios, "clients": int(ids.shape[0]),
                                         "common_overrides": common, "overrides": ov,
                                         "results": out})
  print(f"-> {path}")


if __name__ == "__main__":
  main(sys.argv[1:])

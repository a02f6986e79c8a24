"""The fair comparison as one command: accuracy vs cumulative uplink bits, mean ± std over seeds.

Every run is configs/wireless_compare.py (2 MHz uplink, τ̄ = 1 s) with one method and a few overrides;
all runs of a seed share data, clients, channel draws and the model init. Groups:

  main      no deadline drops (wireless.deadline_factor = inf: the paper's latency constraint is a
            long-term average): ideal, SOFT at fixed ρ ∈ {1/8, 1/4, 1/2}, SOFT + TSFA at τ̄ = 1 s, at
            τ̄ = 0.55 s (the latency the fixed-ρ = 1/4 rows spend), 0.5 s and 0.45 s, top-k, random-k, SVD
            truncation (ρ = 1/4), FFA-LoRA; and ideal_r2, dense LoRA of rank 2 = ρ·r (the equal-bits
            reference: it sends what a rank-8 sparsifier at ρ = 1/4 sends), top-k at equal bits
            (ρ = 7/32: with its 1-bit-per-entry bitmap it then sends SOFT ρ = 1/4's adapter bits)
  robust    the same methods with deadline drops (deadline = wireless_compare's 2·τ̄)
  tsfa_all  ablation: the baselines under TSFA allocation (each with its own payload model and
            importance profile) and SOFT + TSFA with score_on='product'
  score     ablation: SOFT ρ = 1/4 scoring the update ('delta'), the updated factors, the product,
            each with the regulariser's B term 'gram' and 'cosine' (method.ortho_b)
  ortho     ablation: SOFT ρ = 1/4 with ortho_weight ∈ {0, 1e-3, 1e-2, 1e-1}
  init      ablation: SOFT ρ = 1/4 with lora.init ∈ {orthogonal, kaiming, gaussian}
  r8        the baselines at ρ = 1/8 (SOFT's is main/soft_r8), and SOFT ρ = 1/8 with the 'cosine' B term
            scoring the product: where compression costs more, compressors separate more
  ef        ablation: error feedback on (off: the score and main groups) for SOFT ρ = 1/4 (three
            regulariser/score pairs) and for top-k, random-k and SVD at ρ = 1/4 (top-k also at equal
            bits, ρ = 7/32); SOFT + TSFA with it
            at τ̄ = 0.5 s and 0.45 s
  senders   the server averages each entry over the uploads that carry it (server.mean = 'senders')
            instead of over all uploads: SOFT, SVD, top-k and random-k at ρ = 1/4 and 1/8, SOFT + TSFA
            at τ̄ = 0.5 s and 0.45 s
  skew      strong label skew (50 clients, Dirichlet α = 0.1 at equal sizes, configs/skewed.py:dir01's
            split): ideal, SOFT, SVD, top-k, random-k at ρ = 1/4, SOFT + EF, SOFT + TSFA at τ̄ = 0.5 s
  reorth    SOFT with the server's re-orthogonalisation (method.reorth: the global factors rewritten
            in their product's singular basis every round, so s_i = σ_i at each round's start):
            ρ = 1/4 scoring the update, the updated factors or the product; ρ = 1/8 and SOFT + TSFA
            at τ̄ = 0.5 s and 0.45 s scoring the updated factors (the best of the three at 1/4)
  graded    every method with lora.init='graded' (A's orthonormal column i scaled by 0.5**i, so a
            round's update concentrates in the leading rank components): ideal, SOFT ρ = 1/4 scoring
            the product, SVD, top-k, random-k at ρ = 1/4, SOFT + TSFA at τ̄ = 0.5 s, SOFT ρ = 1/8
  queue     SOFT + TSFA at τ̄ = 0.5 s and 0.45 s with the queue starting at 2·τ̄
            (tsfa.online.initial_queue) instead of empty, whose first round sends everything
  rank      the offline stage's check: SOFT + TSFA at lora.rank ∈ {2, 4, 8, 16, 32} under the same
            latency budget, and one run with tsfa.offline.enabled (pilot at r_max = 32 picks the rank;
            its choice is printed with the table) — the choice should be within one grid step of
            the best rank of the sweep; and both stages at τ̄ = 0.5 s (offline_t050) against the
            same rank sweep at τ̄ = 0.5 s (rank_<r>_t050); the report's rank-check table gives,
            per budget, the best rank, the offline stage's choices and their distance in grid steps

  python benchmarks/sweep_methods.py [groups=main,score] [runs=soft_r4,svd_r4] [seeds=0,1,2]
         [rounds=20] [max_length=128] [eval_every=5] [stop_at=HH:MM] [rerun=0]
         [workdirs=runs/sweep] [smoke=1] [key=value ...]

Each run's folder is <workdirs>/<method>-<config hash>/seed<k> (runs of one config share it, whatever
their labels; the results file maps labels to folders). A finished run of the same config (its
fingerprint.json) is skipped, and so is one the results file already holds (its folder gone), so the
script is resumable per run (an interrupted run resumes from its checkpoint, a run of fewer rounds
continues); a finished run of another config in that folder stops
the script, naming the keys that differ. Groups (and runs=..., if given) run in the order given;
`seeds` says which seeds to run, the report holds every finished seed found.
`rerun=1`: also run the seeds the results file holds (their folders gone; e.g. to pair new rows with
reference rows measured on the same machine: float rounding differs between CPUs, and a final
accuracy can move by an article); the new runs replace those rows' seeds.
`stop_at` (UTC HH:MM): no new run starts after the next such time (tomorrow's if today's has
passed). Other `key=value` pairs are config overrides for every run. `smoke=1`: the SMOKE config of
benchmarks/common.py is a common override of every run (e.g. `smoke=1 groups=main runs=soft_r4
seeds=0`). The groups, run labels, seeds, stop_at, rerun and every selected run's config are checked
before the first run. Results (from every finished run found, also those of earlier invocations, and
the rows of the results file already there when its common overrides are the same and the run's
folder is gone, e.g. in a fresh clone): the results file and beside it <results>.md and .png. The
committed results (benchmarks/results/sweep_methods.{json,md,png}):
  python benchmarks/sweep_methods.py rounds=20 max_length=32 eval_every=5 replace=1
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (RESULTS, ROOT, SMOKE, apply_overrides, check_choices, fail,  # noqa: E402
                               output_beside, parse_overrides, pop_list, pop_one, result_path,
                               script_setup, smoke, write_result)

script_setup()

import numpy as np  # noqa: E402


INF = math.inf
RANKS = (2, 4, 8, 16, 32)  # the rank sweep's grid: one grid step is a factor of 2
# the offline stage's check, per latency budget: (rank rows' label suffix, the offline row's label)
RANK_CHECKS = (("", "offline"), ("_t050", "offline_t050"))
FIXED = {"method.allocation": "fixed"}
TSFA = {"method.allocation": "tsfa"}


def _soft(rho, **kw):
  return ("soft", {**FIXED, "method.ratio": rho, **kw})


def grid() -> list:
  """`[(group, label, method, overrides)]`, in launch order within each group."""
  base = {
      "ideal": ("ideal", {"wireless.enabled": False}),
      "soft_r4": _soft(0.25),
      "svd_r4": ("svd", {**FIXED, "method.ratio": 0.25}),
      "topk_r4": ("topk", {**FIXED, "method.ratio": 0.25}),
      "randk_r4": ("randk", {**FIXED, "method.ratio": 0.25}),
      "soft_tsfa": ("soft", TSFA),
      # TSFA at the latency the fixed-ρ = 1/4 rows spend (≈ 0.53-0.58 s per round with an equal
      # split, measured): the same-latency comparison (τ̄ = 1 s lets TSFA spend about twice as long)
      "soft_tsfa_t055": ("soft", {**TSFA, "tsfa.online.latency_budget": 0.55}),
      "soft_tsfa_t050": ("soft", {**TSFA, "tsfa.online.latency_budget": 0.50}),  # tighter budgets
      "soft_tsfa_t045": ("soft", {**TSFA, "tsfa.online.latency_budget": 0.45}),
      "ffa": ("ffa", FIXED),
      "soft_r8": _soft(0.125), "soft_r2": _soft(0.5),
  }
  out = []
  for label, (m, ov) in base.items():
    out.append(("main", label, m, {**ov, "wireless.deadline_factor": INF}))
  # the equal-bits dense reference: rank ρ·r = 2 LoRA sent whole (what SOFT at ρ = 1/4 of rank 8 sends)
  out.append(("main", "ideal_r2", "ideal", {"wireless.enabled": False, "lora.rank": 2,
                                            "wireless.deadline_factor": INF}))
  # top-k at SOFT ρ = 1/4's bits: its bitmap (1 bit per entry) leaves k·q = 7/32 of the dense values
  out.append(("main", "topk_r4_eqbits", "topk", {**FIXED, "method.ratio": 7 / 32,
                                                  "wireless.deadline_factor": INF}))
  for label, (m, ov) in base.items():
    if label != "ideal":
      out.append(("robust", label, m, dict(ov)))
  nodl = {"wireless.deadline_factor": INF}
  out.append(("tsfa_all", "soft_tsfa_product", "soft", {**TSFA, **nodl, "compress.score_on": "product"}))
  for m in ("svd", "topk", "randk"):
    out.append(("tsfa_all", f"{m}_tsfa", m, {**TSFA, **nodl}))
  for b in ("gram", "cosine"):  # every key explicit: the labels hold whatever the defaults are
    for s in ("delta", "updated", "product"):
      out.append(("score", f"{b}_{s}", *_soft(0.25, **{"method.ortho_b": b, "compress.score_on": s,
                                                       **nodl})))
  for w in (0.0, 1e-3, 1e-2, 1e-1):
    out.append(("ortho", f"ortho_{w:g}", *_soft(0.25, **{"method.ortho_weight": w, **nodl})))
  for i in ("orthogonal", "kaiming", "gaussian"):
    out.append(("init", f"init_{i}", *_soft(0.25, **{"lora.init": i, **nodl})))
  for b, sc in (("gram", "delta"), ("cosine", "product"), ("cosine", "updated")):
    out.append(("ef", f"ef_{b}_{sc}", *_soft(0.25, **{"compress.error_feedback": True, "method.ortho_b": b,
                                                     "compress.score_on": sc, **nodl})))
  for m in ("topk", "randk", "svd"):
    out.append(("ef", f"ef_{m}", m, {**FIXED, "method.ratio": 0.25, "compress.error_feedback": True,
                                     **nodl}))
  out.append(("ef", "ef_topk_eqbits", "topk", {**FIXED, "method.ratio": 7 / 32,
                                               "compress.error_feedback": True, **nodl}))
  for t in (0.5, 0.45):  # SOFT + TSFA with error feedback
    out.append(("ef", f"ef_soft_tsfa_t{round(100 * t):03d}", "soft",
                {**TSFA, **nodl, "tsfa.online.latency_budget": t, "compress.error_feedback": True}))
  for m in ("svd", "topk", "randk"):  # ρ = 1/8: compression costs more, so compressors separate more
    out.append(("r8", f"{m}_r8", m, {**FIXED, "method.ratio": 0.125, **nodl}))
  out.append(("r8", "soft_r8_cosine_product", *_soft(0.125, **{"method.ortho_b": "cosine",
                                                              "compress.score_on": "product", **nodl})))
  snd = {"server.mean": "senders", **nodl}
  for rho, tag in ((0.25, "r4"), (0.125, "r8")):
    for m in ("soft", "svd", "topk", "randk"):
      out.append(("senders", f"{m}_{tag}_senders", m, {**FIXED, "method.ratio": rho, **snd}))
  for t in (0.5, 0.45):
    out.append(("senders", f"soft_tsfa_t{round(100 * t):03d}_senders", "soft",
                {**TSFA, "tsfa.online.latency_budget": t, **snd}))
  # strong label skew (configs/skewed.py:dir01's split): 50 clients, Dirichlet(0.1) at equal sizes
  skew = {"data.partition": "client_dirichlet", "data.dirichlet_alpha": 0.1, "data.num_clients": 50,
          "data.min_examples_per_client": 4, **nodl}
  out.append(("skew", "ideal_skew", "ideal", {"wireless.enabled": False, **skew}))
  for m in ("soft", "svd", "topk", "randk"):
    out.append(("skew", f"{m}_r4_skew", m, {**FIXED, "method.ratio": 0.25, **skew}))
  out.append(("skew", "ef_soft_r4_skew", "soft", {**FIXED, "method.ratio": 0.25,
                                                   "compress.error_feedback": True, **skew}))
  out.append(("skew", "soft_tsfa_t050_skew", "soft", {**TSFA, "tsfa.online.latency_budget": 0.5,
                                                       **skew}))
  for sc in ("delta", "updated", "product"):
    out.append(("reorth", f"reorth_{sc}", *_soft(0.25, **{"method.reorth": True,
                                                        "compress.score_on": sc, **nodl})))
  reo = {"method.reorth": True, "compress.score_on": "updated", **nodl}  # the best score at 1/4
  out.append(("reorth", "reorth_r8_updated", *_soft(0.125, **reo)))
  for t in (0.5, 0.45):
    out.append(("reorth", f"reorth_tsfa_t{round(100 * t):03d}", "soft",
                {**TSFA, "tsfa.online.latency_budget": t, **reo}))
  # A's columns scaled by 0.5**i (lora.init='graded'): a round's update concentrates in the leading
  # rank components, where the 'product' score sees it; every method with the same init, so the
  # compressors are compared on the same updates
  gr = {"lora.init": "graded", "lora.init_decay": 0.5, **nodl}
  out.append(("graded", "ideal", "ideal", {"wireless.enabled": False, **gr}))
  out.append(("graded", "soft_product", *_soft(0.25, **{"compress.score_on": "product", **gr})))
  for m in ("svd", "topk", "randk"):
    out.append(("graded", m, m, {**FIXED, "method.ratio": 0.25, **gr}))
  out.append(("graded", "soft_tsfa_t050", "soft", {**TSFA, "tsfa.online.latency_budget": 0.5,
                                                   "compress.score_on": "product", **gr}))
  out.append(("graded", "soft_product_r8", *_soft(0.125, **{"compress.score_on": "product", **gr})))
  for t in (0.5, 0.45):  # TSFA's queue starting at 2·τ̄ instead of empty (the first rounds' overspend)
    out.append(("queue", f"soft_tsfa_t{round(100 * t):03d}_q", "soft",
                {**TSFA, **nodl, "tsfa.online.latency_budget": t, "tsfa.online.initial_queue": 2 * t}))
  for r in RANKS:
    out.append(("rank", f"rank_{r}", "soft", {**TSFA, **nodl, "lora.rank": r}))
  for r in RANKS:  # the same sweep at the budget both stages were run at (rank_8_t050 = soft_tsfa_t050)
    out.append(("rank", f"rank_{r}_t050", "soft", {**TSFA, **nodl, "lora.rank": r,
                                                   "tsfa.online.latency_budget": 0.5}))
  out.append(("rank", "offline", "soft", {**TSFA, **nodl, "tsfa.offline.enabled": True,
                                          "tsfa.offline.r_max": 32}))
  # both stages under a tighter budget: the offline stage's rank, then TSFA's ratios at τ̄ = 0.5 s
  out.append(("rank", "offline_t050", "soft", {**TSFA, **nodl, "tsfa.offline.enabled": True,
                                               "tsfa.offline.r_max": 32,
                                               "tsfa.online.latency_budget": 0.5}))
  return out


def run_dirs(out_root, common) -> dict:
  """`{(group, label): folder}`, the folder named by the run's config: `<method>-<hash>` with the
  hash of its fingerprint (every result-shaping key, `common` included, seed 0). Runs of the same
  config share a folder whatever their labels (score/gram_delta == main/soft_r4 while those are the
  defaults), and a changed default or override gives new folders: nothing is re-labelled or lost."""
  from fedlora.run.fingerprint import fingerprint
  memo = (out_root, json.dumps(common, sort_keys=True, default=str))
  if memo not in _RUN_DIRS:  # ~100 configs validated and hashed: once per invocation, not per report
    dirs = {}
    for group, label, method, ov in grid():
      h = fingerprint(run_config(method, ov, common, "", 0))["hash"]
      dirs[(group, label)] = os.path.join(out_root, f"{method}-{h[:12]}")
    _RUN_DIRS[memo] = dirs
  return dict(_RUN_DIRS[memo])


_RUN_DIRS: dict = {}


def run_config(method, ov, common, workdir, seed):
  import wireless_compare
  c = wireless_compare.get_config()
  c.method.name = method
  apply_overrides(c, ov)
  apply_overrides(c, common)
  c.seed = seed
  c.workdir = workdir
  c.progress = False
  return c


def check_finished(config) -> bool:
  """True when `config.workdir` holds a finished run OF THIS CONFIG; a finished run of another config
  (e.g. written before a default changed) is an error naming the keys that differ, never a result."""
  from fedlora.run.fingerprint import describe_differences, differences, fingerprint
  if not os.path.exists(os.path.join(config.workdir, "summary.json")):
    return False
  old = json.load(open(os.path.join(config.workdir, "fingerprint.json")))
  new = fingerprint(config)
  if old["hash"] != new["hash"]:
    raise SystemExit(f"{config.workdir} holds a finished run of another config "
                     f"({describe_differences(differences(old['items'], new['items']))}); move it "
                     "away or pass another out=")
  # fewer rounds than asked (fed.rounds is not in the fingerprint): the run resumes and continues
  return json.load(open(os.path.join(config.workdir, "summary.json")))["rounds"] >= config.fed.rounds


def run_one(method, ov, common, workdir, seed):
  from fedlora.train import run
  return run(run_config(method, ov, common, workdir, seed))


def summarise(workdir) -> dict | None:
  """One finished run: final accuracy, bits, latency, and the accuracy-vs-bits curve."""
  from fedlora.utils.metrics import read_metrics
  p = os.path.join(workdir, "summary.json")
  if not os.path.exists(p):
    return None
  s = json.load(open(p))
  recs = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  lat = [r["round_latency"] for r in recs if "round_latency" in r]
  offline = os.path.join(workdir, "tsfa_offline.json")
  chosen = ({"offline_chosen_rank": json.load(open(offline))["chosen"]["rank"]}
            if os.path.exists(offline) else {})
  return {
      **chosen,
      "final_test_accuracy": s["final_test_accuracy"],
      "uplink_bits": 8 * s["cum_uplink_bytes"],
      "uplink_attempted_bits": 8 * s.get("cum_uplink_attempted_bytes", s["cum_uplink_bytes"]),
      "profile_bits": 8 * s.get("cum_profile_bytes", 0.0),
      "mean_ratio": float(np.mean([np.mean(r["ratio"]) for r in recs])),
      "mean_round_latency_s": float(np.mean(lat)) if lat else None,
      "first_round_latency_s": float(lat[0]) if lat else None,  # TSFA's empty queue: see group queue
      "deadline_misses": int(sum(r.get("deadline_misses", 0) for r in recs)),
      "train_seconds": s["train_seconds_all_rounds"],
      "curve": [(r["round"], r["test_accuracy"], 8 * r["cum_uplink_bytes"]) for r in recs
                if "test_accuracy" in r],
  }


def aggregate(runs: dict) -> dict:
  """`{seed: summary}` -> mean/std over seeds (curves aligned on evaluated rounds)."""
  seeds = sorted(runs)
  acc = np.array([runs[s]["final_test_accuracy"] for s in seeds])
  bits = np.array([runs[s]["uplink_bits"] for s in seeds])
  rounds = sorted(set.intersection(*[{c[0] for c in runs[s]["curve"]} for s in seeds]))
  curve = []
  for t in rounds:
    a = [c[1] for s in seeds for c in runs[s]["curve"] if c[0] == t]
    b = [c[2] for s in seeds for c in runs[s]["curve"] if c[0] == t]
    curve.append((t, float(np.mean(a)), float(np.std(a)), float(np.mean(b))))
  lat = [runs[s]["mean_round_latency_s"] for s in seeds if runs[s]["mean_round_latency_s"] is not None]
  first = [runs[s]["first_round_latency_s"] for s in seeds  # rows read back from an older results
           if runs[s].get("first_round_latency_s") is not None]  # file may lack it
  return {"seeds": seeds, "acc_mean": float(acc.mean()), "acc_std": float(acc.std()),
          "uplink_bits_mean": float(bits.mean()),
          "uplink_attempted_bits_mean": float(np.mean([runs[s]["uplink_attempted_bits"] for s in seeds])),
          "profile_bits_mean": float(np.mean([runs[s]["profile_bits"] for s in seeds])),
          "mean_ratio": float(np.mean([runs[s]["mean_ratio"] for s in seeds])),
          "mean_round_latency_s": float(np.mean(lat)) if lat else None,
          "first_round_latency_s": float(np.mean(first)) if first else None,
          "deadline_misses": float(np.mean([runs[s]["deadline_misses"] for s in seeds])),
          "curve": curve}


def earlier_runs(path, common) -> dict:
  """`{(config folder name, seed): summary}` from an earlier results file written with the same
  common overrides, so a fresh checkout (no runs/ folder) that adds rows keeps the committed ones."""
  if not os.path.exists(path):
    return {}
  old = json.load(open(path))
  if old.get("common_overrides") != json.loads(json.dumps(common)):
    return {}
  out = {}
  for rows in old.get("groups", {}).values():
    for r in rows.values():
      ranks = dict(zip(sorted(r.get("per_seed", {}), key=int), r.get("offline_chosen_rank", [])))
      for seed, summary in r.get("per_seed", {}).items():
        extra = {"offline_chosen_rank": ranks[seed]} if seed in ranks else {}
        out[(os.path.basename(r["folder"]), int(seed))] = {**extra, **summary}
  return out


def seeds_found(folder, earlier, name) -> set:
  """Seeds with a `seed<k>` folder under `folder` or an entry of `earlier` under config `name`."""
  on_disk = {int(d[4:]) for d in (os.listdir(folder) if os.path.isdir(folder) else [])
             if d.startswith("seed") and d[4:].isdigit()}
  return on_disk | {seed for (n, seed) in earlier if n == name}


def collect(out_root, seeds, common, earlier=None) -> dict:
  """Every row with a finished seed: read from its folder, else (same config folder name, same
  common overrides) from `earlier` (`earlier_runs`); such seeds are listed under "from_results_file".
  seeds: the seeds to report, or None for every seed found (on disk or in `earlier`)."""
  res = {}
  dirs = run_dirs(out_root, common)
  earlier = earlier or {}
  for group, label, method, ov in grid():
    runs, kept = {}, []
    folder = dirs[(group, label)]
    wanted = seeds if seeds is not None else sorted(seeds_found(folder, earlier, os.path.basename(folder)))
    for seed in wanted:
      wd = os.path.join(folder, f"seed{seed}")
      if check_finished(run_config(method, ov, common, wd, seed)):
        runs[seed] = summarise(wd)
      elif (os.path.basename(folder), seed) in earlier:
        runs[seed] = earlier[(os.path.basename(folder), seed)]
        kept.append(seed)
    if runs:
      res.setdefault(group, {})[label] = {"method": method, "overrides": ov, "folder": folder,
                                          **aggregate(runs), "per_seed": runs}
      if kept:
        res[group][label]["from_results_file"] = kept
      chosen = [runs[s]["offline_chosen_rank"] for s in runs if "offline_chosen_rank" in runs[s]]
      if chosen:
        res[group][label]["offline_chosen_rank"] = chosen
  return res


def seed_diffs(r: dict, ref: dict) -> np.ndarray:
  """`r`'s final accuracy minus `ref`'s per seed, in points, over the seeds both finished (in seed
  order; empty when none). Runs of one seed share data, clients, channel draws and init, so the
  per-seed difference removes most of the seed-to-seed spread the two means carry."""
  common = sorted(set(r["per_seed"]) & set(ref["per_seed"]), key=int)
  return np.array([100 * (r["per_seed"][s]["final_test_accuracy"]
                          - ref["per_seed"][s]["final_test_accuracy"]) for s in common])


def paired(r: dict, ref: dict | None):
  """(mean, std, n) of `seed_diffs(r, ref)`; None without a reference or a shared seed."""
  d = seed_diffs(r, ref) if ref is not None else np.array([])
  if not d.size:
    return None
  return float(d.mean()), float(d.std()), len(d)


# (row, reference) pairs compared per seed: the issue's targets (SOFT vs SVD, top-k, random-k at equal
# bits), each with error feedback (and what EF does to each), with the server's senders mean, under
# label skew, at ρ = 1/8, and against the dense rank-2 adapter that sends the same bits
HEAD_TO_HEAD = (
    (("main", "soft_r4"), ("main", "svd_r4")), (("main", "soft_r4"), ("main", "topk_r4")),
    (("main", "soft_r4"), ("main", "topk_r4_eqbits")), (("main", "soft_r4"), ("main", "randk_r4")),
    (("main", "soft_r4"), ("main", "ideal_r2")),
    (("ef", "ef_gram_delta"), ("ef", "ef_svd")), (("ef", "ef_gram_delta"), ("ef", "ef_topk")),
    (("ef", "ef_gram_delta"), ("ef", "ef_topk_eqbits")), (("ef", "ef_gram_delta"), ("ef", "ef_randk")),
    (("ef", "ef_gram_delta"), ("main", "svd_r4")), (("ef", "ef_gram_delta"), ("main", "soft_r4")),
    (("ef", "ef_topk"), ("main", "topk_r4")), (("ef", "ef_randk"), ("main", "randk_r4")),
    (("ef", "ef_svd"), ("main", "svd_r4")),
    (("senders", "soft_r4_senders"), ("senders", "svd_r4_senders")),
    (("senders", "soft_r4_senders"), ("senders", "topk_r4_senders")),
    (("senders", "soft_r4_senders"), ("senders", "randk_r4_senders")),
    (("senders", "soft_r4_senders"), ("main", "soft_r4")),
    (("senders", "randk_r4_senders"), ("main", "randk_r4")),
    (("senders", "topk_r4_senders"), ("main", "topk_r4")),
    (("skew", "soft_r4_skew"), ("skew", "svd_r4_skew")),
    (("skew", "soft_r4_skew"), ("skew", "topk_r4_skew")),
    (("skew", "soft_r4_skew"), ("skew", "randk_r4_skew")),
    (("skew", "ef_soft_r4_skew"), ("skew", "svd_r4_skew")),
    (("skew", "ef_soft_r4_skew"), ("skew", "soft_r4_skew")),
    (("main", "soft_r8"), ("r8", "svd_r8")), (("main", "soft_r8"), ("r8", "topk_r8")),
    (("main", "soft_r8"), ("r8", "randk_r8")),
    (("reorth", "reorth_delta"), ("main", "soft_r4")), (("reorth", "reorth_updated"), ("main", "soft_r4")),
    (("reorth", "reorth_product"), ("main", "soft_r4")),
    (("reorth", "reorth_delta"), ("main", "svd_r4")), (("reorth", "reorth_updated"), ("main", "svd_r4")),
    (("reorth", "reorth_product"), ("main", "svd_r4")),
    (("reorth", "reorth_updated"), ("main", "topk_r4_eqbits")),
    (("reorth", "reorth_updated"), ("main", "randk_r4")),
    (("reorth", "reorth_product"), ("main", "topk_r4_eqbits")),
    (("reorth", "reorth_product"), ("main", "randk_r4")),
    (("reorth", "reorth_r8_updated"), ("r8", "svd_r8")),
    (("reorth", "reorth_r8_updated"), ("main", "soft_r8")),
    (("reorth", "reorth_tsfa_t050"), ("main", "soft_tsfa_t050")),
    (("reorth", "reorth_tsfa_t045"), ("main", "soft_tsfa_t045")),
    # the robust group's fixed-ratio rows had no drops (their latency stays under the deadline), so
    # they are the main rows' configs in effect, run on the same machine as the reorth group
    (("reorth", "reorth_updated"), ("robust", "soft_r4")), (("reorth", "reorth_updated"), ("robust", "svd_r4")),
    (("robust", "soft_r4"), ("robust", "svd_r4")), (("robust", "soft_r4"), ("robust", "topk_r4")),
    (("robust", "soft_r4"), ("robust", "randk_r4")),
    (("robust", "soft_tsfa_t050"), ("main", "soft_tsfa_t050")),
    (("graded", "soft_product"), ("graded", "svd")), (("graded", "soft_product"), ("graded", "topk")),
    (("graded", "soft_product"), ("graded", "randk")), (("graded", "soft_product"), ("main", "svd_r4")),
    (("graded", "soft_product"), ("main", "topk_r4_eqbits")),
    (("graded", "soft_product"), ("main", "soft_r4")), (("graded", "ideal"), ("main", "ideal")),
    (("graded", "svd"), ("main", "svd_r4")),
    (("graded", "soft_tsfa_t050"), ("main", "soft_tsfa_t050")),
    (("graded", "soft_product_r8"), ("r8", "svd_r8")),
    (("queue", "soft_tsfa_t050_q"), ("main", "soft_tsfa_t050")),
    (("queue", "soft_tsfa_t045_q"), ("main", "soft_tsfa_t045")),
    (("init", "init_kaiming"), ("init", "init_orthogonal")),
    (("init", "init_gaussian"), ("init", "init_orthogonal")),
    # the rank sweep's best rank against the others, at each budget (the offline stage's check)
    *((("rank", f"rank_2{tag}"), ("rank", f"rank_{r}{tag}")) for tag, _ in RANK_CHECKS for r in RANKS[1:]),
)


def head_to_head(res: dict) -> list:
  """`[{row, ref, n, mean, se, diffs}]` for the HEAD_TO_HEAD pairs both present: the per-seed final
  accuracy difference row − ref (points) over the seeds both finished, its mean and standard error
  (sample std / √n; None for one seed)."""
  out = []
  for a, b in HEAD_TO_HEAD:
    ra, rb = res.get(a[0], {}).get(a[1]), res.get(b[0], {}).get(b[1])
    if ra is None or rb is None:
      continue
    d = seed_diffs(ra, rb)
    if not d.size:
      continue
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None
    out.append({"row": "/".join(a), "ref": "/".join(b), "n": len(d), "mean": float(d.mean()),
                "se": se, "diffs": [float(x) for x in d],
                "bits_ratio": ra["uplink_bits_mean"] / rb["uplink_bits_mean"]})
  return out


def head_to_head_markdown(h2h: list) -> list:
  """Lines of the head-to-head table (none when `h2h` is empty)."""
  if not h2h:
    return []
  lines = ["### head to head (per-seed difference of final accuracy, points: mean ± standard error)",
           "", "| row | reference | seeds | row − reference | bits row / reference |",
           "|---|---|---|---|---|"]
  for h in h2h:
    se = "-" if h["se"] is None else f"{h['se']:.2f}"
    lines.append(f"| {h['row']} | {h['ref']} | {h['n']} | {h['mean']:+.2f} ± {se} | "
                 f"{h['bits_ratio']:.3f} |")
  return lines + [""]


def rank_check(res: dict) -> list:
  """`[{budget, seeds, acc: {rank: mean}, best, chosen, steps}]`, one per RANK_CHECKS entry with
  every rank row present: the rank sweep's mean final accuracy per rank over the seeds all its rows
  finished, the best rank, the ranks the offline stage chose (per seed it ran), and how many grid
  steps each choice lies from the best (the issue's check: at most one)."""
  rows = res.get("rank", {})
  out = []
  for tag, off in RANK_CHECKS:
    sweep = {r: rows.get(f"rank_{r}{tag}") for r in RANKS}
    if any(v is None for v in sweep.values()):
      continue
    seeds = sorted(set.intersection(*[set(v["per_seed"]) for v in sweep.values()]), key=int)
    if not seeds:
      continue
    acc = {r: float(np.mean([v["per_seed"][s]["final_test_accuracy"] for s in seeds]))
           for r, v in sweep.items()}
    best = max(RANKS, key=lambda r: (acc[r], -r))  # a tie goes to the smaller rank (fewer bits)
    chosen = rows.get(off, {}).get("offline_chosen_rank", [])
    out.append({"budget": off, "seeds": [int(s) for s in seeds], "acc": acc, "best": best,
                "chosen": chosen,
                "steps": [abs(RANKS.index(c) - RANKS.index(best)) if c in RANKS else None
                          for c in chosen]})
  return out


def rank_check_markdown(checks: list) -> list:
  """Lines of the offline-stage check (none when no rank sweep is complete)."""
  if not checks:
    return []
  lines = ["### the offline stage's rank against the rank sweep (mean final accuracy over the "
           "sweep's common seeds)", "",
           "| offline row | seeds | " + " | ".join(f"r = {r}" for r in RANKS)
           + " | best | offline chose | grid steps from best |",
           "|---|---|" + "---|" * len(RANKS) + "---|---|---|"]
  for c in checks:
    lines.append(f"| {c['budget']} | {len(c['seeds'])} | "
                 + " | ".join(f"{100 * c['acc'][r]:.2f}" for r in RANKS)
                 + f" | {c['best']} | {c['chosen'] or '-'} | {c['steps'] or '-'} |")
  return lines + [""]


def group_ideal(res: dict, group: str) -> dict | None:
  """The reference of a group's Δ and bits columns: its own row `ideal_<group>` (a group on other
  data, e.g. 'skew') if it has one, else main/ideal."""
  return res.get(group, {}).get(f"ideal_{group}") or res.get("main", {}).get("ideal")


def markdown(res: dict, header: str) -> str:
  lines = [header, ""] + head_to_head_markdown(head_to_head(res)) + rank_check_markdown(rank_check(res))
  for group, rows in res.items():
    ideal = group_ideal(res, group)
    lines += [f"### {group}", "",
              "| run | seeds | final acc % (mean ± std) | Δ vs ideal, paired (pts, n) | uplink Mbit | "
              "vs ideal bits | mean ρ | mean τ (s) | round-1 τ (s) | misses | attempted Mbit | "
              "profile kbit |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in rows.items():
      if "offline_chosen_rank" in r:
        label = f"{label} (chose r = {r['offline_chosen_rank']})"
      frac = f"{r['uplink_bits_mean'] / ideal['uplink_bits_mean']:.3f}" if ideal else "-"
      lat = "-" if r["mean_round_latency_s"] is None else f"{r['mean_round_latency_s']:.3f}"
      lat1 = "-" if r.get("first_round_latency_s") is None else f"{r['first_round_latency_s']:.3f}"
      p = paired(r, ideal)
      dp = "-" if p is None else f"{p[0]:+.2f} ± {p[1]:.2f} ({p[2]})"
      lines.append(f"| {label} | {len(r['seeds'])} | {100 * r['acc_mean']:.2f} ± "
                   f"{100 * r['acc_std']:.2f} | {dp} | {r['uplink_bits_mean'] / 1e6:.1f} | {frac} | "
                   f"{r['mean_ratio']:.3f} | {lat} | {lat1} | {r['deadline_misses']:.1f} | "
                   f"{r['uplink_attempted_bits_mean'] / 1e6:.1f} | {r['profile_bits_mean'] / 1e3:.1f} |")
    lines.append("")
  return "\n".join(lines)


def plot(res: dict, out_png: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  groups = [g for g in res if res[g]]
  fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.0), squeeze=False)
  for ax, g in zip(axes[0], groups):
    for label, r in res[g].items():
      c = np.array(r["curve"])
      if not len(c):
        continue
      ax.errorbar(c[:, 3] / 1e6, 100 * c[:, 1], yerr=100 * c[:, 2], marker="o", ms=3, capsize=2,
                  label=label)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative uplink (Mbit)"), ax.set_ylabel("test accuracy (%)")
    ax.set_title(g), ax.grid(alpha=0.3), ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)


def main(argv):
  ov = parse_overrides(argv)
  groups = pop_list(ov, "groups",
                    "main,robust,tsfa_all,score,ortho,init,r8,ef,senders,skew,reorth,graded,queue,rank")
  every = grid()
  check_choices("groups", groups, dict.fromkeys(g for g, _, _, _ in every))
  only = pop_list(ov, "runs", "") or None
  if only is not None:
    check_choices("runs", only, dict.fromkeys(l for g, l, _, _ in every if g in groups))
  seeds = pop_list(ov, "seeds", "0,1,2", int)
  out_root = str(ov.pop("workdirs", os.path.join(ROOT, "runs/sweep")))
  stop_at = ov.pop("stop_at", None)
  rerun = pop_one(ov, "rerun", 0, bool)
  try:
    deadline = None if stop_at is None else stop_deadline(stop_at, dt.datetime.now(dt.timezone.utc))
  except SystemExit as e:
    fail(str(e))
  common = dict(SMOKE) if smoke() else {}
  common.pop("progress", None)  # every run sets it
  for k, key, cast in (("rounds", "fed.rounds", int), ("max_length", "data.max_length", int),
                       ("eval_every", "eval.every", int)):
    if k in ov:
      common[key] = pop_one(ov, k, None, cast)
  common.update(ov)
  order = {g: i for i, g in enumerate(groups)}
  todo = sorted([(g, l, m, o) for g, l, m, o in grid() if g in order and (only is None or l in only)],
                key=lambda x: (order[x[0]], 0 if only is None else only.index(x[1])))
  if only is not None:  # runs=... also sets the launch order
    todo.sort(key=lambda x: only.index(x[1]))
  check_configs(todo, common)
  earlier = earlier_runs(earlier_path(), common)
  for group, label, method, run_ov, seed, wd in pending(todo, seeds, out_root, common, earlier,
                                                        bool(rerun)):
    now_dt = dt.datetime.now(dt.timezone.utc)
    now = now_dt.strftime("%H:%M")
    if deadline is not None and now_dt >= deadline:
      print(f"stop_at={stop_at} reached at {now}: not starting {group}/{label}/seed{seed}")
      break
    print(f"--- {now} {group}/{label} seed {seed}", flush=True)
    s = run_one(method, run_ov, common, wd, seed)
    print(f"    final acc {100 * s['final_test_accuracy']:.2f}%  uplink "
          f"{8 * s['cum_uplink_bytes'] / 1e6:.1f} Mbit", flush=True)
    report(out_root, common)
  report(out_root, common)


def check_configs(todo, common) -> None:
  """Ends the script (one error line) unless every selected run's config is valid: an unknown key or a
  value not allowed in `common` or in a run's overrides is found before the first run."""
  from fedlora.config import typed
  for group, label, method, run_ov in todo:
    try:
      typed(run_config(method, run_ov, common, "", 0))
    except (KeyError, ValueError, TypeError) as e:
      fail(f"{group}/{label}: {e.args[0] if isinstance(e, KeyError) and e.args else e}")


def earlier_path() -> str:
  """The results file whose rows count as finished (`earlier_runs`): the one this invocation writes
  when it exists, else the committed one."""
  path = result_path("sweep_methods")
  return path if os.path.exists(path) else os.path.join(RESULTS, "sweep_methods.json")


def stop_deadline(stop_at, now: dt.datetime) -> dt.datetime:
  """The first UTC time `stop_at` ('HH:MM') at or after `now`: a sweep started at 23:40 with
  stop_at=01:30 runs until 01:30 the next day (comparing the strings would stop it at once)."""
  try:
    h, m = (int(x) for x in str(stop_at).split(":"))
    if not (0 <= h < 24 and 0 <= m < 60):
      raise ValueError
  except ValueError:
    raise SystemExit(f"stop_at={stop_at!r}: expected a UTC time HH:MM (00:00-23:59)") from None
  t = now.replace(hour=h, minute=m, second=0, microsecond=0)
  return t if t >= now.replace(second=0, microsecond=0) else t + dt.timedelta(days=1)


def pending(todo, seeds, out_root, common, earlier, rerun: bool = False) -> list:
  """`[(group, label, method, overrides, seed, workdir)]` still to run, seed by seed: not a finished
  run in its folder and, unless `rerun`, not a row of the results file (`earlier`, same config folder
  name: a run whose folder is gone, e.g. in a fresh clone, is not run again)."""
  dirs = run_dirs(out_root, common)
  out = []
  for seed in seeds:
    for group, label, method, run_ov in todo:
      wd = os.path.join(dirs[(group, label)], f"seed{seed}")
      if check_finished(run_config(method, run_ov, common, wd, seed)):
        continue
      if not rerun and (os.path.basename(dirs[(group, label)]), seed) in earlier:
        print(f"    {group}/{label} seed {seed}: in the results file, not run again", flush=True)
        continue
      out.append((group, label, method, run_ov, seed, wd))
  return out


def report(out_root, common):
  """Tables and figure from every finished seed found (a run of other seeds never drops rows)."""
  res = collect(out_root, None, common, earlier_runs(earlier_path(), common))
  seeds = sorted({s for rows in res.values() for r in rows.values() for s in r["seeds"]})
  header = (f"Sweep over configs/wireless_compare.py, overrides {common}, every finished seed found "
            f"({seeds}; each row says how many; the paired Δ uses the seeds a row shares with the ideal "
            "run). Main table: no deadline (wireless.deadline_factor=inf); robust: deadline 2·τ̄.")
  md = markdown(res, header)
  path = write_result("sweep_methods", {"common_overrides": common, "seeds": seeds, "groups": res,
                                        "head_to_head": head_to_head(res), "rank_check": rank_check(res)})
  if path is not None:  # the table and figure beside the results file (none when nothing finished)
    with open(output_beside(".md", "sweep_methods"), "w") as f:
      f.write(md + "\n")
    plot(res, output_beside(".png", "sweep_methods"))
  print(md, flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])

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
         [rounds=20] [max_length=128] [eval_every=5] [workers=1] [workdirs=runs/sweep] [smoke=1]
         [key=value ...]

The study is `STUDY`, a list of one-point grids labelled <group>/<label>, run by fedlora.sweep
(docs/sweeps.md): each run is `python -m fedlora` in <workdirs>/<group>-<label>-s<seed> (two labels
of one config share a run), `workers` at a time; a finished run is read back, never repeated, and so
is a run the results file already holds (same fingerprint and seed; its folder gone, e.g. in a fresh
clone); an interrupted run resumes from its checkpoint. Groups (and runs=..., if given) run in the
order given. Other `key=value` pairs are config overrides for every run. `smoke=1`: the SMOKE config of
benchmarks/common.py is a common override of every run (e.g. `smoke=1 groups=main runs=soft_r4
seeds=0`). The groups, run labels, seeds and every selected run's config are checked before the first
run. The results file is fedlora.sweep's (`runs`, `points`) plus the rows benchmarks/report.py
tabulates (`groups`: per label mean ± std over seeds and each seed's figures; `head_to_head`;
`rank_check`); the runs of this invocation replace those of the same row and seed, the file's other
rows are kept. Beside it: <results>.md (report.py's tables) and .png (accuracy vs uplink bits). The
committed results (benchmarks/results/sweep_methods.{json,md,png}):
  python benchmarks/sweep_methods.py rounds=20 max_length=32 eval_every=5 replace=1
"""
from __future__ import annotations

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

CONFIG = os.path.join(ROOT, "configs", "wireless_compare.py")
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



def seed_diffs(r: dict, ref: dict) -> np.ndarray:
  """`r`'s final accuracy minus `ref`'s per seed, in points, over the seeds both finished (in seed
  order; empty when none). Runs of one seed share data, clients, channel draws and init, so the
  per-seed difference removes most of the seed-to-seed spread the two means carry."""
  common = sorted(set(r["per_seed"]) & set(ref["per_seed"]), key=int)
  return np.array([100 * (r["per_seed"][s]["final_test_accuracy"]
                          - ref["per_seed"][s]["final_test_accuracy"]) for s in common])


# (row, reference) pairs compared per seed: the targets (SOFT vs SVD, top-k, random-k at equal
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



def study(todo) -> list:
  """fedlora.sweep's grids of the selected `(group, label, method, overrides)`: one point each."""
  return [{"_label": f"{g}/{l}", "method.name": m, **ov} for g, l, m, ov in todo]


def groups_of(records: list) -> dict:
  """`{group: {label: row}}` in grid order from run records (fedlora.sweep.read_run, point label
  '<group>/<label>'): the method, overrides, mean ± std over seeds (`aggregate`), each seed's
  workdir and figures (`per_seed`)."""
  by = {}
  for r in records:
    by.setdefault(r["point"], {})[int(r["seed"])] = r
  res = {}
  for group, label, method, ov in grid():
    runs = by.get(f"{group}/{label}")
    if not runs:
      continue
    row = {"method": method, "overrides": ov, "workdirs": {str(s): r.get("workdir") for s, r in runs.items()},
           **aggregate(runs), "per_seed": {str(s): r for s, r in sorted(runs.items())}}
    chosen = [runs[s]["offline_chosen_rank"] for s in sorted(runs) if "offline_chosen_rank" in runs[s]]
    if chosen:
      row["offline_chosen_rank"] = chosen
    res.setdefault(group, {})[label] = row
  return res


def earlier_path() -> str:
  """The results file whose runs count as finished: the one this invocation writes when it exists,
  else the committed one."""
  path = result_path("sweep_methods")
  return path if os.path.exists(path) else os.path.join(RESULTS, "sweep_methods.json")


def main(argv):
  from fedlora import sweep as sw
  ov = parse_overrides(argv)
  groups = pop_list(ov, "groups",
                    "main,robust,tsfa_all,score,ortho,init,r8,ef,senders,skew,reorth,graded,queue,rank")
  every = grid()
  check_choices("groups", groups, dict.fromkeys(g for g, _, _, _ in every))
  only = pop_list(ov, "runs", "") or None
  if only is not None:
    check_choices("runs", only, dict.fromkeys(l for g, l, _, _ in every if g in groups))
  seeds = pop_list(ov, "seeds", "0,1,2", int)
  workers = pop_one(ov, "workers", 1, int)
  if workers < 1:
    fail(f"workers={workers}: an integer >= 1")
  out_root = str(ov.pop("workdirs", os.path.join(ROOT, "runs/sweep")))
  common = dict(SMOKE) if smoke() else {}
  common.pop("progress", None)  # every run sets it
  for k, key, cast in (("rounds", "fed.rounds", int), ("max_length", "data.max_length", int),
                       ("eval_every", "eval.every", int)):
    if k in ov:
      common[key] = pop_one(ov, k, None, cast)
  common.update(ov)
  order = {g: i for i, g in enumerate(groups)}
  todo = sorted([(g, l, m, o) for g, l, m, o in every if g in order and (only is None or l in only)],
                key=lambda x: (order[x[0]], 0 if only is None else only.index(x[1])))
  earlier_file = earlier_path()
  old = {}
  if os.path.exists(earlier_file):
    with open(earlier_file) as f:
      old = json.load(f)
  same = old.get("common_overrides") == json.loads(json.dumps(common))
  try:
    res = sw.sweep(CONFIG, study(todo), seeds, out_root, None, sets=common, workers=workers,
                   echo=lambda m: print(m, flush=True), earlier=earlier_file if same else None)
  except sw.SweepError as e:
    fail(str(e).replace("\n  ", " | "))
  # this invocation's runs replace the same row and seed; the file's other runs stay (same common)
  new = {(r["point"], int(r["seed"])) for r in res["runs"]}
  runs = [r for r in old.get("runs", []) if same and (r["point"], int(r["seed"])) not in new] + res["runs"]
  rows = groups_of(runs)
  payload = {"common_overrides": common, "seeds": sorted({int(r["seed"]) for r in runs}), "groups": rows,
             "head_to_head": head_to_head(rows), "rank_check": rank_check(rows), "runs": runs,
             "points": res["points"], "failed": res["failed"]}
  path = write_result("sweep_methods", payload)
  if path is not None:  # the tables and figure beside the results file (none when nothing finished)
    from benchmarks.report import sec_sweep
    from fedlora.sweep.figures import draw
    with open(output_beside(".md", "sweep_methods"), "w") as f:
      f.write("\n".join(sec_sweep(json.loads(json.dumps(payload)))) + "\n")
    draw({"config": "configs/wireless_compare.py", "points": res["points"]}, path)
  for f in res["failed"]:
    print(f"error: {f['point']} seed {f['seed']} failed (exit {f['rc']}); log: {f['log']}", file=sys.stderr)
  return 1 if res["failed"] else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

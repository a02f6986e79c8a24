"""End-to-end comparison on the default task under one wireless latency budget.

Runs configs/wireless_compare.py once per method — ideal (no channel limits), SOFT+TSFA, SOFT at the
baselines' fixed ratio (same compressor budget as they have), top-k, random-k, SVD truncation,
FFA-LoRA — with identical data, clients, channel draws and seeds, then
prints a table (final accuracy, cumulative uplink, latency, deadline misses, wall time), writes
the results file and beside it a plot <results>.png (accuracy vs round and vs cumulative uplink).

Keys:
  methods=ideal,soft_tsfa,soft_fixed,topk,randk,svd,ffa   which runs
  workdirs=runs/e2e   each method's run folder is <workdirs>/<method> (rerunning resumes finished runs
                      instantly; other overrides than fed.rounds/eval.every are refused there by the
                      run fingerprint: pass workdirs=runs/e2e-<tag>)
  key=value           any config override for every run (fed.rounds=12 data.max_length=64 ...)
  smoke=1             the SMOKE config (benchmarks/common.py) for every run
The committed results (benchmarks/results/methods_e2e.json and .png):
  python benchmarks/bench_methods_e2e.py fed.rounds=12 data.max_length=64 eval.every=4 replace=1
"""
from __future__ import annotations

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (ROOT, check_choices, checked_config, output_beside,  # noqa: E402
                               parse_overrides, pop_list, script_setup, write_result)

script_setup()

import numpy as np  # noqa: E402

import wireless_compare  # noqa: E402

# (label, method.name, overrides)
RUNS = {
    "ideal": ("ideal", {"wireless.enabled": False}),
    "soft_tsfa": ("soft", {"method.allocation": "tsfa"}),
    "soft_fixed": ("soft", {"method.allocation": "fixed"}),
    "topk": ("topk", {"method.allocation": "fixed"}),
    "randk": ("randk", {"method.allocation": "fixed"}),
    "svd": ("svd", {"method.allocation": "fixed"}),
    "ffa": ("ffa", {"method.allocation": "fixed"}),
}


def main(argv):
  ov = parse_overrides(argv)
  chosen = check_choices("methods", pop_list(ov, "methods", ",".join(RUNS)), RUNS)
  out_root = str(ov.pop("workdirs", os.path.join(ROOT, "runs/e2e")))
  configs = {label: checked_config(wireless_compare.get_config(), {"method.name": RUNS[label][0]},
                                   RUNS[label][1], ov,
                                   {"workdir": os.path.join(out_root, label), "progress": False})
             for label in chosen}  # every run's config checked before the first run
  from fedlora.train import run
  from fedlora.utils.metrics import read_metrics
  rows = {}
  for label, c in configs.items():
    name = RUNS[label][0]
    print(f"--- {label}", flush=True)
    s = run(c)
    recs = read_metrics(os.path.join(c.workdir, "metrics.jsonl"))
    lat = [r["round_latency"] for r in recs if "round_latency" in r]
    rows[label] = {
        "method": name, "final_test_accuracy": s["final_test_accuracy"],
        "best_test_accuracy": s["best_test_accuracy"],
        "cum_uplink_bits": 8 * s["cum_uplink_bytes"],
        "mean_round_latency_s": float(np.mean(lat)) if lat else None,
        "deadline_misses": int(sum(r.get("deadline_misses", 0) for r in recs)),
        "mean_ratio": float(np.mean([np.mean(r["ratio"]) for r in recs])),
        "train_seconds": s["train_seconds_all_rounds"],
        "curve": [(r["round"], r.get("test_accuracy"), 8 * r["cum_uplink_bytes"]) for r in recs],
    }
  budget = next(iter(configs.values())).tsfa.online.latency_budget
  path = write_result("methods_e2e", {"overrides": ov, "latency_budget_s": budget, "runs": rows})
  if path is None:
    return
  print(f"\nlatency budget τ̄ = {budget} s (ideal runs without channel limits)")
  print(f"{'method':<10}{'final acc %':>12}{'uplink Mbit':>13}{'mean ρ':>8}{'mean τ (s)':>11}"
        f"{'misses':>8}{'train s':>9}")
  for label, r in rows.items():
    lat = "-" if r["mean_round_latency_s"] is None else f"{r['mean_round_latency_s']:.3f}"
    print(f"{label:<10}{100 * r['final_test_accuracy']:>12.2f}{r['cum_uplink_bits'] / 1e6:>13.1f}"
          f"{r['mean_ratio']:>8.3f}{lat:>11}{r['deadline_misses']:>8}{r['train_seconds']:>9.0f}")
  plot(rows, output_beside(".png", "methods_e2e"))
  print(f"-> {path}")


def plot(rows, out_png):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
  for label, r in rows.items():
    pts = [(t, a, b) for t, a, b in r["curve"] if a is not None]
    ax[0].plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", label=label)
    ax[1].plot([p[2] / 1e6 for p in pts], [100 * p[1] for p in pts], "o-", label=label)
  ax[0].set_xlabel("round"), ax[0].set_ylabel("test accuracy (%)")
  ax[1].set_xlabel("cumulative uplink (Mbit)"), ax[1].set_ylabel("test accuracy (%)")
  ax[1].set_xscale("log")
  for a in ax:
    a.grid(alpha=0.3)
  ax[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out_png, dpi=120)
  plt.close(fig)


if __name__ == "__main__":
  main(sys.argv[1:])

"""Heterogeneous client LoRA ranks: homogeneous rank 8 against clients of ranks {2, 4, 8, 16}
(assigned by compute-speed quantile, slowest -> rank 2; global rank 16) under each aggregation rule:
'fedavg' (zero-padded FedAvg of A and B, i.e. truncation), 'hetlora' (per-component mean over the
clients holding a component) and 'flora' (stacking, merged into the frozen base). Over seeds (mean ±
std) it prints final / best test accuracy, cumulative uplink and the mean uplink per upload, writing
the results file after every run. Base config: configs/wireless_compare.py (SOFT + TSFA over the
fading uplink; every client's payload model and ratio are at its own rank).

Keys:
  config=configs/wireless_compare.py   the base config file (`file.py` or `file.py:variant`)
  runs=homo8,het_fedavg,het_hetlora,het_flora   which runs
  ranks=2,4,8,16                       the heterogeneous ranks (lora.rank = their maximum)
  seeds=0                              integers
  workdirs=runs/hetrank                run folders <workdirs>/<run>/s<seed> (finished runs are reused)
  key=value                            any config override for every run (fed.rounds=20 ...)
  smoke=1                              the SMOKE config (benchmarks/common.py) for every run
Every run's config is checked before the first run starts. The committed results
(benchmarks/results/hetrank.json) would be written by:
  python benchmarks/bench_hetrank.py seeds=0,1,2 replace=1
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (ROOT, check_choices, checked_config, fail, parse_overrides,  # noqa: E402
                               pop_list, script_setup, write_result)

script_setup()

import numpy as np  # noqa: E402

RUNS = ("homo8", "het_fedavg", "het_hetlora", "het_flora")


def plan(ranks: list) -> dict:
  het = {"lora.rank": max(ranks), "lora.client_ranks": tuple(ranks), "lora.client_ranks_by": "speed"}
  return {"homo8": {"lora.rank": 8, "server.aggregation": "fedavg"},
          "het_fedavg": {**het, "server.aggregation": "fedavg"},
          "het_hetlora": {**het, "server.aggregation": "hetlora"},
          "het_flora": {**het, "server.aggregation": "flora"}}


def load_config(spec: str):
  path, _, variant = spec.partition(":")
  if not (path.endswith(".py") and os.path.exists(os.path.join(ROOT, path))):
    fail(f"config={spec!r}: a config file under {ROOT} (file.py or file.py:variant)")
  name = os.path.basename(path)[:-3]
  sys.path.insert(0, os.path.dirname(os.path.join(ROOT, path)))
  try:
    return importlib.import_module(name).get_config(variant or None)
  except ValueError as e:
    fail(f"config={spec!r}: {e}")


def mean_std(vals):
  vals = [v for v in vals if v is not None]
  return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)


def main(argv):
  ov = parse_overrides(argv)
  spec = str(ov.pop("config", "configs/wireless_compare.py"))
  runs = check_choices("runs", pop_list(ov, "runs", ",".join(RUNS)), RUNS)
  ranks = pop_list(ov, "ranks", "2,4,8,16", int)
  if not ranks or min(ranks) < 1:
    fail(f"ranks={ranks}: integers >= 1")
  seeds = pop_list(ov, "seeds", 0, int)
  out_root = str(ov.pop("workdirs", os.path.join(ROOT, "runs/hetrank")))
  runs_plan = plan(ranks)
  configs = {(seed, name): checked_config(load_config(spec), runs_plan[name], ov, {
      "seed": seed, "progress": False, "workdir": os.path.join(out_root, name, f"s{seed}")})
      for seed in seeds for name in runs}  # every run's config checked before the first run
  rows: dict[str, list] = {}
  summary: dict[str, dict] = {}
  path = None
  from fedlora.train import run
  for seed in seeds:
    for name in runs:
      t0 = time.time()
      s = run(configs[(seed, name)])  # a finished workdir resumes at its last round
      r = {k: s.get(k) for k in ("final_test_accuracy", "best_test_accuracy", "cum_uplink_bytes",
                                 "rounds", "resumed_from_round")}
      wd = configs[(seed, name)].workdir
      ups = []
      with open(os.path.join(wd, "metrics.jsonl")) as f:
        for line in f:
          rec = json.loads(line)
          if "uplink_bits" in rec:
            ups += [b for b, d in zip(rec["uplink_bits"], rec["delivered"]) if d]
      r.update(seed=seed, wall_seconds=time.time() - t0, overrides={**runs_plan[name], **ov},
               mean_upload_bytes=float(np.mean(ups)) / 8 if ups else None)
      rows.setdefault(name, []).append(r)
      summary = {n: {k: mean_std([x[k] for x in rs]) for k in
                     ("final_test_accuracy", "best_test_accuracy", "cum_uplink_bytes",
                      "mean_upload_bytes")} | {"seeds": [x["seed"] for x in rs]}
                 for n, rs in rows.items()}
      path = write_result("hetrank", {"config": spec, "ranks": ranks, "overrides": ov, "seeds": seeds,
                                      "runs": rows, "summary": summary,
                                      "command": "python benchmarks/bench_hetrank.py " + " ".join(argv)})
      print(f"{name:<12} seed {seed}  final {100 * r['final_test_accuracy']:.2f}%  uplink "
            f"{r['cum_uplink_bytes'] / 1e6:.2f} MB  {r['wall_seconds']:.0f} s", flush=True)
  print(f"\n{'run':<12}{'seeds':>6}{'final acc %':>18}{'best acc %':>18}{'uplink MB':>12}{'per upload kB':>15}")
  for n, sm in summary.items():
    f = lambda v: "-" if v[0] is None else f"{100 * v[0]:.2f} ± {100 * v[1]:.2f}"  # noqa: E731
    g = lambda v, s: "-" if v[0] is None else f"{v[0] / s:.2f}"  # noqa: E731
    print(f"{n:<12}{len(sm['seeds']):>6}{f(sm['final_test_accuracy']):>18}"
          f"{f(sm['best_test_accuracy']):>18}{g(sm['cum_uplink_bytes'], 1e6):>12}"
          f"{g(sm['mean_upload_bytes'], 1e3):>15}")
  print(f"-> {path}")


if __name__ == "__main__":
  main(sys.argv[1:])

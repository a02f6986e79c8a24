"""Federated optimisers under label skew: a sweep over the skewed settings of configs/skewed.py.

For every setting and seed it runs FedAvg, each server optimiser (FedAvgM, FedAdam, FedYogi,
FedAdagrad), FedProx, SCAFFOLD, the label-skew losses (FedLC, FedRS), then the best combination
(the best server optimiser, drift control and loss of the first setting, each only if it beat
FedAvg there), and tabulates mean ± std over seeds of the final and best test accuracy, the final
balanced accuracy, the worst-decile per-client accuracy and the uplink each recipe spent.
Results are written after EVERY run (the results file + a markdown table beside it, <results>.md),
so a partial sweep keeps what finished; rerunning skips finished runs.

Keys:
  settings=dir01,iid,dir005,quantity   configs/skewed.py variants; the first gets every recipe
  seeds=0,1,2                          integers
  recipes=fedavg,fedavgm,...           the recipes run on the first setting (RECIPES below)
  others=fedavg,fedlc,combo            the recipes run on the other settings ('combo': the combination)
  combo=1                              0: no combination stage
  collect_only=0                       1: only tabulate finished runs, train nothing
  name=skew                            the results file's name (<name>.json, <name>.md)
  workdirs=runs/skew                   run folders <workdirs>/<setting>/<recipe>/s<seed>
  key=value                            any config override (default sizes: SIZE below)
  smoke=1                              the SMOKE config (benchmarks/common.py) for every run
The committed results (benchmarks/results/skew.json, skew.md):
  python benchmarks/bench_skew.py collect_only=1 settings=dir01,dir005,iid others=fedavg,scaffold combo=0 fed.rounds=10 eval.every=2 replace=1
Hyper-parameters of the recipes are fixed a priori (not tuned on these settings): the adaptive
server optimisers at lr 1e-2 (their per-coordinate step ~ lr matches FedAvg's |Δ̄| ~ E·η_client),
FedAdagrad at 5e-2 (its v accumulates), FedAvgM β = 0.9 at lr 0.2 (effective lr/(1-β) = 2),
FedProx μ = 0.1, FedLC τ = 1 and FedRS α = 0.5 (the papers' defaults). Seeds vary the model head and
adapter init, client sampling and batches, and (through data.split_seed) the test split and partition.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (ROOT, SMOKE, check_choices, checked_config, output_beside,  # noqa: E402
                               parse_overrides, pop_list, pop_one, script_setup, smoke, write_result)

script_setup()

import jax  # noqa: E402
import numpy as np  # noqa: E402

import skewed  # noqa: E402

RECIPES = {
    "fedavg": {},
    "fedavgm": {"server.name": "fedavgm", "server.lr": 0.2, "server.momentum": 0.9},
    "fedadam": {"server.name": "fedadam", "server.lr": 1e-2},
    "fedyogi": {"server.name": "fedyogi", "server.lr": 1e-2},
    "fedadagrad": {"server.name": "fedadagrad", "server.lr": 5e-2},
    "fedprox": {"client.prox_mu": 0.1},
    "scaffold": {"client.scaffold": True},
    "fedlc": {"client.logit_adjust": "fedlc", "client.fedlc_tau": 1.0},
    "fedrs": {"client.logit_adjust": "fedrs", "client.fedrs_alpha": 0.5},
}
FEDAVG = {"client.scaffold": False}  # the default config's recipe is SCAFFOLD: the sweep's base is FedAvg
GROUPS = {"server": ("fedavgm", "fedadam", "fedyogi", "fedadagrad"), "drift": ("fedprox", "scaffold"),
          "loss": ("fedlc", "fedrs")}
# the sweep's run-size defaults (a shared 2-core CPU); any config key can be overridden
SIZE = {"model.num_layers": 2, "fed.rounds": 10, "eval.every": 2, "checkpoint.every": 1000,
        "progress": False}


def summarise(rows):
  def ms(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
      return None, None
    return float(np.mean(vals)), float(np.std(vals))
  out = {}
  for key, runs in rows.items():
    s = {"n": len(runs), "seeds": sorted(r["seed"] for r in runs)}
    for m in ("final_test_accuracy", "best_test_accuracy", "final_test_balanced_accuracy",
              "final_test_macro_f1", "final_test_client_accuracy_worst10", "uplink_mbit",
              "train_seconds"):
      s[m] = ms([r[m] for r in runs])
    out[key] = s
  return out


def combo(summary, setting):
  """The best of each group on `setting` (only if its mean final accuracy beats FedAvg's)."""
  base = summary.get(f"{setting}/fedavg", {}).get("final_test_accuracy", (None,))[0]
  over, parts = {}, []
  for group, names in GROUPS.items():
    scored = [(summary[f"{setting}/{n}"]["final_test_accuracy"][0], n) for n in names
              if f"{setting}/{n}" in summary and summary[f"{setting}/{n}"]["final_test_accuracy"][0]
              is not None]
    if scored and base is not None and max(scored)[0] > base:
      best = max(scored)[1]
      parts.append(best)
      over.update(RECIPES[best])
  return "+".join(parts) or "fedavg", over


def write_tables(rows, meta, name="skew"):
  summary = summarise(rows)
  payload = dict(meta, summary=summary, runs=rows)
  path = write_result(name, payload)
  if path is None:
    return summary, "", None
  lines = ["| setting | recipe | seeds | final acc % | best acc % | balanced acc % | macro-F1 % | "
           "worst-decile client acc % | uplink Mbit |", "|" + "---|" * 9]
  fmt = lambda v, k=100: "–" if v[0] is None else f"{k * v[0]:.2f} ± {k * v[1]:.2f}"  # noqa: E731
  for key, s in summary.items():
    setting, recipe = key.split("/", 1)
    lines.append(f"| {setting} | {recipe} | {s['n']} | {fmt(s['final_test_accuracy'])} | "
                 f"{fmt(s['best_test_accuracy'])} | {fmt(s['final_test_balanced_accuracy'])} | "
                 f"{fmt(s['final_test_macro_f1'])} | {fmt(s['final_test_client_accuracy_worst10'])} | "
                 f"{s['uplink_mbit'][0]:.1f} |")
  md = "\n".join(lines) + "\n"
  with open(output_beside(".md", name), "w") as f:
    f.write(f"Sweep: `{meta['command']}` (shared 2-core CPU; {meta['size']})\n\n" + md)
  return summary, md, path


def run_config(setting, label, over, seed, size, out_root):
  """The run's config (every recipe starts from plain FedAvg, whatever the default recipe is),
  checked: a bad key or value ends the script."""
  return checked_config(skewed.get_config(setting), size, FEDAVG, over, {
      "seed": seed, "data.split_seed": seed,
      "workdir": os.path.join(out_root, setting, label, f"s{seed}")})


def one_run(setting, label, over, seed, size, out_root, collect_only=False):
  from fedlora.train import run
  from fedlora.utils.metrics import read_metrics
  c = run_config(setting, label, over, seed, size, out_root)
  done = os.path.join(c.workdir, "summary.json")
  if os.path.exists(done):
    with open(done) as f:
      s = json.load(f)
    if s.get("rounds") == c.fed.rounds and s.get("resumed_from_round") is not None:
      recs = read_metrics(os.path.join(c.workdir, "metrics.jsonl"))
      if recs and recs[-1]["round"] == c.fed.rounds:
        return s, True
  if collect_only:
    return None, False
  t0 = time.time()
  s = run(c)
  s["wall_seconds"] = time.time() - t0
  return s, False


def main(argv):
  ov = parse_overrides(argv)
  settings = check_choices("settings", pop_list(ov, "settings", "dir01,iid,dir005,quantity"),
                           skewed.VARIANTS)
  seeds = pop_list(ov, "seeds", "0,1,2", int)
  recipes = check_choices("recipes", pop_list(ov, "recipes", ",".join(RECIPES)), RECIPES)
  others = check_choices("others", pop_list(ov, "others", "fedavg,fedlc,combo"),  # recipes on settings[1:]
                         list(RECIPES) + ["combo"])
  out_root = str(ov.pop("workdirs", os.path.join(ROOT, "runs/skew")))
  name = str(ov.pop("name", "skew"))  # results file <name>.json/.md
  collect_only = pop_one(ov, "collect_only", 0, bool)  # only tabulate finished runs, train nothing
  do_combo = pop_one(ov, "combo", 1, bool)  # 0: no combination stage
  size = {**SIZE, **(SMOKE if smoke() else {}), **ov}
  for setting in settings:  # every setting's and recipe's config checked before the first run
    for label in dict.fromkeys(recipes + [o for o in others if o != "combo"]):
      run_config(setting, label, RECIPES[label], seeds[0] if seeds else 0, size, out_root)
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # the runs share compiled programs
    jax.config.update("jax_compilation_cache_dir", os.path.join(out_root, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  meta = {"command": "python benchmarks/bench_skew.py " + " ".join(argv), "size": size,
          "recipes": RECIPES, "settings": settings, "seeds": seeds}
  rows: dict[str, list] = {}

  def record(setting, label, over, seed):
    s, cached = one_run(setting, label, over, seed, size, out_root, collect_only)
    if s is None:
      print(f"{setting}/{label} seed {seed}: not run (collect_only)", flush=True)
      return write_tables(rows, meta, name)[0]
    row = {"seed": seed, "overrides": over,
           "uplink_mbit": 8 * s["cum_uplink_bytes"] / 1e6,
           "train_seconds": s["train_seconds_all_rounds"]}
    for k in ("final_test_accuracy", "best_test_accuracy", "final_test_balanced_accuracy",
              "final_test_macro_f1", "final_test_client_accuracy_worst10"):
      row[k] = s.get(k)
    rows.setdefault(f"{setting}/{label}", []).append(row)
    summary, md, path = write_tables(rows, meta, name)
    took = "cached" if cached else f"{s.get('wall_seconds', 0):.0f} s"
    print(f"[{time.strftime('%H:%M:%S')}] {setting}/{label} seed {seed}: final "
          f"{100 * row['final_test_accuracy']:.2f}% balanced "
          f"{100 * row['final_test_balanced_accuracy']:.2f}% ({took})", flush=True)
    return summary

  first = settings[0]
  summary = {}
  for seed in seeds:  # seed-major: after the first pass every recipe has one seed
    for label in recipes:
      summary = record(first, label, RECIPES[label], seed)
  best_label, best_over = combo(summary, first)
  meta["combo"] = {"label": best_label, "overrides": best_over, "chosen_on": first}
  for setting in settings:
    for seed in seeds:
      for label in ([] if setting == first and not do_combo else
                    ["combo"] if setting == first else others):
        if label == "combo":
          if best_label == "fedavg" or not do_combo:  # nothing beat FedAvg: the combination is FedAvg itself
            continue
          summary = record(setting, f"combo:{best_label}", best_over, seed)
        else:
          summary = record(setting, label, RECIPES[label], seed)
  _, md, path = write_tables(rows, meta, name)
  print(md)
  print(f"-> {path}")


if __name__ == "__main__":
  main(sys.argv[1:])

"""Does a recipe hold up under label skew on the DEFAULT experiment (configs/bbc_minilm.py: MiniLM-L6,
128 tokens, 20 clients, 10 per round, 20 rounds)? Runs the recipe under IID and Dirichlet(0.1)
(and FedAvg, today's recipe, under both as the reference), over seeds (mean ± std), prints final / best test accuracy, balanced
accuracy, uplink and wall time, and the ratio skewed / IID (the target is >= 0.95 with the IID
accuracy no worse than FedAvg's), writing the results file after every run.

Keys:
  recipe=client.scaffold=True   a ';'-separated list of key=value config overrides: the recipe under test
  seeds=0                       integers
  runs=dir01,iid,fedavg_dir01,fedavg_iid   which runs (the recipe / FedAvg, skewed / IID)
  workdirs=runs/default_recipe  run folders <workdirs>/<run>/s<seed> (finished runs are reused)
  key=value                     any config override for every run (fed.rounds=20 ...)
  smoke=1                       the SMOKE config (benchmarks/common.py) for every run
Every run's config is checked before the first run starts. The committed results
(benchmarks/results/default_recipe.json):
  python benchmarks/bench_default_recipe.py recipe=client.scaffold=True seeds=0,1 runs=iid,fedavg_iid,dir01,fedavg_dir01 replace=1
"""
from __future__ import annotations

import ast
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (ROOT, check_choices, checked_config, fail, parse_overrides,  # noqa: E402
                               pop_list, script_setup, write_result)

script_setup()

import bbc_minilm  # noqa: E402
import numpy as np  # noqa: E402

SKEW = {"data.partition": "dirichlet", "data.dirichlet_alpha": 0.1}
IID = {"data.partition": "iid"}
FEDAVG = {"client.scaffold": False, "client.prox_mu": 0.0, "client.logit_adjust": "none",
          "server.name": "fedavg", "server.lr": 1.0}  # plain FedAvg, whatever the default recipe is


def parse_recipe(text: str) -> dict:
  out = {}
  for item in filter(None, text.split(";")):
    k, eq, v = item.partition("=")
    if not eq or not k:
      fail(f"recipe={text!r}: {item!r} is not key=value (items are ';'-separated)")
    try:
      out[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      out[k] = v
  return out


def mean_std(vals):
  vals = [v for v in vals if v is not None]
  return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)


def main(argv):
  ov = parse_overrides([a for a in argv if not a.startswith("recipe=")])
  recipe = parse_recipe(next((a.split("=", 1)[1] for a in argv if a.startswith("recipe=")),
                             "client.scaffold=True"))
  plan = {"dir01": {**recipe, **SKEW}, "iid": {**recipe, **IID}, "fedavg_dir01": {**FEDAVG, **SKEW},
          "fedavg_iid": {**FEDAVG, **IID}}
  runs = check_choices("runs", pop_list(ov, "runs", "dir01,iid,fedavg_dir01,fedavg_iid"), plan)
  seeds = pop_list(ov, "seeds", 0, int)
  out_root = str(ov.pop("workdirs", os.path.join(ROOT, "runs/default_recipe")))
  configs = {(seed, name): checked_config(bbc_minilm.get_config(), plan[name], ov, {
      "seed": seed, "data.split_seed": seed,  # the partition and test split vary with the seed too
      "progress": False, "workdir": os.path.join(out_root, name, f"s{seed}")})
      for seed in seeds for name in runs}  # every run's config checked before the first run
  rows: dict[str, list] = {}
  summary: dict[str, dict] = {}
  ratio = None
  path = None
  for seed in seeds:  # seed-major: after each pass every run has one more seed
    for name in runs:
      c = configs[(seed, name)]
      t0 = time.time()
      from fedlora.train import run
      s = run(c)  # a finished workdir resumes at its last round: nothing is trained again
      r = {k: s.get(k) for k in ("final_test_accuracy", "best_test_accuracy",
                                 "final_test_balanced_accuracy", "final_test_client_accuracy_worst10",
                                 "cum_uplink_bytes", "train_seconds_all_rounds", "resumed_from_round")}
      r.update(seed=seed, wall_seconds=time.time() - t0, overrides={**plan[name], **ov})
      rows.setdefault(name, []).append(r)
      summary = {n: {k: mean_std([x[k] for x in rs]) for k in
                     ("final_test_accuracy", "best_test_accuracy", "final_test_balanced_accuracy",
                      "cum_uplink_bytes")} | {"seeds": [x["seed"] for x in rs]}
                 for n, rs in rows.items()}
      if "dir01" in summary and "iid" in summary and summary["iid"]["final_test_accuracy"][0]:
        ratio = summary["dir01"]["final_test_accuracy"][0] / summary["iid"]["final_test_accuracy"][0]
      path = write_result("default_recipe", {"recipe": recipe, "overrides": ov, "seeds": seeds,
                                             "runs": rows, "summary": summary,
                                             "skewed_over_iid_of_means": ratio,
                                             "command": "python benchmarks/bench_default_recipe.py "
                                                        + " ".join(argv)})
      print(f"{name:<14} seed {seed}  final {100 * r['final_test_accuracy']:.2f}%  best "
            f"{100 * r['best_test_accuracy']:.2f}%  balanced {100 * r['final_test_balanced_accuracy']:.2f}%"
            f"  uplink {r['cum_uplink_bytes'] / 1e6:.1f} MB  {r['wall_seconds']:.0f} s", flush=True)
  print(f"\n{'run':<14}{'seeds':>6}{'final acc %':>18}{'best acc %':>18}{'balanced %':>18}")
  for n, sm in summary.items():
    f = lambda v: "-" if v[0] is None else f"{100 * v[0]:.2f} ± {100 * v[1]:.2f}"  # noqa: E731
    print(f"{n:<14}{len(sm['seeds']):>6}{f(sm['final_test_accuracy']):>18}"
          f"{f(sm['best_test_accuracy']):>18}{f(sm['final_test_balanced_accuracy']):>18}")
  if ratio is not None:
    print(f"skewed / IID final accuracy (means): {ratio:.3f} (target >= 0.95)")
  print(f"-> {path}")


if __name__ == "__main__":
  main(sys.argv[1:])

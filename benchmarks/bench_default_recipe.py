"""Does a recipe hold up under label skew on the DEFAULT experiment (configs/bbc_minilm.py: MiniLM-L6,
128 tokens, 20 clients, 10 per round, 20 rounds)? Runs the recipe under IID and Dirichlet(0.1)
(and FedAvg under Dirichlet(0.1) as the reference), prints final / best test accuracy, balanced
accuracy, uplink and wall time, and the ratio skewed / IID (the target is >= 0.95 with the IID
accuracy no worse than FedAvg's), writing benchmarks/results/default_recipe.json after every run.

  python benchmarks/bench_default_recipe.py [recipe=client.scaffold=True runs=iid,dir01,fedavg_dir01
                                             fed.rounds=20 ...]
`recipe` is a ';'-separated list of key=value overrides (the recipe under test); other key=value
arguments override every run. Run folders: runs/default_recipe/<run> (finished runs are reused).
"""
from __future__ import annotations

import ast
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "configs"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import bbc_minilm  # noqa: E402
from benchmarks.common import apply_overrides, parse_overrides, write_result  # noqa: E402
from fedlora.train import run  # noqa: E402

SKEW = {"data.partition": "dirichlet", "data.dirichlet_alpha": 0.1}
IID = {"data.partition": "iid"}


def parse_recipe(text: str) -> dict:
  out = {}
  for item in filter(None, text.split(";")):
    k, _, v = item.partition("=")
    try:
      out[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      out[k] = v
  return out


def main(argv):
  ov = parse_overrides([a for a in argv if not a.startswith("recipe=")])
  recipe = parse_recipe(next((a.split("=", 1)[1] for a in argv if a.startswith("recipe=")),
                             "client.scaffold=True"))
  runs = str(ov.pop("runs", "dir01,iid,fedavg_dir01")).split(",")
  out_root = str(ov.pop("out", os.path.join(ROOT, "runs/default_recipe")))
  plan = {"dir01": {**recipe, **SKEW}, "iid": {**recipe, **IID}, "fedavg_dir01": dict(SKEW),
          "fedavg_iid": dict(IID)}
  rows = {}
  for name in runs:
    c = bbc_minilm.get_config()
    apply_overrides(c, plan[name])
    apply_overrides(c, ov)
    c.progress = False
    c.workdir = os.path.join(out_root, name)
    t0 = time.time()
    s = run(c)
    rows[name] = {k: s.get(k) for k in ("final_test_accuracy", "best_test_accuracy",
                                        "final_test_balanced_accuracy",
                                        "final_test_client_accuracy_worst10", "cum_uplink_bytes",
                                        "train_seconds_all_rounds", "resumed_from_round")}
    rows[name]["wall_seconds"] = time.time() - t0
    rows[name]["overrides"] = {**plan[name], **ov}
    ratio = None
    if "dir01" in rows and "iid" in rows:
      ratio = rows["dir01"]["final_test_accuracy"] / rows["iid"]["final_test_accuracy"]
    path = write_result("default_recipe", {"recipe": recipe, "overrides": ov, "runs": rows,
                                           "skewed_over_iid": ratio,
                                           "command": "python benchmarks/bench_default_recipe.py "
                                                      + " ".join(argv)})
    r = rows[name]
    print(f"{name:<14} final {100 * r['final_test_accuracy']:.2f}%  best "
          f"{100 * r['best_test_accuracy']:.2f}%  balanced {100 * r['final_test_balanced_accuracy']:.2f}%"
          f"  uplink {r['cum_uplink_bytes'] / 1e6:.1f} MB  {r['wall_seconds']:.0f} s", flush=True)
  if ratio is not None:
    print(f"skewed / IID final accuracy: {ratio:.3f} (target >= 0.95)")
  print(f"-> {path}")


if __name__ == "__main__":
  main(sys.argv[1:])

"""A real LLM on real multi-domain data: zero-shot, centralized LoRA, federated IID, federated by domain.

  python benchmarks/bench_llm.py [config=configs/lm_smollm2.py] [seeds=0,1,2]
      [runs=centralized,iid,domain] [rounds=10] [clients_per_round=5] [local_steps=5]
      [max_examples=4000] [key.sub=value ...]

Every run is `fedlora.train.run` of the config (default SmolLM2-135M-Instruct on MultiEmo, task
'lm_classification', 20 clients; `python benchmarks/prepare_multiemo.py` first) with the run's own
settings, in its own workdir `runs/bench_llm/<config>-<run>-s<seed>`: a finished run is read back,
not repeated, and an interrupted one resumes. Runs:
  domain       the config as it is: clients made from the 4 domains (data.partition='column')
  iid          the same clients' sizes, examples drawn IID (data.partition='iid')
  centralized  one client holding all the training data, clients_per_round * local_steps local steps
               a round: the same number of examples seen per round as the federated runs
Zero-shot accuracy is each run's round-0 evaluation (eval.zero_shot: the pretrained model, LoRA's B
at 0), the same for every run of a seed. Any other key=value is a config override for every run
(e.g. data.max_length=64). Writes llm_<config>.json: per run and seed the summary figures, mean and
std over seeds, and federated-by-domain / centralized accuracy.
"""
from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (ROOT, apply_overrides, check_choices, fail, parse_overrides,  # noqa: E402
                               pop_list, script_setup, write_result)

RUNS = ("domain", "iid", "centralized")
KEEP = ("final_test_accuracy", "final_test_balanced_accuracy", "final_test_macro_f1",
        "zero_shot_test_accuracy", "cum_uplink_bytes", "train_seconds_all_rounds", "setup_seconds")


def run_overrides(run: str, clients_per_round: int, local_steps: int) -> dict:
  if run == "iid":
    return {"data.partition": "iid"}
  if run == "centralized":
    return {"data.partition": "iid", "data.num_clients": 1, "fed.clients_per_round": 1,
            "fed.local_steps": clients_per_round * local_steps}
  return {}


def load_config(path: str):
  import importlib.util
  file, _, variant = path.partition(":")
  if not os.path.isfile(file):
    fail(f"config={path!r}: no such config file")
  spec = importlib.util.spec_from_file_location("_bench_llm_config", file)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant or None)


def main(argv):
  script_setup()
  ov = parse_overrides(argv)
  config_path = str(ov.pop("config", os.path.join(ROOT, "configs", "lm_smollm2.py")))
  seeds = pop_list(ov, "seeds", "0,1,2", int)
  runs = check_choices("runs", pop_list(ov, "runs", ",".join(RUNS)), RUNS)
  shape = {k: pop_list(ov, k, d, int)[0] for k, d in (("rounds", 10), ("clients_per_round", 5),
                                                      ("local_steps", 5), ("max_examples", 4000))}
  from fedlora.config import typed
  from fedlora.train import run as run_one
  base = load_config(config_path)
  try:
    apply_overrides(base, {"fed.rounds": shape["rounds"], "fed.clients_per_round": shape["clients_per_round"],
                           "fed.local_steps": shape["local_steps"], "data.max_examples": shape["max_examples"],
                           "progress": False, **ov})
    typed(base)  # every setting checked before the first run
  except (KeyError, ValueError) as e:
    fail(str(e))
  name = os.path.basename(config_path.partition(":")[0])[:-3]
  results = {}
  for seed in seeds:
    for r in runs:
      c = apply_overrides(base.copy_and_resolve_references(), {
          "seed": seed, **run_overrides(r, shape["clients_per_round"], shape["local_steps"]),
          "workdir": os.path.join(ROOT, "runs", "bench_llm", f"{name}-{r}-s{seed}")})
      summary = run_one(c)
      results.setdefault(r, {})[seed] = {k: summary.get(k) for k in KEEP}
      print(f"{r} seed {seed}: {results[r][seed]}", flush=True)
  table = {}
  for r, by_seed in results.items():
    acc = [v["final_test_accuracy"] for v in by_seed.values()]
    table[r] = {"mean": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "seeds": len(acc)}
  zero = [v["zero_shot_test_accuracy"] for by_seed in results.values() for v in by_seed.values()]
  out = {"config": config_path, "shape": shape, "overrides": ov, "runs": results, "accuracy": table,
         "zero_shot_accuracy": statistics.mean(zero) if zero else None}
  if "domain" in table and "centralized" in table:
    out["domain_over_centralized"] = table["domain"]["mean"] / table["centralized"]["mean"]
  print(out["accuracy"], "zero-shot", out["zero_shot_accuracy"])
  print("->", write_result(f"llm_{name}", out))


if __name__ == "__main__":
  main(sys.argv[1:])

"""A real LLM on real multi-domain data: zero-shot, centralized LoRA, federated IID, federated by domain.

  python benchmarks/bench_llm.py [config=configs/lm_smollm2.py] [seeds=0,1,2]
      [runs=centralized,iid,domain] [rounds=6] [clients_per_round=5] [local_steps=3]
      [max_examples=2000] [workdirs=runs/bench_llm] [smoke=1] [key.sub=value ...]

Every run is `fedlora.train.run` of the config (default SmolLM2-135M-Instruct on MultiEmo, task
'lm_classification', 20 clients; `python benchmarks/prepare_multiemo.py` first) with the run's own
settings, in its own workdir `<workdirs>/<config>-<run>-s<seed>`: a finished run is read back,
not repeated, and an interrupted one resumes. rounds, clients_per_round, local_steps, max_examples:
integers >= 1 (smoke=1: the SMOKE config of benchmarks/common.py and 1 round of 1 local step, 2
clients per round, 240 examples; e.g. `config=configs/tiny.py runs=iid seeds=0 smoke=1`). Runs:
  domain       the config as it is: clients made from the 4 domains (data.partition='column')
  iid          the same clients' sizes, examples drawn IID (data.partition='iid')
  centralized  one client holding all the training data, clients_per_round * local_steps local steps
               a round: the same number of examples seen per round as the federated runs
Zero-shot accuracy is the domain run's round-0 evaluation (eval.zero_shot: the pretrained model,
LoRA's B at 0; the test split is every run's of a seed, so the other runs skip it). Only the last
round is evaluated (eval.every = rounds). The default shape (6 rounds of 5 clients x 3 local steps
of 8 x 64 tokens, 2,000 sentences: 1,800 train, 200 test) sizes the study for a 2-core CPU. Any other key=value is a config override for every run
(e.g. data.max_length=64). Writes llm_<config>.json: per run and seed the summary figures, mean and
std over seeds, and federated-by-domain / centralized accuracy. Every run's config is checked before
the first run. The results file for the default config (benchmarks/results/llm_lm_smollm2.json):
  python benchmarks/bench_llm.py replace=1
"""
from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (ROOT, check_choices, checked_config, fail, parse_overrides,  # noqa: E402
                               pop_list, pop_one, script_setup, smoke, write_result)

RUNS = ("domain", "iid", "centralized")
KEEP = ("final_test_accuracy", "final_test_balanced_accuracy", "final_test_macro_f1",
        "zero_shot_test_accuracy", "cum_uplink_bytes", "train_seconds_all_rounds", "setup_seconds")


def run_overrides(run: str, clients_per_round: int, local_steps: int) -> dict:
  if run == "iid":
    return {"data.partition": "iid", "eval.zero_shot": False}
  if run == "centralized":
    return {"data.partition": "iid", "data.num_clients": 1, "fed.clients_per_round": 1,
            "fed.local_steps": clients_per_round * local_steps, "eval.zero_shot": False}
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
  shape = {k: pop_one(ov, k, d, int) for k, d in (
      ("rounds", 1 if smoke() else 6), ("clients_per_round", 2 if smoke() else 5),
      ("local_steps", 1 if smoke() else 3), ("max_examples", 240 if smoke() else 2000))}
  bad = {k: v for k, v in shape.items() if v < 1}
  if bad:
    fail(f"{bad}: each must be an integer >= 1")
  workdirs = str(ov.pop("workdirs", os.path.join(ROOT, "runs", "bench_llm")))
  name = os.path.basename(config_path.partition(":")[0])[:-3]
  try:
    load_config(config_path)
  except Exception as e:  # a config file that does not load, or a variant it does not have
    fail(f"config={config_path!r}: {e}")
  configs = {(seed, r): checked_config(load_config(config_path), {
      "fed.rounds": shape["rounds"], "fed.clients_per_round": shape["clients_per_round"],
      "fed.local_steps": shape["local_steps"], "data.max_examples": shape["max_examples"],
      "eval.every": shape["rounds"], "progress": False}, ov, {
      "seed": seed, **run_overrides(r, shape["clients_per_round"], shape["local_steps"]),
      "workdir": os.path.join(workdirs, f"{name}-{r}-s{seed}")})
      for seed in seeds for r in runs}  # every run's config checked before the first run
  from fedlora.train import run as run_one
  results = {}
  for seed in seeds:
    for r in runs:
      summary = run_one(configs[(seed, r)])
      results.setdefault(r, {})[seed] = {k: summary.get(k) for k in KEEP}
      print(f"{r} seed {seed}: {results[r][seed]}", flush=True)
  table = {}
  for r, by_seed in results.items():
    acc = [v["final_test_accuracy"] for v in by_seed.values()]
    table[r] = {"mean": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "seeds": len(acc)}
  zero = [v["zero_shot_test_accuracy"] for by_seed in results.values() for v in by_seed.values()
          if v["zero_shot_test_accuracy"] is not None]  # None: the config does not evaluate round 0
  out = {"config": config_path, "shape": shape, "overrides": ov, "runs": results, "accuracy": table,
         "zero_shot_accuracy": statistics.mean(zero) if zero else None}
  if "domain" in table and "centralized" in table and table["centralized"]["mean"]:
    out["domain_over_centralized"] = table["domain"]["mean"] / table["centralized"]["mean"]
  print(out["accuracy"], "zero-shot", out["zero_shot_accuracy"])
  print("->", write_result(f"llm_{name}", out))


if __name__ == "__main__":
  main(sys.argv[1:])

"""Does SOFT's premise hold on trained factors? Its per-rank scores s_i = ‖a_i‖·‖b_i‖ against the SVD.

SOFT keeps the m rank components with the largest s_i, which is Eckart–Young's best rank-m
approximation only when A's columns and B's rows are orthogonal. This script reads the final
checkpoint of finished runs of `benchmarks/sweep_methods.py` (by default its `score` group, which trains
SOFT with the regulariser's B term 'gram' or 'cosine', `method.ortho_b`; the folders are those
`benchmarks/results/sweep_methods.json` names) and, for every adapter
of the global model `(a [d_in, r], b [r, d_out])`, computes with numpy:
  b_cos      largest |cosine| between two rows of b;
  a_off      largest |off-diagonal| of aᵀa;
  s_err      ‖sort(s) − σ‖ / ‖σ‖, σ the top-r singular values of a @ b;
  captured   ‖Σ_{i in top-m by s} a_i b_iᵀ‖_F² / Σ_{j ≤ m} σ_j²: the energy SOFT's pick keeps relative
             to the best rank-m approximation (1 = as good as the SVD), at m = ceil(ρ·r);
  b_zero     rank components whose row of b is exactly 0 (never trained: B starts at 0).
Prints the median / worst over adapters per run (and the mean over seeds) and writes the results
file `<name>.json`.

Keys:
  group=score               the sweep group
  labels=gram_delta,gram_updated,gram_product,cosine_delta,cosine_updated,cosine_product
                            run labels of that group (benchmarks/sweep_methods.py's grid)
  ratio=0.25                ρ in (0, 1]
  sweep=benchmarks/results/sweep_methods.json   the sweep results file naming the run folders
  name=soft_alignment       the results file's name
  smoke=1                   the same measurement (it is numpy on the checkpoints: already small)
A label without a finished checkpointed run is reported and skipped; when none has one, nothing is
written (exit code 2). The committed results:
  python benchmarks/bench_soft_alignment.py replace=1                           (soft_alignment.json)
  python benchmarks/bench_soft_alignment.py group=graded labels=soft_product,svd name=soft_alignment_graded replace=1
"""
from __future__ import annotations

import glob
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (RESULTS, check_choices, fail, no_unknown, parse_overrides,  # noqa: E402
                               pop_list, pop_one, script_setup, write_result)

script_setup()

import numpy as np  # noqa: E402


def adapters(tree, path=""):
  """Yield `(path, a [d_in, r], b [r, d_out])` for every dict node holding lora_a and lora_b."""
  if isinstance(tree, dict):
    if "lora_a" in tree and "lora_b" in tree:
      yield path, np.asarray(tree["lora_a"], np.float64), np.asarray(tree["lora_b"], np.float64)
    for k, v in tree.items():
      yield from adapters(v, f"{path}/{k}")


def measure(a: np.ndarray, b: np.ndarray, ratio: float) -> dict:
  r = a.shape[1]
  m = max(1, min(r, math.ceil(ratio * r)))
  nb = np.linalg.norm(b, axis=1)
  cos = (b @ b.T) / np.maximum(np.outer(nb, nb), 1e-30)
  ga = a.T @ a
  off = lambda g: float(np.max(np.abs(g - np.diag(np.diag(g))))) if r > 1 else 0.0  # noqa: E731
  s = np.linalg.norm(a, axis=0) * nb
  sig = np.linalg.svd(a @ b, compute_uv=False)[:r]
  keep = np.argsort(-s, kind="stable")[:m]
  kept = np.sum(np.square(a[:, keep] @ b[keep, :]))
  best = float(np.sum(np.square(sig[:m])))
  return {"b_cos": off(cos), "a_off": off(ga),
          "s_err": float(np.linalg.norm(np.sort(s)[::-1] - sig) / max(np.linalg.norm(sig), 1e-30)),
          "captured": float(kept / best) if best > 0 else 1.0, "b_zero": float(np.sum(nb == 0.0))}


def final_state(workdir: str):
  """(last saved round, its state as numpy), or (None, None) without checkpoints. The run's own
  Checkpointer finds the step; the state is read without a `like` tree (shapes from the files)."""
  import orbax.checkpoint as ocp
  from fedlora.utils.checkpoint import Checkpointer
  ck = Checkpointer(workdir, keep=1)
  step = ck.latest_step()
  ck.close()
  if step is None:
    return None, None
  return step, ocp.StandardCheckpointer().restore(os.path.join(ck.directory, str(step), "state"))


def main(argv):
  ov = parse_overrides(argv)
  group = str(ov.pop("group", "score"))
  labels = pop_list(ov, "labels", "gram_delta,gram_updated,gram_product,cosine_delta,cosine_updated,"
                    "cosine_product")
  ratio = pop_one(ov, "ratio", 0.25, float)
  out_name = str(ov.pop("name", "soft_alignment"))
  sweep_file = str(ov.pop("sweep", os.path.join(RESULTS, "sweep_methods.json")))
  no_unknown(ov, ("group", "labels", "ratio", "sweep", "name"))
  if not 0.0 < ratio <= 1.0:
    fail(f"ratio={ratio}: a number in (0, 1]")
  if not os.path.exists(sweep_file):
    fail(f"sweep={sweep_file!r}: no such results file of benchmarks/sweep_methods.py")
  with open(sweep_file) as f:
    groups = json.load(f)["groups"]
  from benchmarks.sweep_methods import grid
  known = {}
  for g, label, _, _ in grid():  # the sweep's groups and labels: a typo is an error, a run not yet
    known.setdefault(g, []).append(label)  # in the results file is reported and skipped
  check_choices("group", [group], known)
  check_choices("labels", labels, known[group])
  sweep = groups.get(group, {})
  rows = {}
  print(f"{'run':<16}{'seed':>5}{'round':>6}{'B cos med/max':>16}{'AᵀA off med':>13}"
        f"{'s_err med/max':>16}{'captured med/min':>18}{'B zero rows min/max':>21}")
  for label in labels:
    if label not in sweep:
      print(f"{label}: no finished run in group {group!r} of benchmarks/results/sweep_methods.json")
      continue
    per_seed = {}
    wds = {f"seed{s}": wd for s, wd in (sweep[label].get("workdirs") or {}).items()}  # fedlora.sweep's
    if not wds:  # an older results file: <folder>/seed<k>
      wds = {os.path.basename(wd): wd for wd in glob.glob(os.path.join(sweep[label]["folder"], "seed*"))}
    for seed, wd in sorted(wds.items()):
      step, state = final_state(wd)
      if state is None:
        continue
      ms = [measure(a, b, ratio) for _, a, b in adapters(state["trainable"])]
      agg = {k: (float(np.median([m[k] for m in ms])), float(np.max([m[k] for m in ms])),
                 float(np.min([m[k] for m in ms]))) for k in ms[0]}
      per_seed[seed] = {"round": step, "adapters": len(ms),
                        **{k: {"median": v[0], "max": v[1], "min": v[2]} for k, v in agg.items()}}
      print(f"{label:<16}{seed[4:]:>5}{step:>6}{agg['b_cos'][0]:>9.3f}/{agg['b_cos'][1]:.3f}"
            f"{agg['a_off'][0]:>13.3f}{agg['s_err'][0]:>9.3f}/{agg['s_err'][1]:.3f}"
            f"{agg['captured'][0]:>11.3f}/{agg['captured'][2]:.3f}"
            f"{agg['b_zero'][2]:>16.0f}/{agg['b_zero'][1]:.0f}")
    if per_seed:
      rows[label] = {"workdirs": {s: wds[s] for s in per_seed}, "per_seed": per_seed,
                     "mean_over_seeds": {k: float(np.mean([s[k]["median"] for s in per_seed.values()]))
                                         for k in ("b_cos", "a_off", "s_err", "captured", "b_zero")}}
  if not rows:
    fail(f"no finished run with checkpoints in group {group!r} for labels {labels}: nothing measured")
  print("->", write_result(out_name, {"group": group, "ratio": ratio, "runs": rows}))


if __name__ == "__main__":
  main(sys.argv[1:])

"""`summary.json` and the memory line of a run, derived from `metrics.jsonl` and the built experiment."""
from __future__ import annotations

import os
import time

import jax

from fedlora import lora
from fedlora.fed import memory
from fedlora.fed.algorithm import BIT_COMPONENTS
from fedlora.optim import make_optimizer
from fedlora.run.errors import warn
from fedlora.utils.files import write_json_atomic
from fedlora.utils.metrics import read_metrics
from fedlora.utils.plot import plot_run


def write_summary(exp, fp: dict, start: int, setup_s: float, t0: float,
                  memory_info: dict | None = None) -> dict:
  """summary.json, derived from metrics.jsonl (rounds <= fed.rounds) and written atomically; the
  task adds its own metrics (`Task.summarize`). When metrics.jsonl lacks rounds (a torn or deleted
  line), the summary is still derived from what it holds and lists the rounds it lacks under
  `metric_rounds_missing` (the command line then exits with status 3): it is never left stale."""
  config = exp.config
  path = os.path.join(config.workdir, "summary.json")
  records = [r for r in read_metrics(os.path.join(config.workdir, "metrics.jsonl"))
             if r["round"] <= config.fed.rounds]
  zero = [r for r in records if r["round"] == 0]  # eval.zero_shot: the model before round 1
  records = [r for r in records if r["round"] >= 1]
  missing = sorted(set(range(1, config.fed.rounds + 1)) - {r["round"] for r in records})
  if missing:
    shown = f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
    warn(f"{config.workdir}/metrics.jsonl has no record of round(s) {shown} (a torn or deleted "
         "line); summary.json is derived from the rounds it holds and lists them under "
         "metric_rounds_missing")
  head = f"test_{exp.task.headline}"
  evals = [r for r in records if head in r]
  info = exp.data.info
  summary = {
      "rounds": config.fed.rounds, "method": config.method.name, "fingerprint": fp["hash"],
      "workdir": config.workdir,
      "task": exp.task.name, "headline": head, f"final_{head}": evals[-1][head] if evals else None,
      "final_test": {k: v for k, v in evals[-1].items() if k.startswith("test_")} if evals else {},
      **{f"zero_shot_{k}": v for r in zero for k, v in r.items() if k.startswith("test_")},
      **exp.task.summarize(records),
      "server": config.server.name,
      **{f"cum_{k}_bytes": records[-1].get(f"cum_{k}_bytes", 0.0) if records else 0.0
         for k in BIT_COMPONENTS},
      "lora_rank": config.lora.rank,
      "empty_rounds": sum(r.get("aggregated", 1) == 0 for r in records),
      "skipped_clients": sum(len(r.get("nonfinite_clients", [])) for r in records),
      "data_dropped_rows": dict(info.get("data_dropped", {})),
      "metric_rounds_missing": missing,
      **budget_summary(records),
      "trainable_params": lora.tree_size(exp.parts.trainable),
      "frozen_params": lora.tree_size(exp.parts.frozen),
      "num_clients": exp.clients.num_clients, "labels": info.get("label_names"),
      **({"data_stats": info["stats"]} if "stats" in info else {}),
      "resumed_from_round": start, "setup_seconds": setup_s,
      "wall_seconds_this_invocation": time.time() - t0,
      "train_seconds_all_rounds": sum(r.get("round_seconds", 0.0) for r in records),
      **({"memory": memory_info} if memory_info is not None else {}),
  }
  write_json_atomic(path, summary)
  if records:
    plot_run(records, os.path.join(config.workdir, "plot.png"), title=f"{config.method.name}", metric=head)
    exp.method.plot(records, config.workdir)
  return summary


def budget_summary(records: list) -> dict:
  """TSFA over the uplink: rounds whose plan could not meet τ̄ at any ratio (`min_round_latency`
  at ρ_min above the budget, fedlora/methods/uplink.py) and the largest such latency; {} otherwise."""
  lat = [r["min_round_latency"] for r in records if "min_round_latency" in r]
  if not lat:
    return {}
  return {"latency_budget_infeasible_rounds":
          sum(bool(r.get("latency_budget_infeasible", False)) for r in records),
          "max_min_round_latency_s": max(lat)}


def memory_line(exp, state: dict) -> dict:
  """Bytes of the frozen base, of one client's trainable + optimizer state (+ its state row), the
  chunk the client phase ran with, the peak memory of this process so far, and the host allocator's
  settings (GLIBC_TUNABLES, exported by `launch/env.sh`; None when unset)."""
  tr = exp.parts.trainable
  opt = jax.eval_shape(make_optimizer(exp.config.optim).init, tr)
  row = lora.tree_bytes(state["client_states"]) // max(1, exp.clients.num_clients)
  out = {"frozen_base_bytes": lora.tree_bytes(exp.parts.frozen),
         "client_trainable_bytes": lora.tree_bytes(tr), "client_optimizer_bytes": lora.tree_bytes(opt),
         "client_state_row_bytes": row,
         "client_chunk": exp.round_fns.client_chunk or exp.config.fed.clients_per_round}
  if exp.chunk_choice is not None:
    out.update(chunk_reason=exp.chunk_choice.reason,
               per_client_step_bytes_xla=exp.chunk_choice.per_client_bytes,
               memory_budget_bytes=exp.chunk_choice.budget_bytes)
  out.update(memory.peak_memory_bytes())
  out["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES")  # the host allocator's settings (launch/env.sh)
  return out

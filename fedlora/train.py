"""Federated LoRA fine-tuning: wires model, data, LoRA, rounds, evaluation, checkpoints and metrics.

  python -m fedlora.train --config configs/bbc_minilm.py [--config.fed.rounds=30 ...]

Outputs in `config.workdir`: config.json, metrics.jsonl (one line per round), summary.json,
plot.png, checkpoints/. Rerunning the same command with the same workdir resumes from the last
checkpoint and ends with the same result as an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fedlora import lora  # noqa: E402
from fedlora.data.clients import ClientData  # noqa: E402
from fedlora.data.tokenize import load_tokenizer  # noqa: E402
from fedlora.fed.round import RoundFns, make_round  # noqa: E402
from fedlora.fed.sampling import sample_clients  # noqa: E402
from fedlora.fed.sharding import check_divisible, client_mesh  # noqa: E402
from fedlora.fed.local import make_optimizer  # noqa: E402
from fedlora.models import load_pretrained, read_config  # noqa: E402
from fedlora.models.families import family_for  # noqa: E402
from fedlora.tasks import get_task, task_name  # noqa: E402
from fedlora.utils.checkpoint import Checkpointer  # noqa: E402
from fedlora.utils.metrics import MetricsWriter, read_metrics  # noqa: E402
from fedlora.utils.plot import plot_run  # noqa: E402
from fedlora.utils.validate import ConfigError, resolve_model_path, validate  # noqa: E402
from fedlora.methods import Method, build_method  # noqa: E402


class Experiment(NamedTuple):
  """Everything a run needs, built once from the config (static parts, no mutable state)."""
  config: Any
  parts: lora.ModelParts        # graphdef, initial trainable, frozen base (shared by all clients)
  clients: ClientData           # arrays [N, n_max, ...] (the task's batch keys), on device
  test: dict                    # numpy test split (what the task's evaluation reads)
  label_names: list             # classes (classification) / categories (causal_lm)
  histogram: np.ndarray         # [N, classes or categories]
  round_fns: RoundFns
  evaluate: Any
  method: Method
  task: Any = None              # fedlora.tasks.Task
  info: dict = {}               # the task's data facts (TaskData.info)
  tokenizer: Any = None


def load_data(config, task):
  """Model folder, tokenizer and the task's federated data (fedlora.tasks.TaskData)."""
  model_path = resolve_model_path(config.model)
  hf_config = read_config(model_path)
  family = family_for(hf_config.get("model_type"), model_path)
  if task.head not in family.heads:
    raise ValueError(f"task {task.name!r} needs a {task.head!r} head, but {model_path!r} is a "
                     f"{family.name!r} model (model_type={hf_config.get('model_type')!r}) with heads "
                     f"{list(family.heads)}")
  tokenizer = load_tokenizer(model_path)
  return model_path, tokenizer, family, task.prepare_data(config, tokenizer, hf_config)


def build(config) -> Experiment:
  """Validates the config, loads model and data, and builds the jitted round functions."""
  validate(config)
  task = get_task(task_name(config))
  model_path, tokenizer, family, data = load_data(config, task)
  missing = sorted(set(task.batch) - set(data.clients.arrays))
  if missing:
    raise ValueError(f"task {task.name!r} batches need arrays {sorted(task.batch)}; its data lacks {missing}")
  key = jax.random.PRNGKey(config.seed)
  k_head, k_lora = jax.random.split(jax.random.fold_in(key, 10**6))
  model = load_pretrained(model_path, key=k_head, num_layers=config.model.num_layers or None,
                          **task.model_kwargs(config, data))
  base = lora.split_model(model, family.head_paths)
  lora_cfg = config.lora
  if not lora_cfg.targets:  # () or "" -> the family's default targets
    lora_cfg = config.lora.copy_and_resolve_references()
    lora_cfg.targets = family.lora_targets
  adapters = lora.init_adapters(k_lora, base.frozen, lora_cfg)
  lora.attach(model, adapters, scale=lora.lora_scale(config.lora.alpha, config.lora.rank),
              dropout=config.lora.dropout)
  parts = lora.split_model(model, family.head_paths)
  method = build_method(config, parts.trainable)
  mesh = client_mesh(config.mesh.num_devices or None)
  check_divisible(config.fed.clients_per_round, mesh)
  labels = lora.trainable_labels(parts.trainable, method.freeze)
  loss_fn = task.make_loss(parts, config, method.penalty, method.penalty_weight)
  round_fns = make_round(loss_fn, make_optimizer(config.optim, labels), method.compressor,
                         local_steps=config.fed.local_steps, batch_size=config.fed.batch_size,
                         server_lr=config.fed.server_lr, mesh=mesh)
  clients = jax.tree_util.tree_map(jnp.asarray, data.clients)
  return Experiment(config, parts, clients, data.test, data.info.get("label_names"),
                    data.info.get("histogram"), round_fns,
                    task.make_eval(parts, config, data, tokenizer), method, task, data.info, tokenizer)


def init_state(exp: Experiment) -> dict:
  """The whole mutable run state as a PyTree of arrays (what a checkpoint holds)."""
  n = exp.clients.num_clients
  comp = exp.method.compressor.init(exp.parts.trainable)
  comp = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), comp)
  return {"round": np.asarray(0, np.int32), "trainable": exp.parts.trainable,
          "comp_states": comp, "method": exp.method.init_state(exp),
          "cum_uplink_bits": np.asarray(0.0, np.float64),
          "cum_downlink_bits": np.asarray(0.0, np.float64)}


def run_round(exp: Experiment, state: dict, t: int) -> tuple[dict, dict]:
  """Round t (1-based): sample clients, plan the uplink, train + compress (vmapped), aggregate."""
  cfg = exp.config
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), t)
  k_sel, k_plan, k_clients = jax.random.split(key, 3)
  ids = sample_clients(k_sel, exp.clients.num_clients, cfg.fed.clients_per_round)
  plan, mstate = exp.method.plan(exp, state["method"], ids, k_plan)
  out, comp_states = exp.round_fns.client_phase(state["trainable"], exp.parts.frozen, exp.clients,
                                                ids, k_clients, plan["ratio"], state["comp_states"])
  delivered, mstate, wireless = exp.method.deliver(exp, mstate, plan, out.bits, out.profile)
  weights = exp.clients.num_examples[ids].astype(jnp.float32) * delivered
  trainable = exp.round_fns.server_phase(state["trainable"], out.delta, weights)
  down_bits = 32.0 * lora.tree_size(state["trainable"]) * ids.shape[0]
  up_bits = float(jnp.sum(out.bits * delivered))
  new_state = dict(state, round=np.asarray(t, np.int32), trainable=trainable,
                   comp_states=comp_states, method=mstate,
                   cum_uplink_bits=np.asarray(float(state["cum_uplink_bits"]) + up_bits),
                   cum_downlink_bits=np.asarray(float(state["cum_downlink_bits"]) + down_bits))
  record = {
      "round": t, "clients": ids, "client_loss": out.metrics["loss"],
      "train_loss": float(out.metrics["loss"].mean()),
      "train_acc": float(out.metrics["acc"].mean()),
      "ratio": plan["ratio"], "uplink_bits": out.bits, "delivered": delivered,
      "uplink_bytes_round": up_bits / 8, "downlink_bytes_round": down_bits / 8,
      "cum_uplink_bytes": float(new_state["cum_uplink_bits"]) / 8,
      "cum_downlink_bytes": float(new_state["cum_downlink_bits"]) / 8,
  }
  record.update(wireless)
  return new_state, record


def run(config) -> dict:
  """Runs (or resumes) the experiment in config.workdir and returns the summary dict."""
  t0 = time.time()
  exp = build(config)
  os.makedirs(config.workdir, exist_ok=True)
  with open(os.path.join(config.workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  ckpt = Checkpointer(config.workdir, config.checkpoint.keep)
  state = init_state(exp)
  start = ckpt.latest_step() or 0
  if start:
    state = ckpt.restore(start, state)
  writer = MetricsWriter(config.workdir, start)
  setup_s = time.time() - t0
  bar = None
  if config.progress and start < config.fed.rounds:
    from tqdm import tqdm
    bar = tqdm(total=config.fed.rounds, initial=start, desc="rounds", unit="round")
  last_eval = None
  for t in range(start + 1, config.fed.rounds + 1):
    tr = time.time()
    state, rec = run_round(exp, state, t)
    jax.block_until_ready(state["trainable"])
    rec["round_seconds"] = time.time() - tr
    if t % config.eval.every == 0 or t == config.fed.rounds:
      te = time.time()
      last_eval = exp.evaluate(state["trainable"], exp.parts.frozen, exp.test)
      rec.update({f"test_{k}": v for k, v in last_eval.items()})
      rec["eval_seconds"] = time.time() - te
    writer.write(rec)
    if t % config.checkpoint.every == 0 or t == config.fed.rounds:
      ckpt.save(t, state)
    if bar is not None:
      post = {"loss": f"{rec['train_loss']:.3f}", "up_MB": f"{rec['cum_uplink_bytes'] / 1e6:.2f}"}
      if last_eval is not None and "accuracy" in last_eval:
        post["acc"] = f"{100 * last_eval['accuracy']:.1f}%"
      elif last_eval is not None:
        post[exp.task.headline] = f"{last_eval[exp.task.headline]:.3f}"
      bar.set_postfix(post)
      bar.update(1)
  if bar is not None:
    bar.close()
  ckpt.close()
  exp.task.after_training(exp, state["trainable"])
  records = read_metrics(os.path.join(config.workdir, "metrics.jsonl"))
  final = [r for r in records if "test_accuracy" in r]
  head = f"test_{exp.task.headline}"
  evals = [r for r in records if head in r]
  summary = {
      "rounds": config.fed.rounds, "method": config.method.name, "task": exp.task.name,
      "headline": head, f"final_{head}": evals[-1][head] if evals else None,
      "final_test": {k: v for k, v in evals[-1].items() if k.startswith("test_")} if evals else {},
      "final_test_accuracy": final[-1]["test_accuracy"] if final else None,
      "best_test_accuracy": max(r["test_accuracy"] for r in final) if final else None,
      "cum_uplink_bytes": records[-1]["cum_uplink_bytes"] if records else 0.0,
      "cum_downlink_bytes": records[-1]["cum_downlink_bytes"] if records else 0.0,
      "trainable_params": lora.tree_size(exp.parts.trainable),
      "frozen_params": lora.tree_size(exp.parts.frozen),
      "num_clients": exp.clients.num_clients, "labels": exp.label_names,
      **({"data_stats": exp.info["stats"]} if "stats" in exp.info else {}),
      "resumed_from_round": start, "setup_seconds": setup_s,
      "wall_seconds_this_invocation": time.time() - t0,
      "train_seconds_all_rounds": sum(r.get("round_seconds", 0.0) for r in records),
  }
  with open(os.path.join(config.workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  plot_run(records, os.path.join(config.workdir, "plot.png"), title=f"{config.method.name}", metric=head)
  exp.method.plot(records, config.workdir)
  return summary


def parse_config(argv: list[str]):
  """`--config path.py[:arg]` plus `--config.a.b=value` overrides, with clear errors."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", "configs/bbc_minilm.py", flag_values=fv,
                                           lock_config=True)
  try:
    fv(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    msg = str(e).replace("\\n", " ").replace("\n", " ")
    raise ConfigError(f"bad command line {bad}: {msg}. Keys and types are those of the config "
                      "file (see configs/*.py for every key and its meaning)") from None
  return holder.value


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  try:
    config = parse_config(argv)
    summary = run(config)
  except (ConfigError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  head = summary["headline"]
  print(json.dumps({k: summary[k] for k in ("method", "rounds", f"final_{head}", "cum_uplink_bytes",
                                            "wall_seconds_this_invocation")}))
  value = summary[f"final_{head}"]
  shown = f"{100 * value:.2f}%" if head == "test_accuracy" else f"{value:.4f}"
  print(f"final {head.replace('_', ' ')} {shown} | uplink {summary['cum_uplink_bytes'] / 1e6:.2f} MB"
        f" | outputs in {config.workdir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

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
from fedlora.data.clients import ClientData, prepare_federated_data  # noqa: E402
from fedlora.data.sources import load_dataset_from_config  # noqa: E402
from fedlora.data.split import split_indices  # noqa: E402
from fedlora.data.tokenize import load_tokenizer  # noqa: E402
from fedlora.fed.round import RoundFns, make_round  # noqa: E402
from fedlora.fed.sampling import sample_clients  # noqa: E402
from fedlora.fed.sharding import check_divisible, client_mesh  # noqa: E402
from fedlora.fed.local import make_optimizer  # noqa: E402
from fedlora.models import load_pretrained  # noqa: E402
from fedlora.tasks.classification import make_eval, make_loss  # noqa: E402
from fedlora.utils.checkpoint import Checkpointer  # noqa: E402
from fedlora.utils.metrics import MetricsWriter, read_metrics  # noqa: E402
from fedlora.utils.plot import plot_run  # noqa: E402
from fedlora.utils.validate import ConfigError, resolve_model_path, validate  # noqa: E402
from fedlora.methods import Method, build_method  # noqa: E402


class Experiment(NamedTuple):
  """Everything a run needs, built once from the config (static parts, no mutable state)."""
  config: Any
  parts: lora.ModelParts        # graphdef, initial trainable, frozen base (shared by all clients)
  clients: ClientData           # [N, n_max, L] stacked client data, on device
  test: dict                    # numpy test split
  label_names: list
  histogram: np.ndarray         # [N, classes]
  round_fns: RoundFns
  evaluate: Any
  method: Method


def load_data(config):
  """Tokenizer + federated data (with the optional stratified `data.max_examples` subset)."""
  model_path = resolve_model_path(config.model)
  tokenizer = load_tokenizer(model_path)
  ds = load_dataset_from_config(config.data)
  if config.data.max_examples and config.data.max_examples < len(ds):
    labels = np.asarray(ds["label"])
    _, keep = split_indices(labels, config.data.max_examples / len(ds), config.data.split_seed)
    ds = ds.select(np.sort(keep))
  return model_path, prepare_federated_data(config.data, tokenizer, ds=ds)


def build(config) -> Experiment:
  """Validates the config, loads model and data, and builds the jitted round functions."""
  validate(config)
  model_path, fd = load_data(config)
  key = jax.random.PRNGKey(config.seed)
  k_head, k_lora = jax.random.split(jax.random.fold_in(key, 10**6))
  model = load_pretrained(model_path, num_labels=len(fd.label_names), pooling=config.model.pooling,
                          key=k_head, num_layers=config.model.num_layers or None)
  base = lora.split_model(model)
  adapters = lora.init_adapters(k_lora, base.frozen, config.lora)
  lora.attach(model, adapters, scale=lora.lora_scale(config.lora.alpha, config.lora.rank),
              dropout=config.lora.dropout)
  parts = lora.split_model(model)
  method = build_method(config, parts.trainable)
  mesh = client_mesh(config.mesh.num_devices or None)
  check_divisible(config.fed.clients_per_round, mesh)
  labels = lora.trainable_labels(parts.trainable, method.freeze)
  loss_fn = make_loss(parts, method.penalty, method.penalty_weight)
  round_fns = make_round(loss_fn, make_optimizer(config.optim, labels), method.compressor,
                         local_steps=config.fed.local_steps, batch_size=config.fed.batch_size,
                         server_lr=config.fed.server_lr, mesh=mesh)
  clients = jax.tree_util.tree_map(jnp.asarray, fd.clients)
  return Experiment(config, parts, clients, fd.test, fd.label_names, fd.histogram, round_fns,
                    make_eval(parts, config.eval.batch_size), method)


def init_state(exp: Experiment) -> dict:
  """The whole mutable run state as a PyTree of arrays (what a checkpoint holds)."""
  n = exp.clients.num_clients
  comp = exp.method.compressor.init(exp.parts.trainable)
  comp = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), comp)
  return {"round": np.asarray(0, np.int32), "trainable": exp.parts.trainable,
          "comp_states": comp, "method": exp.method.init_state(exp),
          "cum_bits": {k: np.asarray(0.0, np.float64) for k in BIT_COMPONENTS}}


# Bits of a round, by named component (each reported as `<name>_bytes_round` and `cum_<name>_bytes`
# in metrics.jsonl, `cum_<name>_bytes` in summary.json; new components: add a name and its term):
#   uplink           payload of the uploads that arrived (what the server aggregates)
#   uplink_attempted payload of every upload sent, including those dropped at the deadline
#   profile          importance profiles the clients report for TSFA's next plan (32·r bits each)
#   downlink         broadcast of the global trainable tree to each sampled client at
#                    compress.downlink_bits_per_value (+ one-off broadcasts: FFA's frozen A, round 1)
BIT_COMPONENTS = ("uplink", "uplink_attempted", "profile", "downlink")


def round_bits(exp: Experiment, t: int, bits, delivered) -> dict:
  """`{component: bits}` of round t (floats); `bits [K]` payloads, `delivered [K]` in {0, 1}."""
  k = int(bits.shape[0])
  m = exp.method
  return {"uplink": float(jnp.sum(bits * delivered)), "uplink_attempted": float(jnp.sum(bits)),
          "profile": m.profile_bits * k,
          "downlink": m.broadcast_bits * k + (m.broadcast_once_bits if t == 1 else 0.0)}


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
  bits = round_bits(exp, t, out.bits, delivered)
  cum = {k: np.asarray(float(state["cum_bits"][k]) + bits[k]) for k in BIT_COMPONENTS}
  new_state = dict(state, round=np.asarray(t, np.int32), trainable=trainable,
                   comp_states=comp_states, method=mstate, cum_bits=cum)
  record = {
      "round": t, "clients": ids, "client_loss": out.metrics["loss"],
      "train_loss": float(out.metrics["loss"].mean()),
      "train_acc": float(out.metrics["acc"].mean()),
      "ratio": plan["ratio"], "uplink_bits": out.bits, "delivered": delivered,
  }
  for k in BIT_COMPONENTS:
    record[f"{k}_bytes_round"] = bits[k] / 8
    record[f"cum_{k}_bytes"] = float(cum[k]) / 8
  record.update(wireless)
  return new_state, record


def run(config) -> dict:
  """Runs (or resumes) the experiment in config.workdir and returns the summary dict."""
  t0 = time.time()
  if config.tsfa.offline.enabled:  # TSFA offline stage: pilot (or its recorded choice) -> rank, V, ρ_min
    from fedlora.tsfa.pilot import offline_stage
    config = offline_stage(config)
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
      rec["test_accuracy"], rec["test_loss"] = last_eval["accuracy"], last_eval["loss"]
      rec["eval_seconds"] = time.time() - te
    writer.write(rec)
    if t % config.checkpoint.every == 0 or t == config.fed.rounds:
      ckpt.save(t, state)
    if bar is not None:
      post = {"loss": f"{rec['train_loss']:.3f}", "up_MB": f"{rec['cum_uplink_bytes'] / 1e6:.2f}"}
      if last_eval is not None:
        post["acc"] = f"{100 * last_eval['accuracy']:.1f}%"
      bar.set_postfix(post)
      bar.update(1)
  if bar is not None:
    bar.close()
  ckpt.close()
  records = read_metrics(os.path.join(config.workdir, "metrics.jsonl"))
  final = [r for r in records if "test_accuracy" in r]
  summary = {
      "rounds": config.fed.rounds, "method": config.method.name,
      "final_test_accuracy": final[-1]["test_accuracy"] if final else None,
      "best_test_accuracy": max(r["test_accuracy"] for r in final) if final else None,
      **{f"cum_{k}_bytes": records[-1].get(f"cum_{k}_bytes", 0.0) if records else 0.0
         for k in BIT_COMPONENTS},
      "lora_rank": config.lora.rank,
      "trainable_params": lora.tree_size(exp.parts.trainable),
      "frozen_params": lora.tree_size(exp.parts.frozen),
      "num_clients": exp.clients.num_clients, "labels": exp.label_names,
      "resumed_from_round": start, "setup_seconds": setup_s,
      "wall_seconds_this_invocation": time.time() - t0,
      "train_seconds_all_rounds": sum(r.get("round_seconds", 0.0) for r in records),
  }
  with open(os.path.join(config.workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  plot_run(records, os.path.join(config.workdir, "plot.png"), title=f"{config.method.name}")
  exp.method.plot(records, config.workdir)
  return summary


def parse_config(argv: list[str]):
  """`--config path.py[:arg]` plus `--config.a.b=value` overrides, with clear errors."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", "configs/bbc_minilm.py", flag_values=fv,
                                           lock_config=True, sys_argv=list(argv))
  # sys_argv: the overrides are found in `argv`, not in sys.argv (in-process callers, tests)
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
  acc = summary["final_test_accuracy"]
  print(json.dumps({k: summary[k] for k in ("method", "rounds", "final_test_accuracy",
                                            "cum_uplink_bytes", "wall_seconds_this_invocation")}))
  print(f"final test accuracy {100 * acc:.2f}% | uplink {summary['cum_uplink_bytes'] / 1e6:.2f} MB"
        f" | outputs in {config.workdir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

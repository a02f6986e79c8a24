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
from fedlora.fed.sharding import client_mesh, frozen_shardings, init_distributed, place  # noqa: E402
from fedlora.fed import memory  # noqa: E402
from fedlora.fed.local import make_optimizer  # noqa: E402
from fedlora.models import load_pretrained  # noqa: E402
from fedlora.models.layers import DTYPES, set_precision  # noqa: E402
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
  chunk_choice: Any = None      # memory.ChunkChoice when fed.client_chunk=0 chose C, else None


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
  init_distributed(config.mesh)
  model_path, fd = load_data(config)
  key = jax.random.PRNGKey(config.seed)
  k_head, k_lora = jax.random.split(jax.random.fold_in(key, 10**6))
  model = load_pretrained(model_path, num_labels=len(fd.label_names), pooling=config.model.pooling,
                          key=k_head, num_layers=config.model.num_layers or None)
  base = lora.split_model(model)
  adapters = lora.init_adapters(k_lora, base.frozen, config.lora)
  lora.attach(model, adapters, scale=lora.lora_scale(config.lora.alpha, config.lora.rank),
              dropout=config.lora.dropout)
  set_precision(model, config.model.compute_dtype, config.model.remat)
  parts = lora.split_model(model)
  pdt = DTYPES[config.model.param_dtype]  # frozen base cast once; trainable stays float32
  parts = parts._replace(frozen=jax.tree_util.tree_map(
      lambda x: x.astype(pdt) if jnp.issubdtype(x.dtype, jnp.floating) else x, parts.frozen))
  method = build_method(config, parts.trainable)
  mesh = client_mesh(config.mesh.num_devices or None, config.mesh.model)
  if mesh is not None:  # the frozen base replicated or FSDP-sharded over 'model'; the rest replicated
    parts = parts._replace(frozen=place(parts.frozen, mesh, frozen_shardings(
        parts.frozen, mesh, config.mesh.shard_frozen)), trainable=place(parts.trainable, mesh))
  labels = lora.trainable_labels(parts.trainable, method.freeze)
  loss_fn = make_loss(parts, method.penalty, method.penalty_weight)
  clients = place(fd.clients, mesh) if mesh is not None else jax.tree_util.tree_map(jnp.asarray,
                                                                                     fd.clients)

  def rounds(chunk):
    return make_round(loss_fn, make_optimizer(config.optim, labels), method.compressor,
                      local_steps=config.fed.local_steps, batch_size=config.fed.batch_size,
                      server_lr=config.fed.server_lr, mesh=mesh, client_chunk=chunk, donate=True)
  round_fns = rounds(config.fed.client_chunk)
  choice = None
  if config.fed.client_chunk == 0:
    choice = auto_chunk(config, round_fns, parts, clients, mesh)
    round_fns = rounds(choice.chunk)
    if jax.process_index() == 0:
      print(f"[fedlora] {choice.reason}", flush=True)
  return Experiment(config, parts, clients, fd.test, fd.label_names, fd.histogram, round_fns,
                    make_eval(parts, config.eval.batch_size), method, choice)


def auto_chunk(config, round_fns: RoundFns, parts, clients: ClientData, mesh) -> memory.ChunkChoice:
  """`fed.client_chunk=0`: C from the memory budget and XLA's estimate of one client's step."""
  k, e, b = config.fed.clients_per_round, config.fed.local_steps, config.fed.batch_size
  seq = clients.input_ids.shape[-1]
  i32 = jnp.int32
  batches = {"input_ids": jax.ShapeDtypeStruct((e, b, seq), i32),
             "attention_mask": jax.ShapeDtypeStruct((e, b, seq), i32),
             "labels": jax.ShapeDtypeStruct((e, b), i32)}
  states = jax.eval_shape(round_fns.init_client_states, parts.trainable, clients.num_clients)
  row = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), states)
  est = memory.one_client_bytes(round_fns.one_client, parts.trainable, parts.frozen, batches, row)
  out_bytes = k * (lora.tree_bytes(parts.trainable) + 4096)
  fixed = (lora.tree_bytes(parts.frozen) + lora.tree_bytes(clients) + lora.tree_bytes(states)
           + out_bytes)
  budget, source = memory.memory_budget(config.fed.memory_budget_gb)
  devices = mesh.shape["clients"] if mesh is not None else 1
  return memory.choose_chunk(k, est["total"], fixed, budget * devices, source, devices)


def init_state(exp: Experiment) -> dict:
  """The whole mutable run state as a PyTree of arrays (what a checkpoint holds)."""
  n = exp.clients.num_clients
  states = exp.round_fns.init_client_states(exp.parts.trainable, n)
  states = jax.tree_util.tree_map(jnp.array, states)  # own buffers: the client phase donates them
  return {"round": np.asarray(0, np.int32), "trainable": exp.parts.trainable,
          "client_states": states, "method": exp.method.init_state(exp),
          "cum_uplink_bits": np.asarray(0.0, np.float64),
          "cum_downlink_bits": np.asarray(0.0, np.float64)}


def run_round(exp: Experiment, state: dict, t: int) -> tuple[dict, dict]:
  """Round t (1-based): sample clients, plan the uplink, train + compress (vmapped), aggregate."""
  cfg = exp.config
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), t)
  k_sel, k_plan, k_clients = jax.random.split(key, 3)
  ids = sample_clients(k_sel, exp.clients.num_clients, cfg.fed.clients_per_round)
  plan, mstate = exp.method.plan(exp, state["method"], ids, k_plan)
  out, client_states = exp.round_fns.client_phase(state["trainable"], exp.parts.frozen, exp.clients,
                                                  ids, k_clients, plan["ratio"], state["client_states"])
  delivered, mstate, wireless = exp.method.deliver(exp, mstate, plan, out.bits, out.profile)
  weights = exp.clients.num_examples[ids].astype(jnp.float32) * delivered
  trainable = exp.round_fns.server_phase(state["trainable"], out.delta, weights)
  down_bits = 32.0 * lora.tree_size(state["trainable"]) * ids.shape[0]
  up_bits = float(jnp.sum(out.bits * delivered))
  new_state = dict(state, round=np.asarray(t, np.int32), trainable=trainable,
                   client_states=client_states, method=mstate,
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
  lead = jax.process_index() == 0  # multi-host: process 0 alone writes metrics, plots, summary
  os.makedirs(config.workdir, exist_ok=True)
  if lead:
    with open(os.path.join(config.workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  ckpt = Checkpointer(config.workdir, config.checkpoint.keep)
  state = init_state(exp)
  start = ckpt.latest_step() or 0
  if start:
    state = ckpt.restore(start, state)
  writer = MetricsWriter(config.workdir, start) if lead else None
  setup_s = time.time() - t0
  bar = None
  if config.progress and start < config.fed.rounds and lead:
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
    if writer is not None:
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
  if not lead:
    return {"process_index": jax.process_index(), "rounds": config.fed.rounds}
  records = read_metrics(os.path.join(config.workdir, "metrics.jsonl"))
  final = [r for r in records if "test_accuracy" in r]
  summary = {
      "rounds": config.fed.rounds, "method": config.method.name,
      "final_test_accuracy": final[-1]["test_accuracy"] if final else None,
      "best_test_accuracy": max(r["test_accuracy"] for r in final) if final else None,
      "cum_uplink_bytes": records[-1]["cum_uplink_bytes"] if records else 0.0,
      "cum_downlink_bytes": records[-1]["cum_downlink_bytes"] if records else 0.0,
      "trainable_params": lora.tree_size(exp.parts.trainable),
      "frozen_params": lora.tree_size(exp.parts.frozen),
      "num_clients": exp.clients.num_clients, "labels": exp.label_names,
      "resumed_from_round": start, "setup_seconds": setup_s,
      "wall_seconds_this_invocation": time.time() - t0,
      "train_seconds_all_rounds": sum(r.get("round_seconds", 0.0) for r in records),
      "memory": memory_line(exp, state),
  }
  with open(os.path.join(config.workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  plot_run(records, os.path.join(config.workdir, "plot.png"), title=f"{config.method.name}")
  exp.method.plot(records, config.workdir)
  return summary


def memory_line(exp: Experiment, state: dict) -> dict:
  """Bytes of the frozen base, of one client's trainable + optimizer state (+ its state row), the
  chunk the client phase ran with, and the peak memory of this process so far."""
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
  return out


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
  acc = summary["final_test_accuracy"]
  print(json.dumps({k: summary[k] for k in ("method", "rounds", "final_test_accuracy",
                                            "cum_uplink_bytes", "wall_seconds_this_invocation")}))
  print(f"final test accuracy {100 * acc:.2f}% | uplink {summary['cum_uplink_bytes'] / 1e6:.2f} MB"
        f" | outputs in {config.workdir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Federated LoRA fine-tuning: wires model, data, LoRA, rounds, evaluation, checkpoints and metrics.

  python -m fedlora.train --config configs/bbc_minilm.py [--config.fed.rounds=30 ...]   (--help)

Outputs in `config.workdir` (default runs/<name>-<method>-s<seed>): config.json, fingerprint.json,
metrics.jsonl (one line per round), summary.json, plot.png, checkpoints/. Rerunning the same command
with the same workdir resumes from the last checkpoint and ends with the same result as an
uninterrupted run; a rerun with a different config is refused (fedlora/run/workdir.py). Every expected
failure is one `error:` paragraph with exit code 2 (130 for Ctrl-C); tracebacks with --config.debug=True.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings
from typing import Any, NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fedlora import lora  # noqa: E402
from fedlora.data.clients import ClientData  # noqa: E402
from fedlora.data.tokenize import load_tokenizer  # noqa: E402
from fedlora.fed.drift import build_drift  # noqa: E402
from fedlora.fed.round import RoundFns, check_reparam, make_round  # noqa: E402
from fedlora.fed.schedule import round_schedule  # noqa: E402
from fedlora.fed.sampling import sample_clients  # noqa: E402
from fedlora.fed.sharding import (assemble_hosted, client_mesh, frozen_shardings, hosted_clients,  # noqa: E402
                                  init_distributed, place)
from fedlora.fed import memory  # noqa: E402
from fedlora.fed.local import make_optimizer  # noqa: E402
from fedlora.models import load_pretrained, read_config  # noqa: E402
from fedlora.models.families import family_for  # noqa: E402
from fedlora.models.layers import DTYPES, set_precision  # noqa: E402
from fedlora.tasks import get_task, task_name  # noqa: E402
from fedlora.server import build_server  # noqa: E402
from fedlora.tasks.skew_metrics import skew_metrics  # noqa: E402
from fedlora.run.errors import Interrupted, RunError, RunWarning, explain, warn  # noqa: E402
from fedlora.run.workdir import open_workdir, resolve_workdir, write_run_files  # noqa: E402
from fedlora.utils.checkpoint import Checkpointer  # noqa: E402
from fedlora.utils.files import write_json_atomic  # noqa: E402
from fedlora.utils.metrics import MetricsWriter, read_metrics  # noqa: E402
from fedlora.utils.plot import plot_run  # noqa: E402
from fedlora.utils.validate import ConfigError, resolve_model_path, validate  # noqa: E402
from fedlora.methods import Method, build_method  # noqa: E402


class Experiment(NamedTuple):
  """Everything a run needs, built once from the config (static parts, no mutable state)."""
  config: Any
  parts: lora.ModelParts        # graphdef, initial trainable, frozen base (shared by all clients)
  clients: ClientData           # arrays [N, n_max, ...] (the task's batch keys) + num_examples [N], on
                                # device; multi-process: arrays [N_pad, n_max, ...] sharded over
                                # 'clients' (each process built only its own rows; padded rows are
                                # never sampled: num_examples stays [N])
  test: dict                    # numpy test split (what the task's evaluation reads)
  label_names: list             # classes (classification) / categories (causal_lm)
  histogram: np.ndarray         # [N, classes or categories]
  round_fns: RoundFns
  evaluate: Any
  method: Method
  data_dropped: dict = {}       # rows left out of the dataset by reason (fedlora.data.sources)
  task: Any = None              # fedlora.tasks.Task
  info: dict = {}               # the task's data facts (TaskData.info)
  tokenizer: Any = None
  chunk_choice: Any = None      # memory.ChunkChoice when fed.client_chunk=0 chose C, else None


def load_data(config, task, hosted=None):
  """Model folder, tokenizer, model family and the task's federated data (fedlora.tasks.TaskData);
  `hosted` (multi-process): the client ids whose examples this process tokenises (Task docstring)."""
  model_path = resolve_model_path(config.model)
  hf_config = read_config(model_path)
  family = family_for(hf_config.get("model_type"), os.path.join(model_path, "config.json"))
  if task.head not in family.heads:
    kind = "a causal LM (decoder-only)" if "causal_lm" in family.heads else "an encoder classifier"
    raise ValueError(f"task {task.name!r} needs a model with a {task.head!r} head (an encoder for "
                     "'classifier', a decoder for 'causal_lm'), but model_type="
                     f"{hf_config.get('model_type')!r} in {os.path.join(model_path, 'config.json')!r} is "
                     f"{kind} (family {family.name!r}, heads {list(family.heads)}); point model.path at a "
                     "matching folder or set task.name (classification: BERT/RoBERTa/MiniLM folders; "
                     "causal_lm: Llama/Mistral/Qwen2/GPT-2, see configs/lm_instruct.py)")
  tokenizer = load_tokenizer(model_path)
  extra = {} if hosted is None else {"hosted": hosted if hosted.size else np.zeros((1,), np.int64)}
  return model_path, tokenizer, family, task.prepare_data(config, tokenizer, hf_config, **extra)


def build(config) -> Experiment:
  """Validates the config, loads model and data, and builds the jitted round functions."""
  validate(config)
  init_distributed(config.mesh)  # no-op for one process or when run() already did it
  task = get_task(task_name(config))
  mesh = client_mesh(config.mesh.num_devices or None, config.mesh.model)
  # several processes on the 'clients' axis: each builds only the clients its devices hold
  hosted = hosted_clients(config.data.num_clients, mesh)
  model_path, tokenizer, family, data = load_data(config, task, hosted)
  if hosted is not None:  # -> client arrays [N_pad, n_max, ...] sharded over 'clients'
    data = assemble_hosted(data, hosted, config.data.num_clients, mesh)
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
  set_precision(model, config.model.compute_dtype, config.model.remat, config.model.grad_barrier)
  parts = lora.split_model(model, family.head_paths)
  pdt = DTYPES[config.model.param_dtype]  # frozen base cast once; trainable stays float32
  parts = parts._replace(frozen=jax.tree_util.tree_map(
      lambda x: x.astype(pdt) if jnp.issubdtype(x.dtype, jnp.floating) else x, parts.frozen))
  method = build_method(config, parts.trainable)
  if mesh is not None:  # the frozen base replicated or FSDP-sharded over 'model'; the rest replicated
    parts = parts._replace(frozen=place(parts.frozen, mesh, frozen_shardings(
        parts.frozen, mesh, config.mesh.shard_frozen)), trainable=place(parts.trainable, mesh))
  labels = lora.trainable_labels(parts.trainable, method.freeze)
  loss_fn = task.make_loss(parts, config, method.penalty, method.penalty_weight)
  cc = config.client
  label_names = data.info.get("label_names")
  if hosted is not None:
    clients = data.clients  # already on the mesh
  elif mesh is not None:
    clients = place(data.clients, mesh)
  else:
    clients = jax.tree_util.tree_map(jnp.asarray, data.clients)

  def rounds(chunk):
    return make_round(
        loss_fn, make_optimizer(config.optim, labels), method.compressor,
        local_steps=config.fed.local_steps, batch_size=config.fed.batch_size,
        server=build_server(config.server, config.fed.rounds),
        drift=build_drift(cc, parts.trainable, labels, config.compress.bits_per_value,
                          num_clients=int(data.clients.num_examples.shape[0])),
        client_lr_scale=round_schedule(cc.lr_schedule, cc.lr_warmup_rounds, config.fed.rounds,
                                       cc.lr_final_fraction),
        num_classes=len(label_names) if label_names and cc.logit_adjust != "none" else 0, mesh=mesh,
        client_chunk=chunk, donate=True, reparam=method.reparam)
  round_fns = rounds(config.fed.client_chunk)
  if method.reparam is not None:
    check_reparam(round_fns, parts.trainable, f"{method.reparam_key}=True")
  choice = None
  if config.fed.client_chunk == 0:
    choice = auto_chunk(config, round_fns, parts, clients, mesh)
    round_fns = rounds(choice.chunk)
    if jax.process_index() == 0:
      print(f"[fedlora] {choice.reason}", flush=True)
  return Experiment(config, parts, clients, data.test, data.info.get("label_names"),
                    data.info.get("histogram"), round_fns, task.make_eval(parts, config, data, tokenizer),
                    method, data_dropped=data.info.get("data_dropped", {}), task=task, info=data.info,
                    tokenizer=tokenizer, chunk_choice=choice)


def abstract_client_states(round_fns: RoundFns, parts, clients: ClientData):
  """Shapes of every client's state row `[N, ...]` (nothing is allocated)."""
  n = int(clients.num_clients)  # static: it is a shape
  return jax.eval_shape(lambda tr: round_fns.init_client_states(tr, n), parts.trainable)


def client_step_bytes(round_fns: RoundFns, parts, clients: ClientData, states=None) -> dict:
  """XLA's estimate of the client step (`memory.one_client_bytes`: per client and shared), on the
  task's own batch keys and shapes (one client's arrays `[E, B, ...]`) and client state row;
  states: `abstract_client_states` when the caller already has it."""
  one = jax.eval_shape(lambda d: round_fns.sample(jax.random.PRNGKey(0), d, jnp.zeros((1,), jnp.int32))[0],
                       clients)  # one client's batches: every key the loss reads, [1, E, B, ...]
  batches = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), one)
  states = abstract_client_states(round_fns, parts, clients) if states is None else states
  row = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), states)
  ctx = jax.eval_shape(lambda tr: round_fns.context(round_fns.init_server(tr), 1), parts.trainable)
  return memory.one_client_bytes(round_fns.one_client, parts.trainable, parts.frozen, batches, row, ctx)


def auto_chunk(config, round_fns: RoundFns, parts, clients: ClientData, mesh) -> memory.ChunkChoice:
  """`fed.client_chunk=0`: C from the memory budget and XLA's estimate of the client step."""
  k = config.fed.clients_per_round
  states = abstract_client_states(round_fns, parts, clients)
  est = client_step_bytes(round_fns, parts, clients, states)
  out_bytes = k * (lora.tree_bytes(parts.trainable) + 4096)
  fixed = (lora.tree_bytes(parts.frozen) + lora.tree_bytes(clients) + lora.tree_bytes(states)
           + out_bytes + est["shared"])
  budget, source = memory.memory_budget(config.fed.memory_budget_gb)
  devices = mesh.shape["clients"] if mesh is not None else 1
  cap, why = 0, ""
  tokens = config.fed.batch_size * config.data.max_length  # one client's tokens per local step
  if config.fed.cpu_chunk_tokens and jax.default_backend() == "cpu":
    cap = max(1, config.fed.cpu_chunk_tokens // tokens)
    why = (f"fed.cpu_chunk_tokens={config.fed.cpu_chunk_tokens} ({tokens} tokens per client step; "
           "on CPU bigger chunks ran slower, benchmarks/bench_cpu_step.py)")
  return memory.choose_chunk(k, est["per_client"], fixed, budget * devices, source, devices, cap, why)


def init_state(exp: Experiment) -> dict:
  """The whole mutable run state as a PyTree of arrays (what a checkpoint holds)."""
  n = exp.clients.num_clients
  states = exp.round_fns.init_client_states(exp.parts.trainable, n)  # {'compressor', ['scaffold']}
  states = jax.tree_util.tree_map(jnp.array, states)  # own buffers: the client phase donates them
  return {"round": np.asarray(0, np.int32), "trainable": exp.parts.trainable,
          "client_states": states, "server": exp.round_fns.init_server(exp.parts.trainable),
          "method": exp.method.init_state(exp),
          "cum_bits": {k: np.asarray(0.0, np.float64) for k in BIT_COMPONENTS}}


# Bits of a round, by named component (each reported as `<name>_bytes_round` and `cum_<name>_bytes`
# in metrics.jsonl, `cum_<name>_bytes` in summary.json; new components: add a name and its term):
#   uplink           payload of the uploads that arrived (what the server aggregates)
#   uplink_attempted payload of every upload sent, including those dropped at the deadline
#   profile          importance profiles the clients report for TSFA's next plan (32·r bits each)
#   downlink         broadcast of the global trainable tree to each sampled client at
#                    compress.downlink_bits_per_value (+ SCAFFOLD's server variate c at
#                    compress.bits_per_value; + one-off broadcasts: FFA's frozen A, round 1)
# SCAFFOLD's Δc_i upload is part of each client's payload (`uplink`, `uplink_attempted`).
BIT_COMPONENTS = ("uplink", "uplink_attempted", "profile", "downlink")


def round_bits(exp: Experiment, t: int, bits, delivered, sent=None) -> dict:
  """`{component: bits}` of round t (floats); `bits [K]` payloads, `delivered [K]` in {0, 1},
  `sent [K]` bool: the client uploaded at all (False for a non-finite client; default all)."""
  k = int(bits.shape[0])
  m, drift = exp.method, exp.round_fns.drift
  sent = jnp.ones(bits.shape, bool) if sent is None else jnp.asarray(sent, bool)
  return {"uplink": float(jnp.sum(bits * delivered)),
          "uplink_attempted": float(jnp.sum(jnp.where(sent, bits, 0.0))),
          "profile": m.profile_bits * k,
          "downlink": (m.broadcast_bits + drift.downlink_values * drift.bits_per_value) * k
                      + (m.broadcast_once_bits if t == 1 else 0.0)}


def run_round(exp: Experiment, state: dict, t: int) -> tuple[dict, dict]:
  """Round t (1-based): sample clients, plan the uplink, train + compress (vmapped), aggregate."""
  cfg = exp.config
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), t)
  k_sel, k_plan, k_clients = jax.random.split(key, 3)
  ids = sample_clients(k_sel, exp.clients.num_clients, cfg.fed.clients_per_round)
  plan, mstate = exp.method.plan(exp, state["method"], ids, k_plan)
  ctx = exp.round_fns.context(state["server"], t)
  out, client_states = exp.round_fns.client_phase(state["trainable"], exp.parts.frozen, exp.clients,
                                                  ids, k_clients, plan["ratio"],
                                                  state["client_states"], ctx)
  finite = np.asarray(out.metrics["finite"])  # [K] per-client flag from the jitted client phase
  nonfinite = np.asarray(ids)[~finite].tolist()
  if nonfinite and cfg.fed.nonfinite == "stop":
    raise RunError(
        f"round {t}: client(s) {nonfinite} produced a non-finite (NaN/Inf) local loss or update "
        f"(losses {np.asarray(out.metrics['loss'])[~finite].tolist()}); the run stopped before "
        "aggregating it, so the last checkpoint is intact. Lower optim.lr (now "
        f"{cfg.optim.lr}), keep optim.grad_clip > 0 (now {cfg.optim.grad_clip}), or set "
        "--config.fed.nonfinite=skip to leave such clients out of the round (weight 0, counted)")
  delivered, mstate, wireless = exp.method.deliver(exp, mstate, plan, out.bits, out.profile)
  delivered = delivered * jnp.asarray(finite, jnp.float32)  # a non-finite client sends nothing
  weights = exp.clients.num_examples[ids].astype(jnp.float32) * delivered
  trainable, server = exp.round_fns.server_phase(state["trainable"], state["server"], out.delta,
                                                 weights, t, out.control_delta)
  drift = exp.round_fns.drift
  bits = round_bits(exp, t, out.bits, delivered, finite)
  cum = {k: np.asarray(float(state["cum_bits"][k]) + bits[k]) for k in BIT_COMPONENTS}
  loss, acc = np.asarray(out.metrics["loss"]), np.asarray(out.metrics["acc"])
  new_state = dict(state, round=np.asarray(t, np.int32), trainable=trainable,
                   client_states=client_states, server=server, method=mstate, cum_bits=cum)
  record = {
      "round": t, "clients": ids, "client_loss": out.metrics["loss"],
      "train_loss": float(loss[finite].mean()) if finite.any() else float("nan"),
      "train_acc": float(acc[finite].mean()) if finite.any() else float("nan"),
      "nonfinite_clients": nonfinite, "aggregated": int(np.sum(np.asarray(delivered) > 0)),
      "ratio": plan["ratio"], "uplink_bits": out.bits, "delivered": delivered,
      "client_lr_scale": float(ctx["lr_scale"]),
      "scaffold_uplink_bytes_round": drift.scaffold_bits * float(delivered.sum()) / 8,
  }
  for k in BIT_COMPONENTS:
    record[f"{k}_bytes_round"] = bits[k] / 8
    record[f"cum_{k}_bytes"] = float(cum[k]) / 8
  record.update(wireless)
  return new_state, record


def run(config) -> dict:
  """Runs (or resumes) the experiment in config.workdir and returns the summary dict.

  Before the expensive setup: the default workdir is resolved, the config validated, the workdir
  created (unwritable -> OSError), locked, and checked against the run it holds (RunError)."""
  t0 = time.time()
  resolve_workdir(config)
  validate(config)
  init_distributed(config.mesh)  # before any other JAX call; then jax.process_index() is known
  lead = jax.process_index() == 0  # multi-host: process 0 alone locks, checks and writes the workdir
  with open_workdir(config, lead=lead) as fp:  # fingerprint of the config as given (stable across resumes)
    if config.tsfa.offline.enabled:  # TSFA offline stage: pilot (or its recorded choice) -> r, V, ρ_min
      from fedlora.tsfa.pilot import offline_stage
      config = offline_stage(config)
    exp = build(config)
    if lead:
      write_run_files(config, fp)
    return train(exp, fp, t0)


def train(exp: Experiment, fp: dict, t0: float) -> dict:
  """The round loop from the last readable checkpoint, then the summary (inside the workdir lock)."""
  config = exp.config
  lead = jax.process_index() == 0  # multi-host: process 0 alone writes metrics, plots, summary
  # every process saves/restores: orbax checkpointing is collective (the primary process, 0, writes
  # the metadata and replicated leaves; each process only the shards it owns)
  ckpt = Checkpointer(config.workdir, config.checkpoint.keep, fp)
  bar = None
  try:
    start, state = ckpt.restore_latest(init_state(exp))
    writer = MetricsWriter(config.workdir, start) if lead else None
    setup_s = time.time() - t0
    if config.progress and start < config.fed.rounds and lead:
      from tqdm import tqdm
      bar = tqdm(total=config.fed.rounds, initial=start, desc="rounds", unit="round")
    last_eval, empty, t = None, 0, start
    try:
      for t in range(start + 1, config.fed.rounds + 1):
        tr = time.time()
        state, rec = run_round(exp, state, t)
        jax.block_until_ready(state["trainable"])
        rec["round_seconds"] = time.time() - tr
        if t % config.eval.every == 0 or t == config.fed.rounds:
          te = time.time()
          last_eval = exp.evaluate(state["trainable"], exp.parts.frozen, exp.test)
          ev = dict(last_eval)
          conf = ev.pop("confusion", None)  # classification: [C, C] -> the skew metrics
          rec.update({f"test_{k}": v for k, v in ev.items()})
          if conf is not None and exp.histogram is not None:
            rec.update({f"test_{k}": v for k, v in skew_metrics(conf, exp.histogram).items()})
          rec["eval_seconds"] = time.time() - te
        if writer is not None:
          writer.write(rec)
        if t % config.checkpoint.every == 0 or t == config.fed.rounds:
          ckpt.save(t, state)
        if rec["aggregated"] == 0:
          empty += 1
          warn(f"round {t}: no upload was aggregated ({len(rec['clients'])} sampled, "
               f"{len(rec['nonfinite_clients'])} non-finite, the rest dropped by the uplink); the "
               "global model is unchanged")
        if bar is not None:
          post = {"loss": f"{rec['train_loss']:.3f}", "up_MB": f"{rec['cum_uplink_bytes'] / 1e6:.2f}"}
          if last_eval is not None and "accuracy" in last_eval:
            post["acc"] = f"{100 * last_eval['accuracy']:.1f}%"
          elif last_eval is not None:
            post[exp.task.headline] = f"{last_eval[exp.task.headline]:.3f}"
          if empty:
            post["empty_rounds"] = empty
          bar.set_postfix(post)
          bar.update(1)
    except KeyboardInterrupt:
      last = max(ckpt.steps() or [0])
      raise Interrupted(f"interrupted (Ctrl-C) in round {t}; the last complete checkpoint is round "
                        f"{last} in {ckpt.directory}; rerun the same command to resume") from None
  finally:
    if bar is not None:
      bar.close()
    ckpt.close()
  exp.task.after_training(exp, state["trainable"])
  if not lead:
    return {"process_index": jax.process_index(), "rounds": config.fed.rounds}
  return write_summary(exp, fp, start, setup_s, t0, memory_line(exp, state))


def write_summary(exp: Experiment, fp: dict, start: int, setup_s: float, t0: float,
                  memory_info: dict | None = None) -> dict:
  """summary.json, derived from metrics.jsonl (rounds <= fed.rounds) and written atomically. When
  metrics.jsonl lacks rounds (deleted or edited), a summary.json already there is kept as it is."""
  config = exp.config
  path = os.path.join(config.workdir, "summary.json")
  records = [r for r in read_metrics(os.path.join(config.workdir, "metrics.jsonl"))
             if r["round"] <= config.fed.rounds]
  missing = sorted(set(range(1, config.fed.rounds + 1)) - {r["round"] for r in records})
  if missing:
    shown = f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
    try:
      with open(path) as f:
        kept = json.load(f)
      warn(f"{config.workdir}/metrics.jsonl has no record of round(s) {shown}; {path} is kept as it "
           "was (it was derived when they were there)")
      return kept
    except (OSError, ValueError):
      warn(f"{config.workdir}/metrics.jsonl has no record of round(s) {shown}; summary.json lists "
           "them under metric_rounds_missing")
  final = [r for r in records if "test_accuracy" in r]
  head = f"test_{exp.task.headline}"
  evals = [r for r in records if head in r]
  summary = {
      "rounds": config.fed.rounds, "method": config.method.name, "fingerprint": fp["hash"],
      "task": exp.task.name, "headline": head, f"final_{head}": evals[-1][head] if evals else None,
      "final_test": {k: v for k, v in evals[-1].items() if k.startswith("test_")} if evals else {},
      "final_test_accuracy": final[-1]["test_accuracy"] if final else None,
      "best_test_accuracy": max(r["test_accuracy"] for r in final) if final else None,
      **{f"final_test_{k}": final[-1].get(f"test_{k}") if final else None
         for k in ("balanced_accuracy", "macro_f1", "client_accuracy_mean",
                   "client_accuracy_worst10")},
      "best_test_balanced_accuracy": max((r.get("test_balanced_accuracy", 0.0) for r in final),
                                         default=None),
      "server": config.server.name,
      **{f"cum_{k}_bytes": records[-1].get(f"cum_{k}_bytes", 0.0) if records else 0.0
         for k in BIT_COMPONENTS},
      "lora_rank": config.lora.rank,
      "empty_rounds": sum(r.get("aggregated", 1) == 0 for r in records),
      "skipped_clients": sum(len(r.get("nonfinite_clients", [])) for r in records),
      "data_dropped_rows": dict(exp.data_dropped),
      "metric_rounds_missing": missing,
      "trainable_params": lora.tree_size(exp.parts.trainable),
      "frozen_params": lora.tree_size(exp.parts.frozen),
      "num_clients": exp.clients.num_clients, "labels": exp.label_names,
      **({"data_stats": exp.info["stats"]} if "stats" in exp.info else {}),
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


def memory_line(exp: Experiment, state: dict) -> dict:
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


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def usage() -> str:
  """`--help`: usage, the config files and where their keys come from."""
  import ast
  import glob
  lines = ["usage: python -m fedlora.train [--config FILE.py[:VARIANT]] [--config.KEY=VALUE ...] "
           "[--print_config]", "",
           "Every key lives in a config file: its get_config(variant) sets each key with a one-line "
           "comment. Config files (configs/):"]
  for f in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py"))):
    with open(f) as fh:
      doc = (ast.get_docstring(ast.parse(fh.read())) or "").split("\n")[0]
    lines.append(f"  configs/{os.path.basename(f):22s} {doc}")
  lines += ["", "Default: --config configs/bbc_minilm.py; variants: configs/bbc_minilm.py:tiny (and "
            "configs/wireless_compare.py:tiny, configs/lm_instruct.py:tiny).",
            "Override any key: --config.a.b=value, e.g. --config.fed.rounds=30 --config.method.name=soft",
            "--print_config prints every key and its value for the chosen config and overrides, then exits.",
            "Outputs: config.workdir (default runs/<name>-<method>-s<seed>). Rerunning the same command "
            "resumes; --config.resume=auto|never|must (resume if same config | fresh only | resume only).",
            "Errors are one paragraph (exit 2; 130 for Ctrl-C); --config.debug=True shows tracebacks."]
  return "\n".join(lines)


def _config_arg(argv: list[str]) -> str | None:
  for i, a in enumerate(argv[1:], 1):
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
    if a.startswith("--config="):
      return a.split("=", 1)[1]
  return None


def _load_config_file(file: str, variant: str | None):
  """Runs the config file's get_config(variant) once, so its own error is the message (absl would
  wrap it with a traceback)."""
  import importlib.util
  try:
    spec = importlib.util.spec_from_file_location("_fedlora_config", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*([variant] if variant is not None else []))
  except Exception as e:  # noqa: BLE001 - any failure of the user's config file
    raise ConfigError(f"--config {file}{':' + variant if variant is not None else ''}: "
                      f"{type(e).__name__}: {e}") from None


def parse_config(argv: list[str]):
  """`--config path.py[:arg]` plus `--config.a.b=value` overrides, with clear errors.

  Returns `(config, print_config)`."""
  from absl import flags
  from ml_collections import config_flags
  cfg_arg = _config_arg(argv)
  if cfg_arg is not None:
    file = cfg_arg.split(":", 1)[0]
    if not os.path.isfile(file):
      avail = sorted(f"configs/{n}" for n in os.listdir(CONFIG_DIR) if n.endswith(".py"))
      raise ConfigError(f"--config {file!r}: no such config file (run from the repository root, or "
                        f"give a path); available: {avail}; see --help")
    _load_config_file(file, cfg_arg.split(":", 1)[1] if ":" in cfg_arg else None)
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", "configs/bbc_minilm.py", flag_values=fv,
                                           lock_config=True)
  print_config = "--print_config" in argv
  argv = [a for a in argv if a != "--print_config"]
  saved, sys.argv = sys.argv, argv  # ml_collections finds the overrides' config file in sys.argv
  try:
    fv(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    msg = str(e).replace("\\n", " ").replace("\n", " ")
    raise ConfigError(f"bad command line {bad}: {msg}. Keys and types are those of the config "
                      "file (see configs/*.py for every key and its meaning, --print_config to "
                      "list them, --help for usage)") from None
  finally:
    sys.argv = saved
  return holder.value, print_config


_HELP = ("-h", "--help", "-help", "--helpfull", "--helpshort")


def main(argv=None) -> int:
  """The CLI and its error boundary: an expected failure is one `error:` paragraph, exit code 2
  (130 for Ctrl-C); only `--config.debug=True` prints the traceback (before the same message)."""
  argv = list(sys.argv if argv is None else argv)
  if any(a in _HELP for a in argv[1:]):
    print(usage())
    return 0
  debug = any(a.lower() in ("--config.debug=true", "--config.debug=1") for a in argv[1:])
  old_show = warnings.showwarning

  def show(message, category, *args, **kwargs):
    if issubclass(category, RunWarning):
      print(f"warning: {message}", file=sys.stderr, flush=True)
    else:
      old_show(message, category, *args, **kwargs)
  warnings.showwarning = show
  try:
    config, print_config = parse_config(argv)
    debug = bool(config.debug)
    if print_config:
      resolve_workdir(config)
      print(config)
      return 0
    summary = run(config)
  except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - the CLI's one error boundary
    code, msg = explain(e)
    if debug:
      traceback.print_exc()
    print(f"error: {msg}", file=sys.stderr)
    return code
  finally:
    warnings.showwarning = old_show
  if "process_index" in summary:  # multi-process: a process other than 0 wrote and reports nothing
    return 0
  head = summary.get("headline", "test_accuracy")
  print(json.dumps({k: summary.get(k) for k in ("method", "rounds", f"final_{head}",
                                                "cum_uplink_bytes", "wall_seconds_this_invocation")}))
  value = summary.get(f"final_{head}")
  shown = "n/a" if value is None else (f"{100 * value:.2f}%" if head == "test_accuracy" else f"{value:.4f}")
  print(f"final {head.replace('_', ' ')} {shown} | uplink {summary['cum_uplink_bytes'] / 1e6:.2f} MB"
        f" | outputs in {config.workdir}")
  return 0


def quiet_library_logs() -> None:
  """Library error logs and background-thread tracebacks (orbax's writer threads log each failure with
  its traceback, also while the interpreter shuts down) become silent or one `warning:` line in the
  CLI: the error boundary reports the failure once. `--config.debug=True` keeps them."""
  import logging
  import threading
  for name in ("absl", "asyncio"):
    logging.getLogger(name).setLevel(logging.CRITICAL)

  def one_line(exc_type, exc, *_):  # e.g. tensorstore callbacks into a closed event loop after a failure
    if "Event loop is closed" not in str(exc):
      print(f"warning: background {exc_type.__name__}: {exc}", file=sys.stderr)
  sys.excepthook = one_line
  threading.excepthook = lambda a: one_line(a.exc_type, a.exc_value)
  sys.unraisablehook = lambda u: one_line(u.exc_type, u.exc_value)


if __name__ == "__main__":
  if not any(a.lower() in ("--config.debug=true", "--config.debug=1") for a in sys.argv[1:]):
    quiet_library_logs()
  sys.exit(main())

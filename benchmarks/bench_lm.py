"""Causal-LM federated round: training tokens/s and memory per client, for the tiny checkpoint
(tests/fixtures/tiny_llama3) and a ~0.5B-parameter random-weight Llama config (Qwen2.5-0.5B shapes:
vocab 151,936, hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4,864, tied embeddings), float32.

One client phase of the `ideal` method (LoRA r=8 on q_proj/v_proj, AdamW, E local steps of B rows of L
tokens; clients vmapped over one shared copy of the frozen weights) on synthetic token rows whose
second half is the response. For K = 1 and K = 2 clients: compile time, steady time (median of
repeats, block_until_ready), tokens/s = K·E·B·L / time, and XLA's compiled memory analysis
(temporary buffers); the per-client memory is the temp-buffer increase from K = 1 to K = 2 (the frozen
weights are shared, so they are not per client). Process peak RSS is reported too.

Keys (the ~0.5B model's run; the tiny checkpoint always runs seq_len=32, local_steps=4, batch_size=8,
repeats=5 for K = 1, 2, 4):
  seq_len=64  local_steps=1  batch_size=1  repeats=2   integers >= 1
  big=1       0: the tiny checkpoint only
  smoke=1     the tiny checkpoint only, K = 1, 2, at 8 tokens, 1 step of 1 row, 1 repeat
The committed results (benchmarks/results/lm.json):
  python benchmarks/bench_lm.py replace=1
"""
from __future__ import annotations

import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.common import fail, no_unknown, parse_overrides, pop_one, smoke, timed, write_result  # noqa: E402
from fedlora import lora  # noqa: E402
from fedlora.compress import get_compressor  # noqa: E402
from fedlora.config import defaults, typed  # noqa: E402
from fedlora.data.clients import ClientData  # noqa: E402
from fedlora.fed.round import make_round  # noqa: E402
from fedlora.optim import make_optimizer  # noqa: E402
from fedlora.models import load_pretrained  # noqa: E402
from fedlora.models.llama import LlamaConfig, LlamaForCausalLM  # noqa: E402
from fedlora.tasks.causal_lm import make_loss  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIG = {"model_type": "llama", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
       "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
       "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "rope_theta": 1e6}


def random_llama(cfg: dict, seed: int = 0) -> LlamaForCausalLM:
  """Built abstractly, then every parameter drawn N(0, 0.02) (norm scales 1) leaf by leaf on device."""
  lcfg = LlamaConfig.from_dict(cfg)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: LlamaForCausalLM(lcfg, rngs=nnx.Rngs(0))))
  pure = nnx.to_pure_dict(state)
  key = jax.random.PRNGKey(seed)
  counter = [0]

  def fill(path, leaf):
    counter[0] += 1
    if path[-1].key == "scale":
      return jnp.ones(leaf.shape, jnp.float32)
    return 0.02 * jax.random.normal(jax.random.fold_in(key, counter[0]), leaf.shape, jnp.float32)
  pure = jax.tree_util.tree_map_with_path(fill, pure)
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def synthetic_clients(num_clients: int, rows: int, seq_len: int, vocab: int) -> ClientData:
  ids = np.random.default_rng(0).integers(3, vocab, (num_clients, rows, seq_len)).astype(np.int32)
  ones = np.ones_like(ids)
  lm = np.zeros_like(ids)
  lm[..., seq_len // 2:] = 1
  pos = np.broadcast_to(np.arange(seq_len, dtype=np.int32), ids.shape).copy()
  arrays = {"input_ids": ids, "attention_mask": ones, "loss_mask": lm, "position_ids": pos}
  return ClientData(arrays={k: jnp.asarray(v) for k, v in arrays.items()},
                    num_examples=jnp.full((num_clients,), rows, jnp.int32))


def bench_model(name: str, model, *, seq_len: int, local_steps: int, batch_size: int, repeats: int,
                clients=(1, 2)) -> dict:
  base = lora.split_model(model, ())
  config = typed(defaults())
  cfg = config.lora.replace(targets=("q_proj", "v_proj"), rank=8, alpha=16.0, dropout=0.0, init="kaiming")
  lora.attach(model, lora.init_adapters(jax.random.PRNGKey(1), base.frozen, cfg), scale=2.0)
  parts = lora.split_model(model, ())
  del base
  comp = get_compressor("none", {"bits_per_value": 32})
  fns = make_round(make_loss(parts), make_optimizer(config.optim.replace(name="adamw", lr=1e-4,
                                                                          grad_clip=1.0)),
                   comp, local_steps=local_steps, batch_size=batch_size)
  vocab = int(jax.tree_util.tree_leaves(parts.frozen["model"]["embed_tokens"])[0].shape[0])
  frozen_n, train_n = lora.tree_size(parts.frozen), lora.tree_size(parts.trainable)
  out = {"model": name, "frozen_params": frozen_n, "trainable_params": train_n, "seq_len": seq_len,
         "local_steps": local_steps, "batch_size": batch_size, "dtype": "float32", "runs": []}
  for k in clients:
    data = synthetic_clients(k, max(batch_size, 2), seq_len, vocab)
    ids = jnp.arange(k)
    states = fns.init_client_states(parts.trainable, k)  # one state row per client (none to carry here)
    ctx = fns.context(fns.init_server(parts.trainable), 1)  # the round's client inputs (lr scale, drift)
    args = (parts.trainable, parts.frozen, data, ids, jax.random.PRNGKey(0), jnp.ones((k,)), states, ctx)
    t0 = time.perf_counter()
    compiled = fns.client_phase.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp = int(getattr(mem, "temp_size_in_bytes", 0)) if mem is not None else None
    first, steady, times = timed(compiled, *args, repeats=repeats)
    tokens = k * local_steps * batch_size * seq_len
    run = {"clients": k, "compile_s": compile_s, "first_call_s": first, "steady_s": steady, "times_s": times,
           "tokens_per_s": tokens / steady, "xla_temp_bytes": temp,
           "peak_rss_bytes_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    out["runs"].append(run)
    print(f"{name:>10} K={k}: compile {compile_s:6.1f} s | first {first:6.2f} s | steady {steady:7.2f} s | "
          f"{run['tokens_per_s']:9.1f} tokens/s | XLA temp {temp / 2**20 if temp else float('nan'):8.1f} MiB | "
          f"peak RSS {run['peak_rss_bytes_so_far'] / 2**30:.2f} GiB", flush=True)
  if len(out["runs"]) >= 2 and out["runs"][0]["xla_temp_bytes"] is not None:
    a, b = out["runs"][0], out["runs"][1]
    out["per_client_temp_bytes"] = (b["xla_temp_bytes"] - a["xla_temp_bytes"]) / (b["clients"] - a["clients"])
    out["frozen_bytes_shared"] = 4 * frozen_n
    print(f"{name:>10}: memory per extra client {out['per_client_temp_bytes'] / 2**20:.1f} MiB "
          f"(shared frozen weights {4 * frozen_n / 2**30:.2f} GiB)", flush=True)
  return out


def main(argv):
  o = parse_overrides(argv)
  kw = {k: pop_one(o, k, d, int) for k, d in (("seq_len", 64), ("local_steps", 1), ("batch_size", 1),
                                               ("repeats", 2))}
  big = pop_one(o, "big", 1, bool) and not smoke()
  no_unknown(o, list(kw) + ["big"])
  bad = {k: v for k, v in kw.items() if v < 1}
  if bad:
    fail(f"{bad}: each must be an integer >= 1")
  tiny = dict(seq_len=32, local_steps=4, batch_size=8, repeats=5, clients=(1, 2, 4))
  if smoke():
    tiny = dict(seq_len=8, local_steps=1, batch_size=1, repeats=1, clients=(1, 2))
  results = [bench_model("tiny", load_pretrained(os.path.join(ROOT, "tests", "fixtures", "tiny_llama3")),
                         **tiny)]
  if big:
    model = random_llama(BIG)
    print(f"random ~0.5B Llama: {sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nnx.state(model))) / 1e6:.1f}M parameters", flush=True)
    results.append(bench_model("llama-0.5B", model, **kw))
  path = write_result("lm", {"machine_note": "shared 2-core CPU, no accelerator", "results": results,
                             "args": dict(kw, big=big, smoke=smoke())})
  print("wrote", path)


if __name__ == "__main__":
  main(sys.argv[1:])

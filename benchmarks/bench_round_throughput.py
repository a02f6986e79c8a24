"""Client-steps per second of the vmapped client phase vs the Python loop over clients.

Both run the same per-client function (`RoundFns.one_client`) on the same batches: the loop calls its
jitted single-client version K times per round; the vmapped path is one jitted call for all K clients.
Compile time is reported apart; steady state is the median over repeats after a warm-up, the two
paths called alternately (vmapped, loop, vmapped, ...) so that both see the same machine: on a
shared or drifting CPU, timing one path after the other skews their ratio.

Measures two regimes of the default config in one run: 'default' (B=8 examples of 128 tokens per
local step: each client's step is already a large, compute-bound matmul) and 'small_clients'
(B=2 of 32 tokens: per-client work is small, as with many light clients, where dispatching clients
one by one is overhead-bound).

Keys:
  repeats=5     timed rounds per path (an integer >= 1)
  regimes=default,small_clients   which regimes
  key=value     any config override (fed.clients_per_round=10 data.max_length=128 ...), both regimes
  smoke=1       the SMOKE config (benchmarks/common.py) in both regimes
The committed results (benchmarks/results/round_throughput.json):
  python benchmarks/bench_round_throughput.py replace=1
"""
from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (check_choices, checked_config, fail, interleaved, parse_overrides,  # noqa: E402
                               pop_list, pop_one, script_setup, smoke, write_result)

script_setup()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import bbc_minilm  # noqa: E402
from fedlora.train import build  # noqa: E402


# FedAvg clients (as measured; SCAFFOLD, the default recipe, adds its control-variate arithmetic)
REGIMES = {"default": {"client.scaffold": False},
           "small_clients": {"fed.batch_size": 2, "data.max_length": 32, "client.scaffold": False}}


def measure(config, repeats):
  exp = build(config)
  fns, g, frozen = exp.round_fns, exp.parts.trainable, exp.parts.frozen
  k = config.fed.clients_per_round
  ids = jnp.arange(k, dtype=jnp.int32)
  key = jax.random.PRNGKey(0)
  ratios = jnp.ones((k,), jnp.float32)
  comp1 = fns.init_client(g)  # one client's state row
  ctx = fns.context(fns.init_server(g), 1)
  batches, keys = jax.jit(fns.sample)(key, exp.clients, ids)

  def vmapped():  # fresh state rows each call: the client phase donates them
    states = fns.init_client_states(g, exp.clients.num_clients)
    return fns.client_phase(g, frozen, exp.clients, ids, key, ratios, states, ctx)[0].delta

  one = jax.jit(fns.one_client)

  def loop():
    outs = []
    for c in range(k):  # the reference: one client at a time
      b_c = jax.tree_util.tree_map(lambda x: x[c], batches)
      outs.append(one(g, frozen, b_c, keys[c], ratios[c], comp1, ctx)[0].delta)
    return outs

  steps = k * config.fed.local_steps
  first, times = interleaved({"vmapped": vmapped, "loop": loop}, repeats, warmup=1)
  (first_v, all_v), (first_l, all_l) = (first["vmapped"], times["vmapped"]), (first["loop"], times["loop"])
  med_v, med_l = statistics.median(all_v), statistics.median(all_l)
  return {
      "config": {"clients_per_round": k, "local_steps": config.fed.local_steps,
                 "batch_size": config.fed.batch_size, "max_length": config.data.max_length,
                 "model_layers": config.model.num_layers or "all", "lora_rank": config.lora.rank},
      "vmapped": {"compile_plus_first_s": first_v, "median_round_s": med_v, "round_s": all_v,
                  "client_steps_per_s": steps / med_v},
      "python_loop": {"compile_plus_first_s": first_l, "median_round_s": med_l, "round_s": all_l,
                      "client_steps_per_s": steps / med_l},
      "speedup_vmapped_over_loop": med_l / med_v,
  }


def main(argv):
  overrides = parse_overrides(argv)
  repeats = pop_one(overrides, "repeats", 5, int)
  if repeats < 1:
    fail(f"repeats={repeats}: an integer >= 1")
  regimes = check_choices("regimes", pop_list(overrides, "regimes", ",".join(REGIMES)), REGIMES)
  configs = {}
  for regime in regimes:  # every config checked before the first measurement
    config = checked_config(bbc_minilm.get_config(), REGIMES[regime], overrides, {"progress": False})
    if config.fed.client_chunk == 0:  # unchunked unless asked: this script compares vmap and loop
      config.fed.client_chunk = config.fed.clients_per_round
    configs[regime] = config
  results = {regime: measure(config, repeats) for regime, config in configs.items()}
  path = write_result("round_throughput", {"regimes": results, "overrides": overrides,
                                           "args": {"repeats": repeats, "smoke": smoke()}})
  print(f"{'regime':<15}{'path':<12}{'compile+1st (s)':>16}{'round (s)':>11}{'client-steps/s':>16}")
  for regime, res in results.items():
    for name in ("vmapped", "python_loop"):
      r = res[name]
      print(f"{regime:<15}{name:<12}{r['compile_plus_first_s']:>16.2f}{r['median_round_s']:>11.3f}"
            f"{r['client_steps_per_s']:>16.2f}")
    print(f"{regime:<15}speed-up vmapped / loop: {res['speedup_vmapped_over_loop']:.2f}x  "
          f"(K={res['config']['clients_per_round']}, E={res['config']['local_steps']}, "
          f"B={res['config']['batch_size']}, L={res['config']['max_length']})")
  print(f"-> {path}")


if __name__ == "__main__":
  main(sys.argv[1:])

"""XLA's estimate of the client step with and without `model.remat`, on the default experiment.

For each `model.remat` value, builds the default config (configs/bbc_minilm.py: MiniLM, 8 × 128 tokens,
E local steps) and reads the trainer's own estimate (`fedlora.fed.memory.client_step_bytes`: the step
vmapped over 1 and over 2 clients, `memory.one_client_bytes`): the bytes each more client adds
and the bytes shared by a chunk (e.g. the stacked block weights remat's scan uses). Shapes only:
nothing runs. Peak RSS of whole rounds is `bench_client_scaling.py`'s remat row.

Keys:
  remats=none,block     the `model.remat` values compared (each one `model.remat` allows)
  key=value             any config override (e.g. data.max_length=64), applied to every row
  smoke=1               the SMOKE config (benchmarks/common.py): 1 layer, 16 tokens
The committed results (benchmarks/results/remat_memory.json):
  python benchmarks/bench_remat_memory.py replace=1
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (checked_config, parse_overrides, pop_list, script_setup,  # noqa: E402
                               write_result)

script_setup()


def main(argv):
  import bbc_minilm
  ov = parse_overrides(argv)
  remats = pop_list(ov, "remats", "none,block")
  configs = {r: checked_config(bbc_minilm.get_config(), ov, {"model.remat": r, "fed.client_chunk": 1,
                                                            "progress": False})
             for r in remats}  # every row's config checked before the first build
  from fedlora.fed.memory import client_step_bytes
  from fedlora.train import build
  rows = {}
  for r, config in configs.items():
    exp = build(config)
    est = client_step_bytes(exp.round_fns, exp.parts.trainable, exp.parts.frozen, exp.clients)
    rows[r] = {"per_client_bytes": est["per_client"], "shared_bytes": est["shared"],
               "one_client": est["one"], "two_clients": est["two"]}
    print(f"model.remat={r:<8} per client {est['per_client'] / 2**20:7.1f} MB   shared "
          f"{est['shared'] / 2**20:6.1f} MB", flush=True)
  path = write_result("remat_memory", {"overrides": ov, "rows": rows})
  print(f"-> {path}")


if __name__ == "__main__":
  main(sys.argv[1:])

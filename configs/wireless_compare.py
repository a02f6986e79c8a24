"""The wireless comparison: the default task over a bandwidth-limited fading uplink.

SOFT + TSFA by default; `--config.method.name=topk|randk|svd|ffa|ideal` gives the baselines under the
same channel and latency budget (baselines default to a fixed ratio method.ratio and an equal
bandwidth split; `--config.method.allocation=tsfa` plans them with TSFA and their own payload model). benchmarks/bench_methods_e2e.py runs them all and tabulates them.
  python -m fedlora --config configs/wireless_compare.py --config.method.name=topk
Each method gets its own default workdir, runs/wireless_compare-<method>-s<seed>, so the baselines
never resume each other's state; a rerun into a workdir of a different config is refused (the run
fingerprint), naming the keys that differ. Variants: '' or 'tiny' (as configs/bbc_minilm.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bbc_minilm  # noqa: E402


def get_config(arg=None):
  if arg not in (None, "", "tiny"):
    raise ValueError(f"configs/wireless_compare.py: unknown variant {arg!r}; allowed: '' or 'tiny'")
  c = bbc_minilm.get_config(arg)
  c.name = "wireless_compare" + ("_tiny" if arg == "tiny" else "")  # names the default workdir
  c.method.name = "soft"  # SOFT sparsification + TSFA allocation
  if arg != "tiny":  # (the tiny base already runs plain FedAvg)
    c.client.scaffold = False  # FedAvg: SCAFFOLD's dense Δc_i upload would swamp the compressed bits compared
  c.lora.init = "orthogonal"  # SOFT starts from orthonormal A (the regulariser keeps it close)
  c.wireless.enabled = True  # simulate the uplink
  c.wireless.channel.bandwidth_hz = 2e6  # a narrow band: the uplink, not compute, is the bottleneck
  c.wireless.channel.compute_speed_flops = 1e12  # laptop-class clients
  c.tsfa.online.latency_budget = 1.0  # τ̄ (s)
  return c

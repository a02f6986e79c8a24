"""Server optimisers, found by name: `build_server(config.server, total_rounds) -> ServerOptimizer`.

| name        | update of the global trainable tree (Δ̄ = weighted mean client update)  | state  |
|-------------|-------------------------------------------------------------------------|--------|
| fedavg      | + lr·Δ̄                                                                  | none   |
| fedavgm     | v = β·v + Δ̄; + lr·v                                                     | v      |
| fedadagrad  | Reddi et al. 2021: m, v += g²;            − lr·m/(√v + τ),  g = −Δ̄       | m, v   |
| fedadam     | Reddi et al. 2021: m, v = β2·v + (1−β2)g²; − lr·m/(√v + τ)              | m, v   |
| fedyogi     | Reddi et al. 2021: m, Yogi's v;           − lr·m/(√v + τ)              | m, v   |

Adding one: a file here with `DEFAULTS` and `build(cfg) -> optax.GradientTransformation` (the
direction, without lr), its name in `_REGISTRY`, its keys in configs/bbc_minilm.py, and a test.
The shared keys (lr and its round schedule) are in fedlora/server/base.py.
"""
from __future__ import annotations

import importlib

from fedlora.server.base import SHARED_DEFAULTS, ServerOptimizer, make_server_optimizer

_REGISTRY = {"fedavg": "fedavg", "fedavgm": "fedavgm", "fedadagrad": "fedadagrad",
             "fedadam": "fedadam", "fedyogi": "fedyogi"}
NAMES = tuple(_REGISTRY)


def build_server(cfg, total_rounds: int) -> ServerOptimizer:
  """The server optimiser named `cfg.name` (ValueError naming the value and the allowed names)."""
  name = SHARED_DEFAULTS["name"] if cfg is None else cfg["name"]
  if name not in _REGISTRY:
    raise ValueError(f"config.server.name={name!r} is not allowed: one of {NAMES}")
  mod = importlib.import_module(f"fedlora.server.{_REGISTRY[name]}")
  return make_server_optimizer(mod.build(cfg), cfg, total_rounds)


__all__ = ["NAMES", "ServerOptimizer", "build_server"]

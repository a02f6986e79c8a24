"""'fedadagrad': FedAdagrad of Reddi et al. 2021 on the pseudo-gradient -Δ̄ (arithmetic and state in
fedlora/server/adaptive.py). β2 is not used (v accumulates every g²).

Keys (section `server`):
  b1   0.9    first-moment decay β1 in [0, 1) (0 = no server momentum)
  b2   0.99   second-moment decay β2 in [0, 1)
  tau  1e-3   adaptivity τ > 0 (the paper's ε; v starts at τ²)
Typical server lr: 1e-2 … 1e-1 (the step is ~lr per coordinate, unlike fedavg's lr·Δ̄).
"""
from __future__ import annotations

import optax

from fedlora.server.adaptive import build_adaptive

DEFAULTS = {"b1": 0.9, "b2": 0.99, "tau": 1e-3}


def build(cfg) -> optax.GradientTransformation:
  return build_adaptive("adagrad", cfg, DEFAULTS)

"""'fedavgm': server momentum (Hsu et al. 2019, "Measuring the effects of non-identical data
distribution"): v <- β·v + Δ̄, global <- global + lr·v (heavy ball on the pseudo-gradient -Δ̄;
with `nesterov`, global <- global + lr·(β·v + Δ̄)). optax.trace; state: the momentum tree v.

Keys (section `server`):
  momentum  0.9    β in [0, 1)
  nesterov  False  Nesterov momentum
"""
from __future__ import annotations

import optax

from fedlora.server.base import cfg_get, check_float

DEFAULTS = {"momentum": 0.9, "nesterov": False}


def build(cfg) -> optax.GradientTransformation:
  beta = check_float("momentum", cfg_get(cfg, "momentum", DEFAULTS["momentum"]), 0.0, 1.0,
                     hi_open=True)
  nesterov = cfg_get(cfg, "nesterov", DEFAULTS["nesterov"])
  if not isinstance(nesterov, bool):
    raise ValueError(f"config.server.nesterov={nesterov!r} is not allowed: True or False")
  return optax.trace(decay=beta, nesterov=nesterov)

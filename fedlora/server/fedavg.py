"""'fedavg': the server adds lr · (weighted mean client update) — FedAvg (McMahan et al. 2017) with a
server step size (lr = 1 is plain FedAvg; the former `fed.server_lr`).

No keys of its own, no state (optax.identity)."""
from __future__ import annotations

import optax

DEFAULTS: dict = {}


def build(cfg) -> optax.GradientTransformation:
  return optax.identity()

"""'fedavg': the server adds lr · (weighted mean client update) — FedAvg (McMahan et al. 2017) with a
server step size (lr = 1 is plain FedAvg). No keys of its own, no state (optax.identity)."""
from __future__ import annotations

import optax

from fedlora.server.base import SERVERS


@SERVERS.register("fedavg")
def build(section) -> optax.GradientTransformation:
  return optax.identity()

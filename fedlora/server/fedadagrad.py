"""'fedadagrad': FedAdagrad of Reddi et al. 2021 on the pseudo-gradient g = -Δ̄: v accumulates every
g² (β2 is validated but not used). Keys b1, b2, tau, the m / direction arithmetic and the state:
fedlora/server/adaptive.py.
"""
from __future__ import annotations

from fedlora.server.adaptive import Options, adaptive_build
from fedlora.server.base import SERVERS

def second_moment(v, g2, b2):
  """v <- v + g² (v, g2: one trainable leaf, same shape)."""
  del b2
  return v + g2


build = SERVERS.register("fedadagrad", options=Options)(adaptive_build(second_moment))

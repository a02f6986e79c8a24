"""'fedadam': FedAdam of Reddi et al. 2021 on the pseudo-gradient g = -Δ̄: v is an exponential
moving average of g². Keys b1, b2, tau, the m / direction arithmetic and the state:
fedlora/server/adaptive.py.
"""
from __future__ import annotations

from fedlora.server.adaptive import Options, adaptive_build
from fedlora.server.base import SERVERS

def second_moment(v, g2, b2):
  """v <- β2·v + (1 - β2)·g² (v, g2: one trainable leaf, same shape)."""
  return b2 * v + (1.0 - b2) * g2


build = SERVERS.register("fedadam", options=Options)(adaptive_build(second_moment))

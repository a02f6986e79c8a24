"""'fedyogi': FedYogi of Reddi et al. 2021 on the pseudo-gradient g = -Δ̄: Yogi's additive v update
grows v slowly when g² jumps (Zaheer et al. 2018). Keys b1, b2, tau, the m / direction arithmetic
and the state: fedlora/server/adaptive.py.
"""
from __future__ import annotations

import jax.numpy as jnp

from fedlora.server.adaptive import Options, adaptive_build
from fedlora.server.base import SERVERS

def second_moment(v, g2, b2):
  """v <- v - (1 - β2)·g²·sign(v - g²) (v, g2: one trainable leaf, same shape)."""
  return v - (1.0 - b2) * g2 * jnp.sign(v - g2)


build = SERVERS.register("fedyogi", options=Options)(adaptive_build(second_moment))

"""'none': the ideal uplink. The server receives the update unchanged.

Config keys (section `compress`, defaults in code):
  bits_per_value = 32   # 32 or 16; accounting only: values are NOT rounded ('none' is the ideal
                        # reference), bits = (number of trainable values) · q.
"""
from __future__ import annotations

import jax.numpy as jnp

from fedlora.compress.base import CompressOut, Compressor, dense_bits


def dense_compressor(bits_per_value: int = 32) -> Compressor:
  """Identity compressor; state `()`, kept None, bits = Σ_leaves numel · q."""
  def init(trainable):
    return ()

  def update(state, delta, ratio=None, key=None, ref=None) -> CompressOut:
    return CompressOut(delta, jnp.float32(dense_bits(delta, bits_per_value)), state, None)

  return Compressor(init, update)

"""'none': the ideal uplink. The server receives the update unchanged.

Config keys (section `compress`): only the common `bits_per_value` (32 | 16); accounting only:
values are NOT rounded ('none' is the ideal reference).
Bits: `Σ_leaves numel · q`. Payload model: `c0 = Σ numel · q`, `c1 = 0` (exact for every ρ).
Profile: zeros `[r]` (nothing is ever dropped, so TSFA's sparsification error is 0).
"""
from __future__ import annotations

import jax.numpy as jnp

from fedlora.compress import COMPRESSORS
from fedlora.compress.base import CompressOut, Compressor, adapter_rank, dense_bits


def dense_compressor(bits_per_value: int = 32) -> Compressor:
  """Identity compressor; state `()`, kept None, bits = Σ_leaves numel · q."""
  def init(trainable):
    return ()

  def update(state, delta, ratio=None, key=None, ref=None) -> CompressOut:
    return CompressOut(delta, jnp.float32(dense_bits(delta, bits_per_value)), state, None,
                       jnp.zeros((adapter_rank(delta),), jnp.float32))

  def payload(trainable):
    return dense_bits(trainable, bits_per_value), 0.0

  return Compressor(init, update, payload)


@COMPRESSORS.register("none")
def build(section):
  return dense_compressor(section.bits_per_value)

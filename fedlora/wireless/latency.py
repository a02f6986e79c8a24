"""Rates and latencies of the FDMA uplink, and what a round really takes under imperfect CSI.

`R_k = b_k·log2(1 + p·g_k/(N0·b_k))`, `τ_k = τ_k^fixed + bits_k/R_k` with `τ^fixed = τ^cmp (+ τ^dl)`,
round latency `τ = max_k τ_k` (synchronous FL). Shapes: `[K]` per scheduled client.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedlora.wireless.channel import ChannelConfig, db_to_linear

_LN2 = 0.6931471805599453


def snr_per_hz(gain: jax.Array, cfg: ChannelConfig, tx_power_dbm: float | None = None) -> jax.Array:
  """`[K]` `p·g/N0` in Hz: the SNR a client would have on 1 Hz (SNR on b Hz is this / b)."""
  p_dbm = cfg.tx_power_dbm if tx_power_dbm is None else tx_power_dbm
  # p/N0 in dB first: both are ~1e-1 W and ~1e-21 W/Hz, the ratio is well inside float32.
  p_over_n0 = db_to_linear(p_dbm - cfg.noise_psd_dbm_hz)
  return jnp.asarray(gain, jnp.float32) * jnp.float32(p_over_n0)


def spectral_rate(share: jax.Array, snr: jax.Array) -> jax.Array:
  """`x·log2(1 + snr/x)` for bandwidth share x ≥ 0 (`[K]`); exactly 0 with zero gradient at x = 0.

  `snr` is the SNR over the full reference band; `B·spectral_rate(b/B, snr_full)` is the rate in
  bit/s. The `where` double guard keeps value and gradient NaN-free at x = 0 (the true derivative
  is +∞ there).
  """
  x = jnp.asarray(share, jnp.float32)
  pos = x > 0
  xs = jnp.where(pos, x, 1.0)
  return jnp.where(pos, xs * jnp.log1p(snr / xs) / _LN2, 0.0)


def shannon_rate(bandwidth_hz: jax.Array, gain: jax.Array, cfg: ChannelConfig) -> jax.Array:
  """`[K]` rate in bit/s: `b·log2(1 + p·g/(N0·b))`; exactly 0 (finite gradient) where b == 0."""
  return spectral_rate(bandwidth_hz, snr_per_hz(gain, cfg))


def upload_latency(bits: jax.Array, rate: jax.Array) -> jax.Array:
  """`[K]` seconds `bits/rate`; 0 for 0 bits, +inf for bits > 0 at rate 0."""
  bits = jnp.asarray(bits, jnp.float32)
  rate = jnp.asarray(rate, jnp.float32)
  ok = rate > 0
  t = bits / jnp.where(ok, rate, 1.0)
  return jnp.where(ok, t, jnp.where(bits > 0, jnp.inf, 0.0))


def compute_latency(flops: jax.Array, speed: jax.Array) -> jax.Array:
  """`[K]` seconds of local computation: `flops/speed` (FLOP, FLOP/s)."""
  return jnp.asarray(flops, jnp.float32) / jnp.asarray(speed, jnp.float32)


def downlink_latency(bits: jax.Array, gain: jax.Array, cfg: ChannelConfig) -> jax.Array:
  """`[K]` seconds for each client to receive the broadcast of `bits` over the full band.

  ours: the server broadcasts at `downlink_tx_power_dbm` on all of `bandwidth_hz`, the channel is
  reciprocal (same gain as the uplink). Zeros when `cfg.downlink` is False (method.md default).
  """
  gain = jnp.asarray(gain, jnp.float32)
  if not cfg.downlink:
    return jnp.zeros_like(gain)
  snr_full = snr_per_hz(gain, cfg, cfg.downlink_tx_power_dbm) / cfg.bandwidth_hz
  rate = cfg.bandwidth_hz * spectral_rate(jnp.ones_like(gain), snr_full)
  return upload_latency(jnp.broadcast_to(jnp.asarray(bits, jnp.float32), gain.shape), rate)


def round_latency(latency: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Scalar synchronous round latency `max_k τ_k` over the active clients (0 if none is active)."""
  lat = jnp.asarray(latency, jnp.float32)
  if mask is not None:
    lat = jnp.where(mask, lat, 0.0)
  return jnp.max(lat, axis=-1, initial=0.0)


class Realised(NamedTuple):
  """What a planned round really took (true gains)."""
  latency: jax.Array          # [K] realised per-client latency τ_k (s)
  missed: jax.Array           # [K] bool: τ_k > deadline (upload dropped by the server)
  round_latency: jax.Array    # scalar: max_k min(τ_k, deadline), the server stops waiting at the deadline


def realise(bandwidth_hz: jax.Array, bits: jax.Array, true_gain: jax.Array, fixed_latency: jax.Array,
            deadline, cfg: ChannelConfig, mask: jax.Array | None = None) -> Realised:
  """Realised latencies of a planned allocation under the TRUE gains `[K]`.

  The plan (bandwidth, bits) was made with estimated gains; the rate achieved uses `true_gain`.
  `fixed_latency [K]`: compute (+ downlink) seconds. `deadline`: scalar seconds (`jnp.inf` = none).
  Inactive clients (`mask` False) get latency 0 and never miss.
  """
  rate = shannon_rate(bandwidth_hz, true_gain, cfg)
  lat = jnp.asarray(fixed_latency, jnp.float32) + upload_latency(bits, rate)
  if mask is not None:
    lat = jnp.where(mask, lat, 0.0)
  missed = lat > deadline
  return Realised(lat, missed, round_latency(jnp.minimum(lat, deadline)))

"""Uplink channel of a single cell: constants, client placement, path loss, fading, CSI errors.

System model (docs/method.md, "Wireless uplink"): N clients uniform in a disc of
radius R around the server, path loss `128.1 + 37.6·log10(d_km)` dB, block Rayleigh fading power
`h ~ Exp(1)` redrawn every round, transmit power 23 dBm, noise PSD −174 dBm/Hz, 20 MHz of uplink
bandwidth shared by FDMA. Gains are linear power gains (`g = 10^(−PL/10) · h`).

Components: `ChannelConfig` (static constants), `ChannelState` (per run: distances, speeds) built by
`init(key, num_clients, cfg)`, and `sample_round(state, key, client_ids, cfg) -> RoundChannel` (per
round: true and estimated gains). All functions are pure, jittable and vmappable; float32.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from fedlora.section import Section


CSI_FLOOR = 1e-2  # `estimate_gain`'s floor of the relative error factor 1 + ε


def _static(default):
  return struct.field(pytree_node=False, default=default)


@struct.dataclass
class ChannelConfig(Section):
  """Section `wireless.channel`: constants of the uplink (static: a pytree without leaves, safe to pass into `jax.jit`).

  Fields (defaults from method.md unless marked ours):
    cell_radius_m:        500 m, cell radius R.
    min_distance_m:       10 m (ours: keeps the path-loss model, fitted for d ≳ 10 m, in range).
    tx_power_dbm:         23 dBm client transmit power p.
    noise_psd_dbm_hz:     −174 dBm/Hz thermal noise PSD N0.
    bandwidth_hz:         20 MHz total uplink bandwidth B_tot (FDMA).
    pathloss_const_db:    128.1 dB, path loss at 1 km.
    pathloss_exp_db:      37.6 dB per decade of distance (3.76 path-loss exponent).
    csi_error_std:        0 (ours: perfect CSI by default); σ of the relative CSI error ε.
    compute_speed_flops:  1e11 FLOP/s mean client speed (ours: a phone-class accelerator).
    compute_speed_spread: 4.0 (ours): speeds are log-uniform on [f_lo, spread·f_lo] with mean
                          `compute_speed_flops`; 1.0 = homogeneous clients.
    downlink:             False (method.md: downlink ignored by default); True adds the broadcast of
                          the global adapters to each client's fixed latency (`downlink_latency`).
    downlink_tx_power_dbm: 43 dBm (ours: a small-cell base station), used only if `downlink`.
  """
  SECTION = "wireless.channel"
  cell_radius_m: float = _static(500.0)
  min_distance_m: float = _static(10.0)
  tx_power_dbm: float = _static(23.0)
  noise_psd_dbm_hz: float = _static(-174.0)
  bandwidth_hz: float = _static(20e6)
  pathloss_const_db: float = _static(128.1)
  pathloss_exp_db: float = _static(37.6)
  csi_error_std: float = _static(0.0)
  compute_speed_flops: float = _static(1e11)
  compute_speed_spread: float = _static(4.0)
  downlink: bool = _static(False)
  downlink_tx_power_dbm: float = _static(43.0)

  def check(self) -> None:
    finite = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    self.need(finite(self.cell_radius_m) and self.cell_radius_m > 0, "cell_radius_m",
              "a finite radius > 0 m")
    self.need(finite(self.min_distance_m) and 0 < self.min_distance_m < self.cell_radius_m,
              "min_distance_m", f"in (0, cell_radius_m={self.cell_radius_m})")
    for name in ("tx_power_dbm", "noise_psd_dbm_hz", "pathloss_const_db", "downlink_tx_power_dbm"):
      self.need(finite(getattr(self, name)), name, "a finite number (dB units)")
    self.need(finite(self.pathloss_exp_db) and self.pathloss_exp_db > 0, "pathloss_exp_db",
              "> 0 dB per decade (path loss grows with distance)")
    self.need(finite(self.bandwidth_hz) and self.bandwidth_hz > 0, "bandwidth_hz",
              "a finite bandwidth > 0 Hz")
    self.need(finite(self.csi_error_std) and self.csi_error_std >= 0, "csi_error_std",
              ">= 0 (0 = perfect CSI)")
    self.need(finite(self.compute_speed_flops) and self.compute_speed_flops > 0,
              "compute_speed_flops", "> 0 FLOP/s")
    self.need(finite(self.compute_speed_spread) and self.compute_speed_spread >= 1,
              "compute_speed_spread", ">= 1 (max/min speed ratio)")
    self.need(isinstance(self.downlink, bool), "downlink", "True or False")

  @property
  def tx_power_w(self) -> float:
    return db_to_linear(self.tx_power_dbm - 30.0)

  @property
  def noise_psd_w_hz(self) -> float:
    return db_to_linear(self.noise_psd_dbm_hz - 30.0)


def db_to_linear(db):
  """`10^(db/10)`; Python float in, Python float out (arrays map elementwise)."""
  if isinstance(db, (int, float)):
    return 10.0 ** (db / 10.0)
  return jnp.power(10.0, jnp.asarray(db, jnp.float32) / 10.0)


def place_clients(key: jax.Array, num_clients: int, cfg: ChannelConfig) -> jax.Array:
  """Distances `[num_clients]` (m), uniform over the annulus min_distance ≤ d ≤ cell_radius.

  Uniform in area: `d = sqrt(U·(R² − d0²) + d0²)`, U ~ U(0, 1); for d0 → 0 the mean is 2R/3.
  """
  if int(num_clients) < 1:
    raise ValueError(f"num_clients={num_clients!r} is not allowed: an integer >= 1")
  u = jax.random.uniform(key, (int(num_clients),), jnp.float32)
  r2, d02 = cfg.cell_radius_m ** 2, cfg.min_distance_m ** 2
  return jnp.sqrt(u * (r2 - d02) + d02)


def path_loss_db(distances_m: jax.Array, cfg: ChannelConfig) -> jax.Array:
  """`[N]` path loss in dB: `pathloss_const_db + pathloss_exp_db·log10(d / 1 km)`."""
  d = jnp.asarray(distances_m, jnp.float32)
  return cfg.pathloss_const_db + cfg.pathloss_exp_db * jnp.log10(d / 1000.0)


def path_gain(distances_m: jax.Array, cfg: ChannelConfig) -> jax.Array:
  """`[N]` linear large-scale power gain `10^(−PL_dB/10)` (e.g. 2.1e-12 at 500 m)."""
  return jnp.power(10.0, -path_loss_db(distances_m, cfg) / 10.0)


def draw_fading(key: jax.Array, num: int) -> jax.Array:
  """`[num]` block Rayleigh fading power gains `h ~ Exp(1)` (mean 1), one draw per round."""
  return jax.random.exponential(key, (int(num),), jnp.float32)


def client_speeds(key: jax.Array, num_clients: int, cfg: ChannelConfig) -> jax.Array:
  """`[N]` compute speeds (FLOP/s), log-uniform on `[f_lo, spread·f_lo]` with mean `compute_speed_flops`.

  ours: log-uniform spreads speeds evenly over orders of magnitude (phones to laptops);
  `f_lo = mean·ln(s)/(s − 1)` makes the arithmetic mean exactly `compute_speed_flops`.
  """
  s = cfg.compute_speed_spread
  u = jax.random.uniform(key, (int(num_clients),), jnp.float32)
  if s == 1.0:
    return jnp.full((int(num_clients),), cfg.compute_speed_flops, jnp.float32)
  f_lo = cfg.compute_speed_flops * math.log(s) / (s - 1.0)
  return (f_lo * jnp.exp(u * math.log(s))).astype(jnp.float32)


def estimate_gain(key: jax.Array, true_gain: jax.Array, csi_error_std, floor: float = CSI_FLOOR):
  """Imperfect CSI: `ĝ = g·max(1 + ε, floor)`, ε ~ N(0, σ²) per client, `[K]` in and out.

  ours: the relative error is clipped at `floor` (default 1e-2) so ĝ stays positive (a gain
  estimate ≤ 0 is not physical; for σ ≤ 0.3 the clip is hit with probability < 1e-3).
  `csi_error_std = 0` returns `true_gain` exactly. `csi_error_std` may be traced.
  """
  if isinstance(csi_error_std, (int, float)) and not csi_error_std >= 0:
    raise ValueError(f"csi_error_std={csi_error_std!r} is not allowed: >= 0 (0 = perfect CSI)")
  g = jnp.asarray(true_gain, jnp.float32)
  eps = jax.random.normal(key, g.shape, jnp.float32) * csi_error_std
  return g * jnp.maximum(1.0 + eps, floor)


def csi_quantile_factor(csi_error_std: float, miss_prob: float, floor: float = CSI_FLOOR) -> float:
  """`c = 1/(1 + σ·z_{1−p})` (float64): ĝ·c is the gain that the true gain falls below with probability
  exactly `miss_prob` = p under `estimate_gain`'s error model, for every true gain g.

  ours (robust planning, docs/method.md): ĝ = g·max(1 + ε, floor), ε ~ N(0, σ²), so
  `g < ĝ·c  ⇔  max(1 + ε, floor) > 1 + σ·z_{1−p}  ⇔  ε > σ·z_{1−p}` (exact as long as
  1 + σ·z_{1−p} > floor, which holds for every σ when p ≤ 0.5), an event of probability p.
  The probability is over the CSI error at a fixed true gain (no prior on g is needed).
  z_{1−p} is the standard normal quantile (`statistics.NormalDist`, Wichura's AS241: double precision
  without scipy). σ = 0 gives c = 1 exactly.
  """
  ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
  if not (ok(csi_error_std) and csi_error_std >= 0):
    raise ValueError(f"csi_error_std={csi_error_std!r} is not allowed: >= 0 (0 = perfect CSI)")
  if not (ok(miss_prob) and 0 < miss_prob < 1):
    raise ValueError(f"miss_prob={miss_prob!r} is not allowed: a probability in (0, 1)")
  if csi_error_std == 0:
    return 1.0
  level = 1.0 + float(csi_error_std) * NormalDist().inv_cdf(1.0 - float(miss_prob))
  if not level > floor:
    raise ValueError(
        f"miss_prob={miss_prob!r} with csi_error_std={csi_error_std!r} is not allowed: the planning "
        f"quantile 1 + σ·z_(1−p) = {level:.4g} is not above the CSI error floor {floor} (the estimate "
        "cannot be that far above the true gain); use a smaller miss_prob (<= 0.5 always works)")
  return 1.0 / level


def conservative_gain(gain_est: jax.Array, csi_error_std: float, miss_prob: float) -> jax.Array:
  """`[K]` planning gains `ĝ·c` (`csi_quantile_factor`): P(g < ĝ·c) = miss_prob per client.

  A plan whose latency meets a deadline at these gains misses it with probability <= miss_prob (rate
  and latency are monotone in the gain). `csi_error_std = 0` returns `gain_est` unchanged.
  """
  c = csi_quantile_factor(csi_error_std, miss_prob)
  g = jnp.asarray(gain_est, jnp.float32)
  return g if c == 1.0 else g * jnp.float32(c)


class ChannelState(NamedTuple):
  """Per-run channel quantities of all N clients."""
  distances_m: jax.Array  # [N] distance to the server (m)
  speeds: jax.Array       # [N] compute speed (FLOP/s)


class RoundChannel(NamedTuple):
  """One round's channel for the K scheduled clients."""
  gain: jax.Array       # [K] true linear gain g·h (what the realised rate uses)
  gain_est: jax.Array   # [K] estimated gain ĝ (what the planner uses); == gain when σ = 0
  fading: jax.Array     # [K] the fading draw h


def init(key: jax.Array, num_clients: int, cfg: ChannelConfig) -> ChannelState:
  """Places the N clients and draws their compute speeds (once per run)."""
  k_pos, k_speed = jax.random.split(key)
  return ChannelState(place_clients(k_pos, num_clients, cfg), client_speeds(k_speed, num_clients, cfg))


def sample_round(state: ChannelState, key: jax.Array, client_ids: jax.Array,
                 cfg: ChannelConfig) -> RoundChannel:
  """Draws this round's fading for `client_ids [K]` and the planner's CSI estimate."""
  k_fade, k_csi = jax.random.split(key)
  ids = jnp.asarray(client_ids)
  h = draw_fading(k_fade, ids.shape[0])
  g = path_gain(state.distances_m[ids], cfg) * h
  return RoundChannel(g, estimate_gain(k_csi, g, cfg.csi_error_std), h)

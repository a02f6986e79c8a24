"""Wireless uplink model: hand-computed path loss and rates, placement statistics, CSI errors."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fedlora import wireless as w

CFG = w.ChannelConfig()


def test_path_loss_matches_hand_computation():
  # 100 m: 128.1 + 37.6·log10(0.1) = 128.1 − 37.6 = 90.5 dB  -> g = 10^-9.05 = 8.9125e-10
  # 500 m: 128.1 + 37.6·log10(0.5) = 128.1 − 11.3187 = 116.7813 dB -> g = 10^-11.67813 = 2.0983e-12
  pl = np.asarray(w.path_loss_db(jnp.array([100.0, 500.0]), CFG))
  np.testing.assert_allclose(pl, [90.5, 116.7813], atol=1e-3)
  g = np.asarray(w.path_gain(jnp.array([100.0, 500.0]), CFG))
  np.testing.assert_allclose(g, [8.9125e-10, 2.0983e-12], rtol=1e-4)


def test_shannon_rate_matches_hand_computation():
  # 500 m client on b = 1 MHz: SNR_dB = p − PL − (N0 + 10·log10 b) = 23 − 116.7813 − (−174 + 60)
  # = 20.2187 dB -> SNR = 105.165 -> R = 1e6·log2(106.165) = 6.7302e6 bit/s.
  g = w.path_gain(jnp.array([500.0]), CFG)
  rate = float(w.shannon_rate(jnp.array([1e6]), g, CFG)[0])
  assert rate == pytest.approx(6.7302e6, rel=1e-4)
  # Doubling the bandwidth (SNR halves): 2e6·log2(1 + 52.583) = 1.1484e7.
  rate2 = float(w.shannon_rate(jnp.array([2e6]), g, CFG)[0])
  assert rate2 == pytest.approx(2e6 * math.log2(1 + 105.1654 / 2), rel=1e-4)


def test_rate_zero_at_zero_bandwidth_with_finite_gradient():
  g = jnp.full((3,), 2e-12)
  b = jnp.array([0.0, 1e5, 1e6])
  rate = w.shannon_rate(b, g, CFG)
  assert float(rate[0]) == 0.0 and bool(jnp.all(rate[1:] > 0))
  grad = jax.grad(lambda b: w.shannon_rate(b, g, CFG).sum())(b)
  assert bool(jnp.all(jnp.isfinite(grad)))
  assert bool(jnp.all(grad[1:] > 0))  # more bandwidth, more rate
  lat = w.upload_latency(jnp.array([1e6, 0.0, 1e6]), rate)
  assert float(lat[0]) == math.inf and float(lat[1]) == 0.0
  assert float(lat[2]) == pytest.approx(1e6 / float(rate[2]), rel=1e-6)


def test_rate_vmaps_like_a_loop():
  g = w.path_gain(jnp.linspace(20.0, 500.0, 12).reshape(3, 4), CFG)
  b = jnp.linspace(1e5, 5e6, 12).reshape(3, 4)
  batched = jax.vmap(lambda bb, gg: w.shannon_rate(bb, gg, CFG))(b, g)
  looped = jnp.stack([w.shannon_rate(b[i], g[i], CFG) for i in range(3)])
  np.testing.assert_allclose(batched, looped, rtol=1e-6)


def test_place_clients_in_annulus_and_uniform_in_area():
  d = np.asarray(w.place_clients(jax.random.PRNGKey(0), 20000, CFG))
  assert d.min() >= CFG.min_distance_m and d.max() <= CFG.cell_radius_m
  # Uniform in a disc: E[d] = 2R/3 = 333.3 m (the 10 m hole shifts it by < 0.1 m); SE ≈ 0.8 m.
  assert abs(d.mean() - 2 * CFG.cell_radius_m / 3) < 5.0
  # P(d ≤ R/2) = 1/4 for uniform area (vs 1/2 for uniform distance).
  assert abs(np.mean(d <= CFG.cell_radius_m / 2) - 0.25) < 0.02


def test_fading_and_speeds_statistics():
  h = np.asarray(w.draw_fading(jax.random.PRNGKey(1), 20000))
  assert h.min() > 0 and abs(h.mean() - 1.0) < 0.04 and abs(h.std() - 1.0) < 0.05
  cfg = w.ChannelConfig(compute_speed_flops=2e11, compute_speed_spread=8.0)
  f = np.asarray(w.client_speeds(jax.random.PRNGKey(2), 20000, cfg))
  f_lo = 2e11 * math.log(8.0) / 7.0
  assert f.min() >= f_lo * 0.999 and f.max() <= 8 * f_lo * 1.001
  assert abs(f.mean() / 2e11 - 1.0) < 0.02
  homo = w.client_speeds(jax.random.PRNGKey(2), 5, w.ChannelConfig(compute_speed_spread=1.0))
  np.testing.assert_allclose(homo, 1e11)
  assert float(w.compute_latency(jnp.array(3e11), jnp.array(1e11))) == pytest.approx(3.0)


def test_channel_state_and_round_sampling():
  state = w.init(jax.random.PRNGKey(3), 50, CFG)
  assert state.distances_m.shape == (50,) and state.speeds.shape == (50,)
  ids = jnp.array([3, 7, 11, 42])
  rc = jax.jit(w.sample_round, static_argnames="cfg")(state, jax.random.PRNGKey(4), ids, cfg=CFG)
  assert rc.gain.shape == (4,) and bool(jnp.all(rc.gain > 0))
  np.testing.assert_array_equal(rc.gain, rc.gain_est)  # σ = 0: perfect CSI
  np.testing.assert_allclose(rc.gain, w.path_gain(state.distances_m[ids], CFG) * rc.fading, rtol=1e-5)
  noisy = w.sample_round(state, jax.random.PRNGKey(4), ids, w.ChannelConfig(csi_error_std=0.2))
  np.testing.assert_allclose(noisy.gain, rc.gain, rtol=1e-5)  # same key, same truth (jit vs eager)
  assert bool(jnp.all(noisy.gain_est != noisy.gain)) and bool(jnp.all(noisy.gain_est > 0))
  other = w.sample_round(state, jax.random.PRNGKey(5), ids, CFG)
  assert bool(jnp.all(other.fading != rc.fading))  # fading is redrawn every round


def test_estimate_gain_stays_positive():
  g = jnp.full((10000,), 1e-12)
  est = w.estimate_gain(jax.random.PRNGKey(6), g, 2.0)  # huge σ: many clipped draws
  assert bool(jnp.all(est > 0))
  assert float(jnp.min(est)) == pytest.approx(1e-14, rel=1e-5)  # the 1e-2 relative floor


def _plan(key, k, sigma):
  cfg = w.ChannelConfig(csi_error_std=sigma)
  state = w.init(key, k, cfg)
  rc = w.sample_round(state, jax.random.fold_in(key, 1), jnp.arange(k), cfg)
  b = jnp.full((k,), cfg.bandwidth_hz / k)
  bits = jnp.full((k,), 5e6)
  fixed = jnp.full((k,), 0.2)
  planned = fixed + w.upload_latency(bits, w.shannon_rate(b, rc.gain_est, cfg))
  return cfg, rc, b, bits, fixed, planned


def test_perfect_csi_realises_the_plan():
  cfg, rc, b, bits, fixed, planned = _plan(jax.random.PRNGKey(7), 64, 0.0)
  deadline = jnp.max(planned)
  out = w.realise(b, bits, rc.gain, fixed, deadline, cfg)
  np.testing.assert_allclose(out.latency, planned, rtol=1e-6)
  assert not bool(jnp.any(out.missed))
  assert float(out.round_latency) == pytest.approx(float(deadline), rel=1e-6)


def test_imperfect_csi_misses_are_flagged_exactly():
  cfg, rc, b, bits, fixed, planned = _plan(jax.random.PRNGKey(8), 200, 0.3)
  deadline = jnp.max(planned)  # tight: no slack over the planned round latency
  out = w.realise(b, bits, rc.gain, fixed, deadline, cfg)
  assert int(out.missed.sum()) > 0
  np.testing.assert_array_equal(out.missed, out.latency > deadline)
  # Overestimated gains (ĝ > g) are the ones running late.
  late = np.asarray(out.latency > planned)
  np.testing.assert_array_equal(late, np.asarray(rc.gain_est > rc.gain))
  assert float(out.round_latency) <= float(deadline) + 1e-6
  masked = w.realise(b, bits, rc.gain, fixed, deadline, cfg, mask=jnp.arange(200) < 10)
  assert not bool(jnp.any(masked.missed[10:])) and float(jnp.sum(masked.latency[10:])) == 0.0


def test_downlink_option():
  g = w.path_gain(jnp.array([100.0, 400.0]), CFG)
  np.testing.assert_array_equal(w.downlink_latency(1e7, g, CFG), 0.0)  # default: ignored
  cfg = w.ChannelConfig(downlink=True)
  lat = np.asarray(w.downlink_latency(1e7, g, cfg))
  snr = 10 ** ((43 - 30) / 10) * np.asarray(g) / (10 ** ((-174 - 30) / 10) * 20e6)
  np.testing.assert_allclose(lat, 1e7 / (20e6 * np.log2(1 + snr)), rtol=1e-4)
  assert lat[1] > lat[0] > 0


def test_config_validation_and_from_config():
  with pytest.raises(ValueError, match="bandwidth_hz=-1"):
    w.ChannelConfig(bandwidth_hz=-1.0)
  with pytest.raises(ValueError, match="min_distance_m"):
    w.ChannelConfig(min_distance_m=600.0)
  with pytest.raises(ValueError, match="compute_speed_spread"):
    w.ChannelConfig(compute_speed_spread=0.5)
  with pytest.raises(ValueError, match="csi_error_std"):
    w.ChannelConfig(csi_error_std=-0.1)
  with pytest.raises(ValueError, match="csi_error_std=-0.5"):
    w.estimate_gain(jax.random.PRNGKey(0), jnp.ones(3), -0.5)
  with pytest.raises(ValueError, match="num_clients"):
    w.place_clients(jax.random.PRNGKey(0), 0, CFG)
  sec = ml_collections.ConfigDict(dict(cell_radius_m=250, bandwidth_hz=10e6, downlink=True))
  cfg = w.ChannelConfig.from_dict(sec.to_dict())
  assert (cfg.cell_radius_m, cfg.bandwidth_hz, cfg.downlink, cfg.tx_power_dbm) == (250.0, 10e6, True, 23.0)
  with pytest.raises(ValueError, match=r"wireless.channel has no key\(s\) \['bandwith_hz'\]"):
    w.ChannelConfig.from_dict(ml_collections.ConfigDict(dict(bandwith_hz=1.0)).to_dict())

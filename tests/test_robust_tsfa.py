"""Robust TSFA planning under imperfect CSI (`tsfa.online.robust`, `miss_prob`) and the infeasible
latency-budget warning: the CSI quantile against scipy and a Monte Carlo of `estimate_gain`, the
deadline-miss rate of robust and plain plans over thousands of vmapped channel draws, the uplink's
wiring, the warning, and the config checks."""
import json
import math
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from conftest import ROOT, tiny_config
from fedlora.config import typed
from fedlora.methods.base import UplinkInputs
from fedlora.methods.uplink import make_uplink
from fedlora.run.errors import RunWarning
from fedlora.section import ConfigError
from fedlora.tsfa import online
from fedlora.wireless import channel as wch
from fedlora.wireless.latency import realise

CHAN = wch.ChannelConfig(bandwidth_hz=2e6, csi_error_std=0.2)


@pytest.mark.parametrize("sigma", [0.05, 0.2, 0.4])
@pytest.mark.parametrize("p", [0.01, 0.05, 0.2, 0.5])
def test_quantile_factor_matches_scipy(sigma, p):
  """c = 1/(1 + σ·z_(1−p)), z from scipy's normal quantile."""
  want = 1.0 / (1.0 + sigma * norm.ppf(1.0 - p))
  assert wch.csi_quantile_factor(sigma, p) == pytest.approx(want, rel=1e-12)


def test_quantile_is_exact_under_the_error_model():
  """Monte Carlo of `estimate_gain` itself (with its floor): at fixed true gains g, the fraction of
  draws with g < ĝ·c is miss_prob within 4 standard errors (200,000 draws per σ)."""
  n, p = 200_000, 0.05
  g = jnp.full((n,), 3e-12, jnp.float32)
  se = math.sqrt(p * (1 - p) / n)  # 4.9e-4
  for sigma in (0.1, 0.2, 0.4):
    g_est = wch.estimate_gain(jax.random.PRNGKey(int(sigma * 100)), g, sigma)
    frac = float(jnp.mean(g < wch.conservative_gain(g_est, sigma, p)))
    assert abs(frac - p) < 4 * se, (sigma, frac)
    assert float(jnp.mean(g < g_est)) == pytest.approx(0.5, abs=4 * 0.5 / math.sqrt(n))  # plain
  assert wch.csi_quantile_factor(0.0, 0.05) == 1.0  # perfect CSI: the estimate itself
  np.testing.assert_array_equal(wch.conservative_gain(g[:3], 0.0, 0.05), g[:3])


@jax.jit
def _scenario(factor, key):
  """1,000 independent rounds of 8 clients (placement, fading, CSI error at σ = 0.2 all redrawn), each
  planned by the online solver on the planning gains ĝ·factor (`conservative_gain` is ĝ·c; factor 1
  = the estimates) and realised on the true gains, vmapped. Returns (miss of the client's own planned
  latency [draws, k], miss of the round's planned latency [draws, k], planned round latency [draws])."""
  draws, k = 1000, 8
  chan = CHAN.replace(csi_error_std=0.2)
  cfg = online.OnlineConfig(latency_budget=0.5, V=0.1, rho_min=0.125, max_iters=60).with_band(2e6)
  c0, c1 = 2e4, 8e5  # bits at ρ → 0 and the extra at ρ = 1
  fixed = jnp.full((k,), 0.05)
  prof = jnp.full((k, 8), 1.0 / 8)

  def one(key):
    k_pos, k_round = jax.random.split(key)
    state = wch.init(k_pos, k, chan)
    rc = wch.sample_round(state, k_round, jnp.arange(k), chan)
    inputs = online.make_inputs(rc.gain_est * factor, c0, c1, fixed, jnp.full((k,), 1.0 / k), prof,
                                chan)
    rho, bw, diag = online.solve(inputs, jnp.float32(2.0), cfg)  # a backlog: latency matters
    real = realise(bw, c0 + c1 * rho, rc.gain, fixed, diag.max_latency, chan)
    return real.latency > diag.latency, real.missed, diag.max_latency

  return jax.vmap(one)(jax.random.split(key, draws))


def test_robust_plan_misses_its_deadline_at_most_miss_prob():
  """σ = 0.2, 1,000 rounds × 8 clients: planning on the conservative gains, a client's realised
  latency exceeds its planned one (and the round's planned latency, the deadline the plan promises)
  in at most miss_prob + 3 standard errors (0.05 + 0.0094) of the client-rounds; planning on the
  estimates exceeds it in about half of them (P(ε > 0) = 0.5 for its own latency)."""
  p, n = 0.05, 1000 * 8
  tol = 3 * math.sqrt(p * (1 - p) / n)
  key = jax.random.PRNGKey(7)
  own_r, rnd_r, lat_r = map(np.asarray, _scenario(jnp.float32(wch.csi_quantile_factor(0.2, p)), key))
  own_p, rnd_p, lat_p = map(np.asarray, _scenario(jnp.float32(1.0), key))
  assert own_r.mean() <= p + tol and abs(own_r.mean() - p) < tol  # exact: the quantile's event
  assert rnd_r.mean() <= p + tol
  assert own_p.mean() > 0.4 and rnd_p.mean() > p + tol  # the option matters
  assert np.all(np.isfinite(lat_r)) and np.median(lat_r) > np.median(lat_p)  # the price: slower plans
  print(f"miss rate of the round's planned latency: robust {rnd_r.mean():.4f}, plain {rnd_p.mean():.4f}")


C0, C1 = 2e5, 8e6  # bits: ~0.2 s at ρ_min on 1 MHz at 20 dB


class _Payload:
  """A compressor stand-in: only the payload model is read by the uplink."""
  def payload(self, trainable):
    return C0, C1


def _uplink(**ov):
  base = {"wireless.enabled": True, "wireless.channel.bandwidth_hz": 2e6,
          "wireless.channel.csi_error_std": 0.2, "method.name": "soft"}
  config = typed(tiny_config(**{**base, **ov}))
  n = config.data.num_clients
  inputs = UplinkInputs({}, {"w": np.zeros((300, 300), np.float32)}, jnp.full((n,), 10), 0.0)
  return config, inputs, make_uplink(config, _Payload(), allocation="tsfa", ratio=1.0)


def test_robust_uplink_plans_on_conservative_gains():
  """The uplink's robust plan is the solver's plan on ĝ·c of the round's own CSI estimates (the
  realised side keeps the true gains; the plain path is the code from before, bit-identical on the
  tiny run: test_robust_false_is_bit_identical_on_the_tiny_run)."""
  ids, key = jnp.array([0, 2]), jax.random.PRNGKey(5)
  config, inputs, (init_state, plan, deliver, _) = _uplink(**{"tsfa.online.robust": True})
  st = init_state(inputs)
  out, _ = plan(st, ids, key, inputs)
  tcfg = config.tsfa.online.with_band(2e6)
  g = wch.conservative_gain(out["gain_est"], 0.2, 0.05)
  assert np.all(np.asarray(g) < np.asarray(out["gain_est"]))
  want = online.make_inputs(g, C0, C1, out["compute_latency"], jnp.full((2,), 0.5),
                            st["profiles"][ids], config.wireless.channel)
  rho, bw, _ = jax.jit(online.solve, static_argnums=2)(want, st["tsfa"]["queue"], tcfg,
                                                       st["tsfa"]["rho"][ids], st["tsfa"]["share"][ids])
  np.testing.assert_allclose(out["bandwidth_hz"], bw, rtol=1e-3)  # two solves: tol 1e-6
  r = config.lora.rank
  np.testing.assert_allclose(out["ratio"], np.maximum(np.floor(np.asarray(rho) * r + 1e-4), 1) / r)
  want_min = online.min_round_latency(want, tcfg)
  assert float(out["min_round_latency"]) == pytest.approx(float(want_min), rel=1e-5)


def test_min_round_latency_matches_a_grid_search():
  """Two clients at ρ_min: the smallest max latency over the split x, 1 − x, by a numpy grid of
  200,001 shares (float64)."""
  cfg = online.OnlineConfig(latency_budget=0.5, rho_min=0.25).with_band(2e6)
  g = np.array([3e-12, 4e-11])
  fixed = np.array([0.02, 0.08])
  inputs = online.make_inputs(g, C0, C1, fixed, jnp.full((2,), 0.5), jnp.ones((2, 1)), CHAN)
  got = float(online.min_round_latency(inputs, cfg))
  x = np.linspace(1e-6, 1 - 1e-6, 200_001)
  snr = np.asarray(inputs.snr, np.float64)
  bits = C0 + C1 * 0.25
  lat = lambda share, k: fixed[k] + bits / (2e6 * share * np.log2(1 + snr[k] / share))  # noqa: E731
  want = np.min(np.maximum(lat(x, 0), lat(1 - x, 1)))
  assert got == pytest.approx(want, rel=2e-4)


def _budget_warnings(caught):
  return [str(w.message) for w in caught if issubclass(w.category, RunWarning)
          and "cannot be met by any ratio" in str(w.message)]


def test_infeasible_budget_is_warned_once_before_round_1_and_counted():
  """τ̄ = 0.05 s on 2 MHz: no ratio meets it. One warning before round 1 naming τ̄, the smallest
  latency and the keys; each round records the flag, and no round warns again."""
  config, inputs, (init_state, plan, deliver, _) = _uplink(**{"tsfa.online.latency_budget": 0.05})
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    st = init_state(inputs)
    msgs = _budget_warnings(caught)
    assert len(msgs) == 1
    assert "τ̄ = 0.05 s" in msgs[0] and "tsfa.online.latency_budget" in msgs[0]
    assert "fed.clients_per_round" in msgs[0] and "latency_budget_infeasible_rounds" in msgs[0]
    recs = []
    for t in range(3):
      ids = jnp.array([t % 4, (t + 1) % 4])
      out, st = plan(st, ids, jax.random.PRNGKey(t), inputs)
      bits = C0 + C1 * out["ratio"]
      _, st, rec = deliver(st, out, bits, jnp.full((2, config.lora.rank), 1.0 / config.lora.rank))
      recs.append(rec)
    assert len(_budget_warnings(caught)) == 1
  assert all(r["latency_budget_infeasible"] and r["min_round_latency"] > 0.05 for r in recs)
  smallest = float(msgs[0].split("takes at least ")[1].split(" s")[0])
  assert smallest > 0.05


def test_infeasible_round_warns_once_when_the_expected_round_is_feasible():
  """τ̄ = 2 s, met by the expected round: no warning before round 1; rounds whose smallest latency
  (`min_round_latency`, here given) exceeds τ̄ are flagged, the first one warns, once, naming τ̄."""
  config, inputs, (init_state, plan, deliver, _) = _uplink(**{"tsfa.online.latency_budget": 2.0})
  r = config.lora.rank
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    st = init_state(inputs)
    assert _budget_warnings(caught) == []
    flags = []
    for lat in (0.5, 3.0, 1.0, 4.0):  # the round's smallest latency at ρ_min (s)
      out = {"ratio": jnp.full((2,), 0.5), "bandwidth_hz": jnp.full((2,), 1e6),
             "gain": jnp.full((2,), 1e-11), "gain_est": jnp.full((2,), 1e-11),
             "compute_latency": jnp.full((2,), 0.01), "downlink_latency": jnp.zeros((2,)),
             "ids": jnp.array([0, 1]), "min_round_latency": jnp.float32(lat)}
      _, st, rec = deliver(st, out, jnp.full((2,), 1e5), jnp.full((2, r), 1.0 / r))
      flags.append(rec["latency_budget_infeasible"])
    msgs = _budget_warnings(caught)
  assert flags == [False, True, False, True]
  assert len(msgs) == 1 and "τ̄ = 2.0 s" in msgs[0] and "at least 3 s" in msgs[0]


def test_summary_counts_the_infeasible_rounds():
  from fedlora.summary import budget_summary
  recs = [{"min_round_latency": 0.4, "latency_budget_infeasible": False},
          {"min_round_latency": 0.7, "latency_budget_infeasible": True}]
  assert budget_summary(recs) == {"latency_budget_infeasible_rounds": 1, "max_min_round_latency_s": 0.7}
  assert budget_summary([{"round": 1}]) == {}  # no TSFA uplink: no keys


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5, math.nan, math.inf])
def test_bad_miss_prob_is_a_config_error_naming_it(value):
  with pytest.raises(ConfigError, match=r"miss_prob"):
    typed(tiny_config(**{"tsfa.online.miss_prob": value}))


def test_miss_prob_beyond_the_csi_floor_is_refused_with_both_keys():
  """1 + σ·z_(1−p) must exceed the estimate's floor 0.01: σ = 2, p = 0.9 gives 1 − 2·1.28 < 0."""
  ov = {"wireless.enabled": True, "tsfa.online.robust": True, "tsfa.online.miss_prob": 0.9,
        "wireless.channel.csi_error_std": 2.0}
  with pytest.raises(ConfigError, match=r"miss_prob=0\.9.*csi_error_std=2\.0"):
    typed(tiny_config(**ov))
  with pytest.raises(ValueError, match="miss_prob"):
    wch.csi_quantile_factor(0.2, 1.0)
  typed(tiny_config(**dict(ov, **{"tsfa.online.miss_prob": 0.5})))  # p <= 0.5 always works


def test_robust_false_is_bit_identical_on_the_tiny_run(tmp_path):
  """configs/wireless_compare.py:tiny with csi_error_std = 0.2 and robust=False (the default): every
  value of metrics.jsonl equals the run recorded before the option existed
  (tests/fixtures/wireless_tiny_csi02_metrics.json; timings aside); summary.json counts the rounds."""
  from fedlora import train
  from fedlora.utils.metrics import read_metrics
  from fedlora.utils.overrides import apply_overrides
  with open(os.path.join(ROOT, "tests", "fixtures", "wireless_tiny_csi02_metrics.json")) as f:
    ref = json.load(f)["metrics"]
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import wireless_compare  # noqa: PLC0415
  c = apply_overrides(wireless_compare.get_config("tiny"), {
      "wireless.channel.csi_error_std": 0.2, "workdir": str(tmp_path / "run"), "progress": False})
  summary = train.run(c)
  got = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
  assert len(got) == len(ref) == 2
  for r, g in zip(ref, got):
    for k, v in r.items():
      assert g[k] == v, (r["round"], k)
    assert g["latency_budget_infeasible"] is False and g["min_round_latency"] < 1.0
  assert summary["latency_budget_infeasible_rounds"] == 0

"""Methods and their uplink accounting on the tiny config: downlink latency and bits, each method's
own payload model under TSFA, FFA's frozen A, attempted-upload and profile bits."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from fedlora import lora, train
from fedlora.cli import parse_config
from fedlora.config import typed
from fedlora.methods.base import UplinkInputs
from fedlora.wireless.channel import ChannelConfig
from fedlora.wireless.latency import downlink_latency, shannon_rate

WIRELESS = {"wireless.enabled": True, "wireless.deadline_factor": math.inf,
            "wireless.channel.bandwidth_hz": 2e6, "tsfa.online.latency_budget": 1.0,
            "checkpoint.every": 10}


def _inputs(exp):
  """What the round passes a method's uplink (fedlora/fed/algorithm.py)."""
  return UplinkInputs(exp.parts.trainable, exp.parts.frozen, exp.clients.num_examples,
                      exp.round_fns.drift.upload_bits)


def _plan_deliver(exp, bits):
  m = exp.method
  inputs = _inputs(exp)
  st = m.init_state(inputs)
  ids = jnp.array([0, 3])
  plan, st = m.plan(st, ids, jax.random.PRNGKey(3), inputs)
  prof = jnp.full((2, exp.config.lora.rank), 1.0 / exp.config.lora.rank)
  _, _, rec = m.deliver(st, plan, jnp.asarray(bits, jnp.float32), prof)
  return plan, rec


def test_downlink_latency_is_added_when_enabled():
  """downlink=True: each client's latency grows by exactly the broadcast of the global trainable
  tree (q bits per value) over the full band at the downlink power; False: no downlink term."""
  ov = {**WIRELESS, "method.name": "soft", "method.allocation": "fixed"}
  off = train.build(tiny_config(**ov))
  on = train.build(tiny_config(**ov, **{"wireless.channel.downlink": True}))
  bits = [1e5, 2e5]
  p_off, r_off = _plan_deliver(off, bits)
  p_on, r_on = _plan_deliver(on, bits)
  np.testing.assert_array_equal(r_off["downlink_latency"], 0.0)
  size = lora.tree_size(on.parts.trainable)
  assert on.method.broadcast_bits == 32 * size
  chan = on.config.wireless.channel
  assert isinstance(chan, ChannelConfig)
  want = np.asarray(downlink_latency(32.0 * size, p_on["gain"], chan))
  assert np.all(want > 0)
  np.testing.assert_allclose(r_on["downlink_latency"], want, rtol=1e-6)
  np.testing.assert_allclose(r_on["latency"] - r_off["latency"], want, rtol=1e-4)


@pytest.mark.parametrize("name", ["topk", "randk", "svd"])
def test_baselines_under_tsfa_plan_with_their_own_payload(name):
  """Under TSFA a baseline's planned latency is compute + (c0 + c1·ρ)/R with ITS payload model
  (top-k's index bits, random-k's seed, SVD's r²·q rotation), not SOFT's. (random-k's seed is
  set to 7 bits: with 32 it equals SOFT's 4 adapters × 8 mask bits on this tiny model.)"""
  exp = train.build(tiny_config(**WIRELESS, **{"method.name": name, "method.allocation": "tsfa",
                                               "compress.seed_bits": 7}))
  soft = train.build(tiny_config(**WIRELESS, **{"method.name": "soft"}))
  own = exp.method.compressor.payload(exp.parts.trainable)
  assert own != soft.method.compressor.payload(soft.parts.trainable)
  m = exp.method
  ids = jnp.array([0, 3])
  inputs = _inputs(exp)
  plan, _ = m.plan(m.init_state(inputs), ids, jax.random.PRNGKey(3), inputs)
  chan = exp.config.wireless.channel
  assert isinstance(chan, ChannelConfig)
  rate = np.asarray(shannon_rate(plan["bandwidth_hz"], plan["gain_est"], chan))
  rho = np.asarray(plan["ratio"])
  if name == "svd":   # rank grid: ρ was rounded down after the solve; the plan holds the solver's
    assert np.all(np.isclose(rho * exp.config.lora.rank, np.round(rho * exp.config.lora.rank)))
    return
  lat = np.asarray(plan["compute_latency"]) + (own[0] + own[1] * rho) / rate
  np.testing.assert_allclose(float(plan["planned_round_latency"]), lat.max(), rtol=1e-4)


@pytest.mark.parametrize("q,q_dl", [(16, 0), (16, 32), (32, 16)])
def test_downlink_bytes_use_the_configured_bits_per_value(tmp_path, q, q_dl):
  c = tiny_config(**{"compress.bits_per_value": q, "compress.downlink_bits_per_value": q_dl,
                     "fed.rounds": 1, "workdir": str(tmp_path)})
  exp = train.build(c)
  _, rec = exp.algorithm.apply(exp.algorithm.init(), 1)
  per_value = q_dl or q
  assert rec["downlink_bytes_round"] == 2 * lora.tree_size(exp.parts.trainable) * per_value / 8


def test_ffa_broadcasts_its_frozen_a_once_and_never_uploads_it(tmp_path):
  c = tiny_config(**{"method.name": "ffa", "fed.rounds": 2, "workdir": str(tmp_path)})
  exp = train.build(c)
  sizes = {"a": 0, "all": lora.tree_size(exp.parts.trainable)}
  for path, x in jax.tree_util.tree_leaves_with_path(exp.parts.trainable):
    if str(getattr(path[-1], "key", "")) == "lora_a":
      sizes["a"] += int(x.size)
  assert sizes["a"] > 0
  st = exp.algorithm.init()
  st, r1 = exp.algorithm.apply(st, 1)
  st, r2 = exp.algorithm.apply(st, 2)
  n_clients, k = c.data.num_clients, c.fed.clients_per_round
  per_round = k * (sizes["all"] - sizes["a"]) * 32 / 8
  assert r2["downlink_bytes_round"] == per_round
  assert r1["downlink_bytes_round"] == per_round + n_clients * sizes["a"] * 32 / 8
  np.testing.assert_array_equal(r1["uplink_bits"], (sizes["all"] - sizes["a"]) * 32.0)
  c0, c1 = exp.method.compressor.payload(exp.parts.trainable)
  assert (c0, c1) == ((sizes["all"] - sizes["a"]) * 32.0, 0.0)


def test_dropped_uploads_and_profiles_are_counted(tmp_path):
  """All uploads miss the deadline: nothing counts as delivered uplink, but the attempted payload
  and the TSFA profiles (32·r bits per client) are recorded, per round and in the summary."""
  c = tiny_config(**{"workdir": str(tmp_path), "fed.rounds": 2, "method.name": "soft",
                     "wireless.enabled": True, "wireless.deadline_factor": 1e-9,
                     "checkpoint.every": 10})
  s = train.run(c)
  from fedlora.utils.metrics import read_metrics
  recs = read_metrics(str(tmp_path / "metrics.jsonl"))
  r = c.lora.rank
  for rec in recs:
    assert rec["uplink_bytes_round"] == 0 and rec["deadline_misses"] == 2
    assert rec["uplink_attempted_bytes_round"] == pytest.approx(sum(rec["uplink_bits"]) / 8)
    assert rec["uplink_attempted_bytes_round"] > 0
    assert rec["profile_bytes_round"] == 2 * 32 * r / 8
  assert s["cum_uplink_attempted_bytes"] == pytest.approx(
      sum(rec["uplink_attempted_bytes_round"] for rec in recs))
  assert s["cum_profile_bytes"] == 2 * 2 * 32 * r / 8 and s["cum_uplink_bytes"] == 0
  # a fixed-ratio method does not use profiles: none are counted
  c2 = tiny_config(**{"workdir": str(tmp_path / "f"), "fed.rounds": 1, "method.name": "topk",
                      "wireless.enabled": True, "checkpoint.every": 10})
  exp = train.build(c2)
  assert exp.method.allocation == "fixed" and exp.method.profile_bits == 0.0


def test_method_registry_declares_everything():
  """Each built-in method declares its compressor and defaults; names are validated."""
  from fedlora.methods import get_spec, method_names
  assert set(method_names()) >= {"ideal", "soft", "topk", "randk", "svd", "ffa"}
  assert get_spec("soft").allocation == "tsfa" and get_spec("soft").rank_grid
  assert get_spec("topk").allocation == "fixed" and get_spec("ffa").freeze == "lora_a$"
  with pytest.raises(ValueError, match="method.allocation='greedy'"):
    from fedlora.methods import build_method
    build_method(typed(tiny_config(**{"method.allocation": "greedy"})))
  with pytest.raises(ValueError, match="method.ortho_weight=-1"):
    build_method(typed(tiny_config(**{"method.name": "soft", "method.ortho_weight": -1.0})))
  with pytest.raises(ValueError, match="method.ortho_b='orth'"):
    build_method(typed(tiny_config(**{"method.name": "soft", "method.ortho_b": "orth"})))


def test_soft_penalty_follows_method_ortho_b():
  """The loss gets the regulariser the config names: 'cosine' sees B's direction, not its size."""
  import jax
  import jax.numpy as jnp
  from fedlora.methods import build_method
  from fedlora.soft import ortho_penalty
  rng = jax.random.split(jax.random.PRNGKey(0), 2)
  tree = {"l": {"lora_a": jax.random.normal(rng[0], (6, 3)), "lora_b": 1e-3 * jax.random.normal(rng[1], (3, 5))}}
  for b_term in ("gram", "cosine"):
    m = build_method(typed(tiny_config(**{"method.name": "soft", "method.ortho_b": b_term})))
    assert float(m.penalty(tree)) == float(ortho_penalty(tree, b_term))
  assert float(ortho_penalty(tree, "cosine")) > float(ortho_penalty(tree, "gram")) + 1e-3


def test_every_option_is_settable_from_the_command_line():
  """The compressors' own keys, the downlink, and all TSFA online/offline options are config keys."""
  import os
  from conftest import ROOT
  args = ["--config.compress.index_coding=bitmap", "--config.compress.unbiased=True",
          "--config.compress.seed_bits=7", "--config.compress.rcond=0.01",
          "--config.compress.score_on=product", "--config.compress.downlink_bits_per_value=16",
          "--config.tsfa.online.continuation=0.9", "--config.tsfa.online.precondition=False",
          "--config.tsfa.online.share_floor=0.001", "--config.tsfa.online.tie_break=0.01",
          "--config.tsfa.online.accelerate=False", "--config.tsfa.online.max_backtracks=5",
          "--config.tsfa.online.start_temperature=0.2", "--config.tsfa.offline.enabled=True",
          "--config.tsfa.offline.r_max=16", "--config.tsfa.offline.pilot_rounds=2",
          "--config.method.allocation=tsfa"]
  c, _ = parse_config(["prog", "--config", os.path.join(ROOT, "configs/tiny.py"), *args])
  assert c.compress.index_coding == "bitmap" and c.compress.unbiased is True
  assert c.compress.seed_bits == 7 and c.compress.rcond == 0.01 and c.compress.score_on == "product"
  assert c.tsfa.online.continuation == 0.9 and c.tsfa.online.precondition is False
  assert c.tsfa.offline.r_max == 16 and c.method.allocation == "tsfa"
  from fedlora.tsfa.online import OnlineConfig
  oc = OnlineConfig.from_dict(c.tsfa.online.to_dict()).with_band(1e6)  # the section tsfa.online
  assert isinstance(oc, OnlineConfig) and oc.bandwidth_hz == 1e6
  assert oc.max_backtracks == 5 and oc.accelerate is False and oc.start_temperature == 0.2

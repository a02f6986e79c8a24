"""Heterogeneous client LoRA ranks (fedlora/lora/hetrank.py) and the aggregation rules
(fedlora/aggregation/): FLoRA's stacking, HetLoRA's per-component mean against numpy, rank masks in
the vmapped client phase, bits at each client's own rank, config errors, and homogeneous runs
unchanged (metrics of the base commit recorded in tests/fixtures/hetrank_base_*.jsonl)."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from fedlora.aggregation import AGGREGATIONS
from fedlora.config import typed
from fedlora.lora.hetrank import assign_ranks, own_rank_profile, rank_mask
from fedlora.section import ConfigError
from fedlora.server.aggregate import weighted_mean

R = 4


def _tree(rng, lead=(), d_in=5, d_out=3, classes=2):
  """A trainable-like tree: two adapters and a dense head, leaves with leading axes `lead`."""
  f = lambda *s: jnp.asarray(rng.normal(size=lead + s), jnp.float32)  # noqa: E731
  return {"enc": {"0": {"q": {"lora_a": f(d_in, R), "lora_b": f(R, d_out)}},
                  "1": {"v": {"lora_a": f(d_in, R), "lora_b": f(R, d_out)}}},
          "classifier": {"kernel": f(d_out, classes), "bias": f(classes)}}


def _zero_padded(deltas, ranks):
  m = np.asarray(rank_mask(jnp.asarray(ranks), R))  # [K, R]

  def pad(path, x):
    name = path[-1].key
    if name == "lora_a":
      return x * m[:, None, :]
    if name == "lora_b":
      return x * m[:, :, None]
    return x
  return jax.tree_util.tree_map_with_path(pad, deltas)


def test_flora_stacking_is_the_weighted_mean_of_products():
  rng = np.random.default_rng(0)
  k, d_in, d_out = 3, 6, 5
  a = jnp.asarray(rng.normal(size=(k, d_in, R)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(k, R, d_out)), jnp.float32)
  p = jnp.asarray([0.5, 0.3, 0.2], jnp.float32)
  from fedlora.aggregation.flora import stack
  a_st, b_st = stack(a, b, p)
  chex.assert_shape(a_st, (d_in, k * R))
  chex.assert_shape(b_st, (k * R, d_out))
  want = sum(float(p[i]) * np.asarray(a[i]) @ np.asarray(b[i]) for i in range(k))
  chex.assert_trees_all_close(a_st @ b_st, want, atol=1e-5, rtol=1e-5)


def test_flora_server_merges_products_and_restarts_factors():
  """The server's merged ΔW = lr·s·Σ p_k A_k B_k with A_k = trunc_k(A) + ΔA_k (zero-padded ranks),
  the factors restart at the initial ones, the base the clients see is W_0 + merged."""
  rng = np.random.default_rng(1)
  ranks, w, scale, lr = [1, 4, 2], np.array([3.0, 1.0, 2.0], np.float32), 2.0, 0.5
  agg = AGGREGATIONS.get("flora").obj.build(None, scale)
  glob = _tree(rng)
  state = agg.init(glob)
  deltas = _zero_padded(_tree(rng, (3,)), ranks)
  masks = rank_mask(jnp.asarray(ranks), R)
  update, state = agg.mean(glob, state, deltas, jnp.asarray(w), masks, weighted_mean, lr)
  p = w / w.sum()
  for layer, name in (("0", "q"), ("1", "v")):
    g, d = glob["enc"][layer][name], deltas["enc"][layer][name]
    want = 0.0
    for i, r in enumerate(ranks):
      a_i = np.asarray(g["lora_a"])[:, :r] + np.asarray(d["lora_a"][i])[:, :r]
      b_i = np.asarray(g["lora_b"])[:r] + np.asarray(d["lora_b"][i])[:r]
      want = want + p[i] * a_i @ b_i
    chex.assert_trees_all_close(state["merged"]["enc"][layer][name]["kernel"], lr * scale * want,
                                atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(update["classifier"], weighted_mean(deltas, jnp.asarray(w))["classifier"])
  moved = jax.tree_util.tree_map(lambda x: x + 1.0, glob)
  reset = agg.finish(moved, state)
  chex.assert_trees_all_equal(reset["enc"], glob["enc"])
  chex.assert_trees_all_equal(reset["classifier"], moved["classifier"])
  frozen = {"enc": {"0": {"q": {"kernel": jnp.ones((5, 3)), "bias": jnp.zeros(3)}},
                    "1": {"v": {"kernel": jnp.ones((5, 3)), "bias": jnp.zeros(3)}}}}
  base = agg.base(frozen, state)
  chex.assert_trees_all_close(base["enc"]["1"]["v"]["kernel"],
                              1.0 + state["merged"]["enc"]["1"]["v"]["kernel"])
  chex.assert_trees_all_equal(base["enc"]["1"]["v"]["bias"], frozen["enc"]["1"]["v"]["bias"])


def test_hetlora_equals_numpy_reference():
  rng = np.random.default_rng(2)
  ranks = [1, 4, 2, 3]
  w = np.array([2.0, 0.0, 1.0, 5.0], np.float32)  # client 1 (the only rank-4 one) did not arrive
  glob = _tree(rng)
  deltas = _zero_padded(_tree(rng, (4,)), ranks)
  agg = AGGREGATIONS.get("hetlora").obj.build(None, 1.0)
  got, _ = agg.mean(glob, {}, deltas, jnp.asarray(w), rank_mask(jnp.asarray(ranks), R), weighted_mean, 1.0)
  for layer, name in (("0", "q"), ("1", "v")):
    for leaf in ("lora_a", "lora_b"):
      d = np.asarray(deltas["enc"][layer][name][leaf])
      want = np.zeros(d.shape[1:], np.float64)
      for i in range(R):  # component i: mean over the clients holding it
        num, den = 0.0, 0.0
        for k, r in enumerate(ranks):
          if r > i:
            comp = d[k][:, i] if leaf == "lora_a" else d[k][i, :]
            num, den = num + w[k] * comp, den + w[k]
        val = num / den if den > 0 else 0.0
        if leaf == "lora_a":
          want[:, i] = val
        else:
          want[i, :] = val
      np.testing.assert_allclose(got["enc"][layer][name][leaf], want, rtol=1e-5, atol=1e-6)
  assert not np.any(np.asarray(got["enc"]["0"]["q"]["lora_a"])[:, 3])  # held only by client 1 (w=0)
  np.testing.assert_allclose(got["classifier"]["kernel"],
                             np.tensordot(w / w.sum(), np.asarray(deltas["classifier"]["kernel"]), 1),
                             rtol=1e-5, atol=1e-6)


def test_own_rank_profile_reads_the_clients_own_ratio():
  p = jnp.asarray([0.6, 0.4, 0.0, 0.0], jnp.float32)  # a rank-2 client padded to R = 4
  q = own_rank_profile(p, 2, 4)
  np.testing.assert_allclose(q, [0.3, 0.3, 0.2, 0.2], atol=1e-6)  # ρ = 1/2 keeps its first component
  np.testing.assert_allclose(own_rank_profile(p[:4] * 0 + 0.25, 4, 4), 0.25, atol=1e-6)


def test_speed_quantiles_give_slowest_the_smallest_rank():
  lora = typed(tiny_config(**{"lora.client_ranks": (8, 2), "lora.client_ranks_by": "speed"})).lora
  speeds = np.array([5.0, 1.0, 3.0, 2.0])
  np.testing.assert_array_equal(assign_ranks(lora, 4, speeds), [8, 2, 8, 2])
  assert assign_ranks(typed(tiny_config()).lora, 4) is None


@pytest.mark.parametrize("ranks, by, why", [
    ((2, 4, 8), "client", "one rank per client"),
    ((2, 4, 8, 16), "client", "in [1, lora.rank=8]"),
    ((0, 4, 8, 8), "client", "in [1, lora.rank=8]"),
    ((-1, 4), "speed", "in [1, lora.rank=8]"),
    ((2, 2, 2, 2, 2), "speed", "at most data.num_clients=4"),
    ((2.5, 4, 8, 8), "client", "a tuple of integers"),
])
def test_bad_client_ranks_is_a_config_error(ranks, by, why):
  with pytest.raises(ConfigError, match=r"lora\.client_ranks") as e:
    typed(tiny_config(**{"lora.client_ranks": ranks, "lora.client_ranks_by": by}))
  assert why in str(e.value)


def test_bad_aggregation_is_a_config_error():
  with pytest.raises(ConfigError, match=r"server\.aggregation='mean'.*fedavg.*flora.*hetlora"):
    typed(tiny_config(**{"server.aggregation": "mean"}))
  with pytest.raises(ConfigError, match=r"server\.name='fedadam'.*flora"):
    typed(tiny_config(**{"server.aggregation": "flora", "server.name": "fedadam"}))
  with pytest.raises(ConfigError, match=r"lora\.client_ranks_by='fast'"):
    typed(tiny_config(**{"lora.client_ranks_by": "fast"}))


@pytest.fixture(scope="module")
def het_exp():
  from fedlora.train import build
  return build(tiny_config(**{"lora.client_ranks": (2, 8, 4, 1), "server.aggregation": "hetlora"}))


def test_masked_components_stay_zero_and_bits_follow_own_rank(het_exp):
  """Vmapped clients of ranks 2, 8, 4, 1: each update is exactly 0 beyond the client's rank (its
  padded components got zero gradient from a zero start) and nonzero within it; each upload's bits are
  the dense bits of the head plus (d_in + d_out)·r_k·32 per adapter."""
  exp = het_exp
  ranks = np.array([2, 8, 4, 1])
  ids = jnp.arange(4)
  g = exp.parts.trainable
  states = exp.round_fns.init_client_states(g, 4)
  ctx = exp.round_fns.context(exp.algorithm.init()["server"], 1)
  out, new_states = exp.round_fns.client_phase(g, exp.parts.frozen, exp.clients, ids,
                                               jax.random.PRNGKey(3), jnp.ones((4,)), states, ctx)
  np.testing.assert_array_equal(new_states["rank"], ranks)
  from fedlora.compress.base import adapter_pairs, dense_leaves
  pairs = adapter_pairs(out.delta)
  assert pairs
  for _, a, b in pairs:
    for k, r in enumerate(ranks):
      assert not np.any(np.asarray(a[k])[:, r:]) and not np.any(np.asarray(b[k])[r:, :])
      assert np.any(np.asarray(b[k])[:r, :])
  head = sum(int(np.prod(x.shape[1:])) for _, x in dense_leaves(out.delta)) * 32
  per_rank = sum((a.shape[1] + b.shape[2]) * 32 for _, a, b in pairs)
  np.testing.assert_array_equal(np.asarray(out.bits), head + per_rank * ranks)
  # the server's hetlora mean of these uploads keeps component 7 from the rank-8 client alone
  new_tr, _ = exp.round_fns.server_phase(g, exp.algorithm.init()["server"], out.delta,
                                         jnp.ones((4,)), 1, out.control_delta, jnp.asarray(ranks))
  (_, a0, _), (_, a_new, _) = adapter_pairs(g)[0], adapter_pairs(new_tr)[0]
  chex.assert_trees_all_close(a_new[:, 7] - a0[:, 7], pairs[0][1][1][:, 7], atol=1e-6)


def _metrics(path):
  return [{k: v for k, v in json.loads(line).items() if not k.endswith("_seconds")}
          for line in open(path)]


def test_homogeneous_ranks_reproduce_the_base_commit(tmp_path):
  """client_ranks=() (the default) and server.aggregation='fedavg': the metrics of
  configs/wireless_compare.py:tiny (SOFT + TSFA over the channel, 3 rounds) are bit-identical to those
  the commit before heterogeneous ranks recorded (tests/fixtures/hetrank_base_*.jsonl)."""
  import sys
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import wireless_compare
  from fedlora.train import run
  from fedlora.utils.overrides import apply_overrides
  c = apply_overrides(wireless_compare.get_config("tiny"),
                      {"fed.rounds": 3, "workdir": str(tmp_path / "w"), "progress": False})
  run(c)
  want = _metrics(os.path.join(ROOT, "tests/fixtures/hetrank_base_configs_wireless_compare_py_tiny.jsonl"))
  got = _metrics(tmp_path / "w" / "metrics.jsonl")
  # the records gained only the latency-budget check's two keys (tsfa.online's infeasible-budget check)
  assert all(set(g) - set(w) == {"min_round_latency", "latency_budget_infeasible"} for g, w in zip(got, want))
  assert [{k: g[k] for k in w} for g, w in zip(got, want)] == want and len(got) == len(want)

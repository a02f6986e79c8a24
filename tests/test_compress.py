"""Uplink compressors: registry/config validation, 'none', 'topk', 'randk', 'svd', vmap and EF."""
from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fedlora.compress import get_compressor, map_adapters, map_dense
from fedlora.compress.base import adapter_pairs, dense_leaves
from fedlora.section import ConfigError

SHAPES = {"q": (12, 4, 10), "v": (9, 6, 7)}   # name: (d_in, r, d_out)
KEY = jax.random.PRNGKey(0)


def k_of(rho: float, n: int) -> int:
  return min(n, max(1, math.ceil(Fraction(str(rho)) * n)))


def make_tree(seed: int, shapes=SHAPES, scale=1.0):
  rng = np.random.default_rng(seed)
  tree = {"enc": {}, "head": {"kernel": rng.normal(size=(5, 3)).astype(np.float32),
                              "bias": rng.normal(size=(3,)).astype(np.float32)}}
  for name, (d_in, r, d_out) in shapes.items():
    tree["enc"][name] = {"lora_a": (scale * rng.normal(size=(d_in, r))).astype(np.float32),
                         "lora_b": (scale * rng.normal(size=(r, d_out))).astype(np.float32)}
  return jax.tree_util.tree_map(jnp.asarray, tree)


def leaves(t):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(t)]


N_DENSE = 5 * 3 + 3


# -------------------------------------------------------------------------------- utilities/config

def test_map_adapters_and_map_dense():
  tree = make_tree(0)
  other = jax.tree_util.tree_map(lambda x: 2 * x, tree)
  other["enc"]["q"] = dict(other["enc"]["q"], kernel=jnp.ones((12, 10)))   # extra key in rest tree
  seen = []

  def fn(a, b, o):
    seen.append((a.shape, b.shape, o[0].shape, o[1].shape))
    return a + o[0], b * 0

  out = jax.jit(lambda t, o: map_adapters(fn, t, o))(tree, other)
  assert sorted(seen) == sorted([((12, 4), (4, 10), (12, 4), (4, 10)),
                                 ((9, 6), (6, 7), (9, 6), (6, 7))])
  np.testing.assert_allclose(out["enc"]["v"]["lora_a"], 3 * tree["enc"]["v"]["lora_a"], rtol=1e-6)
  assert np.all(np.asarray(out["enc"]["q"]["lora_b"]) == 0)
  np.testing.assert_array_equal(out["head"]["kernel"], tree["head"]["kernel"])
  dd = map_dense(lambda x, o: x - o, tree, other)
  np.testing.assert_allclose(dd["head"]["bias"], -tree["head"]["bias"])
  np.testing.assert_array_equal(dd["enc"]["q"]["lora_a"], tree["enc"]["q"]["lora_a"])
  assert [p for p, *_ in adapter_pairs(tree)] == ["enc/q", "enc/v"]
  assert [p for p, _ in dense_leaves(tree)] == ["head/bias", "head/kernel"]


def test_num_keep_is_exact_decimal_ceil():
  """float32 ρ·n overshoots an integer for e.g. ρ=0.6, n=25 (15.000001); num_keep must still give 15."""
  from fedlora.compress import num_keep
  ratios = np.arange(1, 101) / 100
  f = jax.jit(jax.vmap(num_keep, in_axes=(0, None)), static_argnums=1)
  for n in (1, 3, 10, 25, 45, 50, 75, 90, 128, 6144):
    got = np.asarray(f(jnp.asarray(ratios, jnp.float32), n))
    want = [k_of(float(x), n) for x in ratios]
    np.testing.assert_array_equal(got, want, err_msg=str(n))
  assert int(num_keep(jnp.float32(1e-9), 7)) == 1 and int(num_keep(jnp.float32(1.0), 7)) == 7


@pytest.mark.parametrize("name,cfg,match", [
    ("fancy", {}, r"compress='fancy' is not allowed: one of \(.*'none'.*'soft'"),
    ("soft", {"bits_per_value": 8}, r"compress.bits_per_value=8 is not allowed: one of \(16, 32\)"),
    ("none", {"bits_per_value": 32.0}, r"bits_per_value=32.0"),
    ("soft", {"score_on": "bogus"}, r"compress.score_on='bogus' is not allowed: one of \('delta', 'updated', 'product'\)"),
    ("soft", {"error_feedback": "yes"}, r"compress.error_feedback='yes' is not allowed: True or False"),
    ("topk", {"index_coding": "golomb"}, r"index_coding='golomb'"),
    ("randk", {"unbiased": 1}, r"unbiased=1"),
    ("randk", {"seed_bits": -4}, r"seed_bits=-4"),
    ("svd", {"rcond": 2.0}, r"rcond=2.0"),
])
def test_get_compressor_validates(name, cfg, match):
  with pytest.raises(ValueError, match=match):
    get_compressor(name, ml_collections.ConfigDict(cfg))


def test_get_compressor_accepts_configdict_and_names_foreign_keys():
  """A ConfigDict section works; a key the compress section does not have (another section's, or a
  typo) is an error naming it, not silently ignored."""
  cfg = ml_collections.ConfigDict({"bits_per_value": 16, "score_on": "delta"})
  tree = make_tree(1)
  out = get_compressor("soft", cfg).update((), tree, jnp.float32(1.0), KEY, None)
  expect = sum((d + o) * r * 16 + r for d, r, o in SHAPES.values()) + N_DENSE * 16
  assert float(out.bits) == expect
  bad = ml_collections.ConfigDict({"bits_per_value": 16, "ortho_weight": 1e-2, "name": "soft"})
  with pytest.raises(ConfigError, match=r"config\.compress has no key\(s\) \['name', 'ortho_weight'\]"):
    get_compressor("soft", bad)


@pytest.mark.parametrize("q", [32, 16])
def test_none_is_identity(q):
  tree = make_tree(2)
  c = get_compressor("none", {"bits_per_value": q})
  out = jax.jit(c.update)(c.init(tree), tree, jnp.float32(0.1), KEY, None)
  for x, y in zip(leaves(out.delta), leaves(tree)):
    np.testing.assert_array_equal(x, y)
  total = sum(d * r + r * o for d, r, o in SHAPES.values()) + N_DENSE
  assert float(out.bits) == total * q and out.state == ()


# ------------------------------------------------------------------------------------------- topk

@pytest.mark.parametrize("coding", ["min", "indices", "bitmap"])
def test_topk_keeps_k_largest_and_counts_bits(coding):
  tree = make_tree(3)
  c = get_compressor("topk", {"index_coding": coding})
  upd = jax.jit(c.update)
  for rho in (0.01, 0.1, 0.3, 0.7, 1.0):
    out = upd((), tree, jnp.float32(rho), KEY, None)
    bits = N_DENSE * 32
    for name in SHAPES:
      for key in ("lora_a", "lora_b"):
        x = np.asarray(tree["enc"][name][key]).ravel()
        s = np.asarray(out.delta["enc"][name][key]).ravel()
        n = x.size
        k = k_of(rho, n)
        kept = np.flatnonzero(s)
        assert len(kept) == k, (rho, name, key)
        np.testing.assert_array_equal(np.sort(kept), np.sort(np.argsort(-np.abs(x), kind="stable")[:k]))
        np.testing.assert_array_equal(s[kept], x[kept])
        ib = {"indices": k * math.ceil(math.log2(n)), "bitmap": n,
              "min": min(k * math.ceil(math.log2(n)), n)}[coding]
        bits += k * 32 + ib
    assert float(out.bits) == bits, rho
    np.testing.assert_array_equal(out.delta["head"]["kernel"], tree["head"]["kernel"])


# ------------------------------------------------------------------------------------------- randk

def test_randk_keeps_k_depends_on_key_and_counts_bits():
  tree = make_tree(4)
  c = get_compressor("randk", {})
  upd = jax.jit(c.update)
  rho = 0.3
  o1 = upd((), tree, jnp.float32(rho), jax.random.PRNGKey(1), None)
  o1b = upd((), tree, jnp.float32(rho), jax.random.PRNGKey(1), None)
  o2 = upd((), tree, jnp.float32(rho), jax.random.PRNGKey(2), None)
  bits = N_DENSE * 32 + 32
  for name in SHAPES:
    for key in ("lora_a", "lora_b"):
      x = np.asarray(tree["enc"][name][key])
      s1, s1b, s2 = (np.asarray(o.delta["enc"][name][key]) for o in (o1, o1b, o2))
      k = k_of(rho, x.size)
      assert np.count_nonzero(s1) == k and np.count_nonzero(s2) == k
      np.testing.assert_array_equal(s1, s1b)
      assert not np.array_equal(s1 != 0, s2 != 0)
      np.testing.assert_array_equal(s1[s1 != 0], x[s1 != 0])
      bits += k * 32
  assert float(o1.bits) == bits
  # lora_a and lora_b of the same layer, and different layers, use different masks
  m_a = np.asarray(o1.delta["enc"]["q"]["lora_a"]) != 0
  m_a2 = np.asarray(o1.delta["enc"]["v"]["lora_a"]) != 0
  assert not np.array_equal(m_a[:9, :4], m_a2[:9, :4])


def test_randk_unbiased_scaling_and_mean():
  tree = {"l": {"lora_a": jnp.asarray(np.arange(1, 13, dtype=np.float32).reshape(4, 3)),
                "lora_b": jnp.asarray(np.arange(1, 7, dtype=np.float32).reshape(3, 2))}}
  rho = 0.25
  c = get_compressor("randk", {"unbiased": True})
  out = c.update((), tree, jnp.float32(rho), KEY, None)
  a = np.asarray(out.delta["l"]["lora_a"])
  k = k_of(rho, 12)
  np.testing.assert_allclose(a[a != 0], np.asarray(tree["l"]["lora_a"])[a != 0] * 12 / k, rtol=1e-6)
  keys = jax.random.split(jax.random.PRNGKey(7), 4000)
  mean = jax.jit(jax.vmap(lambda kk: c.update((), tree, jnp.float32(rho), kk, None).delta))(keys)
  m_a = np.asarray(mean["l"]["lora_a"]).mean(0)
  x = np.asarray(tree["l"]["lora_a"])
  # std of the mean per entry = x * sqrt((n/k - 1) / 4000) ~ 0.028 x
  np.testing.assert_allclose(m_a, x, rtol=0.12)
  biased = get_compressor("randk", {}).update((), tree, jnp.float32(rho), KEY, None)
  b = np.asarray(biased.delta["l"]["lora_a"])
  np.testing.assert_array_equal(b[b != 0], x[b != 0])


# --------------------------------------------------------------------------------------------- svd

def best_rank(m, k):
  u, s, vt = np.linalg.svd(m.astype(np.float64))
  return (u[:, :k] * s[:k]) @ vt[:k]


def one_adapter(a, b):
  return {"l": {"lora_a": jnp.asarray(a, jnp.float32), "lora_b": jnp.asarray(b, jnp.float32)}}


@pytest.fixture(scope="module")
def svd_update():
  return jax.jit(get_compressor("svd", {}).update)


def test_svd_full_ratio_reproduces_dense(svd_update):
  rng = np.random.default_rng(5)
  d_in, r, d_out = 20, 6, 16
  a0 = rng.uniform(-0.3, 0.3, size=(d_in, r))
  cases = {
      "general": (a0, rng.normal(size=(r, d_out)), 0.1 * rng.normal(size=(d_in, r)),
                  0.1 * rng.normal(size=(r, d_out))),
      # round 1: global lora_b = 0 and a rank-2 update of b -> M has rank 2 < r
      "round1_rank_deficient": (a0, np.zeros((r, d_out)), 0.01 * rng.normal(size=(d_in, r)),
                                rng.normal(size=(r, 2)) @ rng.normal(size=(2, d_out)) * 0.01),
      # nothing learnt on b at all: M = 0
      "zero_product": (a0, np.zeros((r, d_out)), 0.01 * rng.normal(size=(d_in, r)),
                       np.zeros((r, d_out))),
  }
  for name, (a_ref, b_ref, da, db) in cases.items():
    ref, delta = one_adapter(a_ref, b_ref), one_adapter(da, db)
    out = svd_update((), delta, jnp.float32(1.0), KEY, ref)
    for x, y in zip(leaves(out.delta), leaves(delta)):
      assert np.all(np.isfinite(x)), name
      np.testing.assert_allclose(x, y, atol=2e-5 * max(1.0, np.abs(y).max()), err_msg=name)
    assert float(out.bits) == r * (d_in + d_out) * 32 + r * r * 32 + r


def test_svd_keeps_top_singular_components_ref_zero(svd_update):
  """ref = 0: the sent product is the best rank-m approximation of a @ b (any factors); SOFT on the
  same non-orthogonal factors is not — the check discriminates."""
  rng = np.random.default_rng(6)
  d_in, r, d_out = 18, 6, 14
  a = rng.normal(size=(d_in, r)) @ (np.eye(r) + 0.8 * rng.normal(size=(r, r)))
  b = rng.normal(size=(r, d_out))
  delta = one_adapter(a, b)
  ref = jax.tree_util.tree_map(jnp.zeros_like, delta)
  soft = jax.jit(get_compressor("soft", {}).update)
  prod = a @ b
  for m in (1, 2, 4, 5):
    out = svd_update((), delta, jnp.float32(m / r), KEY, ref)
    sent = np.asarray(out.delta["l"]["lora_a"]) @ np.asarray(out.delta["l"]["lora_b"])
    best = best_rank(prod, m)
    np.testing.assert_allclose(sent, best, atol=1e-4 * np.abs(prod).max())
    np.testing.assert_array_equal(np.asarray(out.kept["l"]), np.arange(r) < m)
    assert float(out.bits) == m * (d_in + d_out) * 32 + r * r * 32 + r
    s_out = soft((), delta, jnp.float32(m / r), KEY, None)
    s_prod = np.asarray(s_out.delta["l"]["lora_a"]) @ np.asarray(s_out.delta["l"]["lora_b"])
    assert np.linalg.norm(prod - s_prod) > 1.01 * np.linalg.norm(prod - best), m


def test_svd_ref_nonzero_projects_onto_top_singular_space(svd_update):
  """With ref ≠ 0 the sent update is (Δa·P, P·Δb) for the oblique projector P = R·diag(mask)·R⁻¹,
  and the local factors through P give the best rank-m approximation of M = (a0+Δa)(b0+Δb)."""
  rng = np.random.default_rng(7)
  d_in, r, d_out = 22, 5, 17
  a0, b0 = rng.normal(size=(d_in, r)), rng.normal(size=(r, d_out))
  da, db = 0.3 * rng.normal(size=(d_in, r)), 0.3 * rng.normal(size=(r, d_out))
  ref, delta = one_adapter(a0, b0), one_adapter(da, db)
  a_loc, b_loc = (a0 + da).astype(np.float32), (b0 + db).astype(np.float32)
  mm = a_loc.astype(np.float64) @ b_loc
  for m in (1, 3):
    out = svd_update((), delta, jnp.float32(m / r), KEY, ref)
    sa = np.asarray(out.delta["l"]["lora_a"], np.float64)
    sb = np.asarray(out.delta["l"]["lora_b"], np.float64)
    p = np.linalg.pinv(da.astype(np.float32).astype(np.float64)) @ sa
    np.testing.assert_allclose(da.astype(np.float32) @ p, sa, atol=1e-4)
    np.testing.assert_allclose(p @ db.astype(np.float32), sb, atol=1e-4)
    np.testing.assert_allclose(p @ p, p, atol=1e-4)
    assert np.linalg.matrix_rank(p, tol=1e-3) == m
    np.testing.assert_allclose(a_loc @ p @ b_loc, best_rank(mm, m), atol=1e-4 * np.abs(mm).max())


# --------------------------------------------------------------------------------- vmap, EF, bf16

@pytest.mark.parametrize("name", ["soft", "topk", "randk", "svd"])
def test_vmap_over_clients_equals_per_client(name):
  c = get_compressor(name, {"error_feedback": True})
  trees = [make_tree(30 + i) for i in range(3)]
  ref = make_tree(40)
  ratios = jnp.asarray([0.2, 0.6, 1.0], jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)
  out = jax.jit(jax.vmap(c.update, in_axes=(0, 0, 0, 0, None)))(jax.vmap(c.init)(stacked),
                                                                   stacked, ratios, keys, ref)
  upd = jax.jit(c.update)
  for i, t in enumerate(trees):
    one = upd(c.init(t), t, ratios[i], keys[i], ref)
    for x, y in zip(leaves((one.delta, one.state, one.kept)), leaves((out.delta, out.state, out.kept))):
      np.testing.assert_allclose(x, y[i], rtol=1e-5, atol=1e-5)
    assert float(one.bits) == pytest.approx(float(out.bits[i]), rel=1e-6)
  assert out.bits[0] < out.bits[1] < out.bits[2]


@pytest.mark.parametrize("name", ["topk", "randk", "svd"])
def test_error_feedback_conservation(name):
  c = get_compressor(name, {"error_feedback": True})
  upd = jax.jit(c.update)
  ref = make_tree(50)
  st = c.init(ref)
  for i, seed in enumerate((51, 52)):
    d = make_tree(seed, scale=0.1)
    out = upd(st, d, jnp.float32(0.3), jax.random.PRNGKey(i), ref)
    lhs = jax.tree_util.tree_map(jnp.add, out.delta, out.state)
    rhs = jax.tree_util.tree_map(jnp.add, d, st)
    for x, y in zip(leaves(lhs), leaves(rhs)):
      np.testing.assert_allclose(x, y, atol=1e-5)
    assert max(np.abs(x).max() for x in leaves(out.state)) > 1e-3   # something was carried
    st = out.state


def test_bf16_values_on_the_wire():
  tree = make_tree(60)
  for name in ("topk", "randk"):
    out = get_compressor(name, {"bits_per_value": 16}).update((), tree, jnp.float32(0.5), KEY, None)
    for x in leaves(out.delta):
      np.testing.assert_array_equal(x, np.asarray(jnp.asarray(x).astype(jnp.bfloat16), np.float32))
    exact = get_compressor(name, {"bits_per_value": 16, "simulate_quantization": False}).update(
        (), tree, jnp.float32(0.5), KEY, None)
    assert float(exact.bits) == float(out.bits)
    assert any(not np.array_equal(x, y) for x, y in zip(leaves(exact.delta), leaves(out.delta)))


# ------------------------------------------------------------------- payload model, profile, registry

EQ_SHAPES = {"q": (12, 4, 10), "v": (9, 4, 7)}   # equal ranks (one planning profile per tree)


@pytest.mark.parametrize("name,cfg,ratios", [
    ("none", {}, (0.25, 0.5, 1.0)),
    ("soft", {}, (0.25, 0.5, 0.75, 1.0)),
    ("soft", {"bits_per_value": 16, "score_on": "product"}, (0.25, 1.0)),
    ("svd", {}, (0.25, 0.5, 1.0)),
    ("randk", {"seed_bits": 7}, (0.25, 0.5, 1.0)),
    ("topk", {"index_coding": "indices"}, (0.25, 0.5, 1.0)),
    ("topk", {"index_coding": "bitmap"}, (0.25, 0.5, 1.0)),
    # 'min' is exact where the bitmap is the cheaper coding: ρ >= 1/ceil(log2 n) (n <= 48: 1/6)
    ("topk", {"index_coding": "min"}, (0.25, 0.5, 1.0)),
])
def test_payload_model_equals_reported_bits_on_the_grid(name, cfg, ratios):
  """Every compressor's (c0, c1) gives exactly the bits it reports at ρ on its grid (ρ·r and ρ·n
  integers for every matrix)."""
  tree = make_tree(70, EQ_SHAPES)
  ref = make_tree(71, EQ_SHAPES)
  c = get_compressor(name, cfg)
  c0, c1 = c.payload(tree)
  assert isinstance(c0, float) and isinstance(c1, float)
  upd = jax.jit(c.update)
  for rho in ratios:
    out = upd(c.init(tree), tree, jnp.float32(rho), KEY, ref)
    assert float(out.bits) == c0 + c1 * rho, (name, cfg, rho)
  if name == "topk" and cfg["index_coding"] == "min":   # below the range: an over-estimate
    out = upd((), tree, jnp.float32(1 / 12), KEY, ref)
    assert float(out.bits) < c0 + c1 / 12


def test_profiles_are_the_compressors_own_scores():
  """The planning profile is built from the scores each compressor selects by: at ρ = m/r,
  1 − kept_mass(ρ, profile) is exactly the fraction of that score mass the compressor dropped."""
  from fedlora.tsfa.bound import kept_mass
  tree = make_tree(72, EQ_SHAPES)
  ref = make_tree(73, EQ_SHAPES)
  r = 4
  for name in ("soft", "topk", "svd"):
    for score_on in (("delta", "updated", "product") if name == "soft" else (None,)):
      c = get_compressor(name, {} if score_on is None else {"score_on": score_on})
      for m in (1, 2, 3):
        out = c.update((), tree, jnp.float32(m / r), KEY, ref)
        prof = np.asarray(out.profile)
        assert prof.shape == (r,) and abs(prof.sum() - 1) < 1e-5
        assert np.all(np.diff(prof) <= 1e-7)
        if name == "topk":   # fraction of squared entries kept
          kept = sum(float(np.sum(np.asarray(out.delta["enc"][k][x]) ** 2))
                     for k in EQ_SHAPES for x in ("lora_a", "lora_b"))
          total = sum(float(np.sum(np.asarray(tree["enc"][k][x]) ** 2))
                      for k in EQ_SHAPES for x in ("lora_a", "lora_b"))
          np.testing.assert_allclose(float(kept_mass(m / r, prof)), kept / total, rtol=1e-5)
        else:   # rank compressors: the kept components' share of Σ s_i² (scores recomputed here)
          kept = total = 0.0
          for k in EQ_SHAPES:
            a0, b0 = (np.asarray(ref["enc"][k][x], np.float64) for x in ("lora_a", "lora_b"))
            da, db = (np.asarray(tree["enc"][k][x], np.float64) for x in ("lora_a", "lora_b"))
            if name == "svd":
              s = np.linalg.svd((a0 + da) @ (b0 + db), compute_uv=False)[:r]
              mask = np.arange(r) < m
            else:
              if score_on == "delta":
                s = np.linalg.norm(da, axis=0) * np.linalg.norm(db, axis=1)
              elif score_on == "updated":
                s = np.linalg.norm(a0 + da, axis=0) * np.linalg.norm(b0 + db, axis=1)
              else:
                s = np.array([np.linalg.norm(np.outer((a0 + da)[:, i], (b0 + db)[i])
                                             - np.outer(a0[:, i], b0[i])) for i in range(r)])
              mask = np.asarray(out.kept["enc"][k])
            kept += float(np.sum(s[mask] ** 2))
            total += float(np.sum(s ** 2))
          np.testing.assert_allclose(float(kept_mass(m / r, prof)), kept / total, rtol=1e-4,
                                     err_msg=f"{name} {score_on} m={m}")
  rk = get_compressor("randk", {}).update((), tree, jnp.float32(0.5), KEY, None)
  np.testing.assert_allclose(np.asarray(rk.profile), np.full(r, 1 / r), rtol=1e-6)
  dense = get_compressor("none", {}).update((), tree, jnp.float32(0.5), KEY, None)
  np.testing.assert_array_equal(np.asarray(dense.profile), 0.0)


def test_new_compressor_registers_from_one_file_and_runs_a_round(tmp_path, monkeypatch, request):
  """A compressor defined in one (test-local) module: registered by name with its own key, found by
  get_compressor, validated, and run through a whole training round with TSFA planning."""
  mod = tmp_path / "halfsign_compressor.py"
  mod.write_text('''
"""'halfsign': keeps every other rank component of each adapter at ρ >= 1/2, else the first; test-only."""
import dataclasses
import jax.numpy as jnp
from fedlora.compress import COMPRESSORS
from fedlora.section import Section
from fedlora.compress.base import (adapter_pairs, build_compressor, compress_by_parts, dense_bits_of,
                                   dense_rule, num_keep, sorted_mass)

def halfsign(q, scale):
  def compress_tree(target, ratio, key, ref, delta):
    def rule(path, a, b):
      r = a.shape[1]
      mask = jnp.arange(r) < num_keep(ratio, r)
      sent = (jnp.where(mask[None], a * scale, 0.0), jnp.where(mask[:, None], b, 0.0))
      return sent, mask.sum() * float((a.shape[0] + b.shape[1]) * q), mask, jnp.ones((r,)) / r
    return compress_by_parts(target, rule, dense_rule(q, False))
  def payload(t):
    return dense_bits_of(t, q), float(sum(a.shape[1] * (a.shape[0] + b.shape[1]) * q
                                          for _, a, b in adapter_pairs(t)))
  return build_compressor(compress_tree, False, payload)

@dataclasses.dataclass(frozen=True)
class Options(Section):
  SECTION = "compress"
  halfsign_scale: float = 1.0

  def check(self):
    self.need(self.halfsign_scale > 0, "halfsign_scale", "a number > 0")

@COMPRESSORS.register("halfsign", options=Options)
def _factory(section):
  return halfsign(section.bits_per_value, float(section.halfsign_scale))
''')
  monkeypatch.syspath_prepend(str(tmp_path))
  import importlib
  from fedlora.compress import COMPRESSORS
  from fedlora.methods import METHODS
  request.addfinalizer(lambda: (COMPRESSORS.unregister("halfsign"), METHODS.unregister("halfsign_m")))
  importlib.import_module("halfsign_compressor")  # (unregistered after: its keys would join every config)
  from fedlora import compress
  assert "halfsign" in compress.names()
  with pytest.raises(ValueError, match="halfsign_scale=-1"):
    get_compressor("halfsign", {"halfsign_scale": -1})
  # a method using it, also from a test-local file
  from fedlora.methods import MethodSpec, register_method
  register_method(MethodSpec(name="halfsign_m", compressor="halfsign", rank_grid=True,
                             allocation="tsfa"))
  from conftest import tiny_config
  from fedlora import train
  c = tiny_config(**{"method.name": "halfsign_m", "wireless.enabled": True,
                     "workdir": str(tmp_path / "w"), "fed.rounds": 1, "checkpoint.every": 10})
  exp = train.build(c)
  st = exp.algorithm.init()
  st, rec = exp.algorithm.apply(st, 1)
  c0, c1 = exp.method.compressor.payload(exp.parts.trainable)
  np.testing.assert_allclose(rec["uplink_bits"], c0 + c1 * np.asarray(rec["ratio"]), rtol=1e-6)
  assert rec["profile_bytes_round"] == 2 * 32 * c.lora.rank / 8     # TSFA used the profiles
  assert float(jnp.abs(st["trainable"]["classifier"]["kernel"]
                       - exp.parts.trainable["classifier"]["kernel"]).max()) > 0

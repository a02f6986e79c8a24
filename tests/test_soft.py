"""SOFT: rank-component sparsification, orthogonality regulariser, importance / dropped-mass term."""
from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedlora.compress import get_compressor
from fedlora.soft import (dropped_mass, importance_profile, ortho_penalty, rank_scores,
                          soft_compressor)

RATIOS = (0.01, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0)
SHAPES = {"q": (24, 10, 20), "v": (16, 8, 12), "o": (12, 4, 30)}   # name: (d_in, r, d_out)


def m_of(rho: float, r: int) -> int:
  """Exact decimal ceil(ρ·r) clamped to [1, r] (independent of the float32 path)."""
  return min(r, max(1, math.ceil(Fraction(str(rho)) * r)))


def make_tree(seed: int, shapes=SHAPES, scale=1.0):
  rng = np.random.default_rng(seed)
  tree = {"enc": {}, "head": {"kernel": rng.normal(size=(16, 3)).astype(np.float32),
                              "bias": rng.normal(size=(3,)).astype(np.float32)}}
  for name, (d_in, r, d_out) in shapes.items():
    tree["enc"][name] = {"lora_a": (scale * rng.normal(size=(d_in, r))).astype(np.float32),
                         "lora_b": (scale * rng.normal(size=(r, d_out))).astype(np.float32)}
  return jax.tree_util.tree_map(jnp.asarray, tree)


def orthogonal_factors(rng, d_in, r, d_out, sigmas):
  """a with orthogonal columns (random norms), b with orthogonal rows; a@b has singular values sigmas
  (in component order, unsorted), left/right singular vectors from random rotations."""
  u, _ = np.linalg.qr(rng.normal(size=(d_in, r)))
  v, _ = np.linalg.qr(rng.normal(size=(d_out, r)))
  c = rng.uniform(0.5, 2.0, size=r)
  a = u * c[None, :]
  b = (sigmas / c)[:, None] * v.T
  return a.astype(np.float32), b.astype(np.float32)


@pytest.fixture(scope="module")
def soft_update():
  c = get_compressor("soft", None)
  return jax.jit(c.update)


@pytest.mark.parametrize("q", [32, 16])
def test_soft_keeps_exactly_m_and_counts_bits(q):
  tree = make_tree(0)
  c = get_compressor("soft", {"bits_per_value": q})
  upd = jax.jit(c.update)
  for rho in RATIOS:
    out = upd(c.init(tree), tree, jnp.float32(rho), jax.random.PRNGKey(0), None)
    expected_bits = 0
    for name, (d_in, r, d_out) in SHAPES.items():
      m = m_of(rho, r)
      sa = np.asarray(out.delta["enc"][name]["lora_a"])
      sb = np.asarray(out.delta["enc"][name]["lora_b"])
      cols = np.flatnonzero(np.any(sa != 0, axis=0))
      rows = np.flatnonzero(np.any(sb != 0, axis=1))
      mask = np.flatnonzero(np.asarray(out.kept["enc"][name]))
      assert len(cols) == m, (name, rho, len(cols), m)
      np.testing.assert_array_equal(cols, rows)
      np.testing.assert_array_equal(cols, mask)
      # kept columns/rows are the (q-rounded) originals
      ref_a = np.asarray(tree["enc"][name]["lora_a"])
      ref_b = np.asarray(tree["enc"][name]["lora_b"])
      tol = 0 if q == 32 else 1e-2
      np.testing.assert_allclose(sa[:, cols], ref_a[:, cols], rtol=tol, atol=0)
      np.testing.assert_allclose(sb[rows], ref_b[rows], rtol=tol, atol=0)
      expected_bits += m * (d_in + d_out) * q + r
    expected_bits += (16 * 3 + 3) * q                      # head sent dense
    assert float(out.bits) == pytest.approx(expected_bits, rel=1e-6), rho
    np.testing.assert_array_equal(np.asarray(out.delta["head"]["kernel"] != 0),
                                  np.asarray(tree["head"]["kernel"] != 0))
  if q == 16:  # values on the wire are bf16-representable
    x = np.asarray(out.delta["enc"]["q"]["lora_a"])
    np.testing.assert_array_equal(x, np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_matches_eckart_young_for_orthogonal_factors(seed, soft_update):
  rng = np.random.default_rng(seed)
  d_in, r, d_out = 40, 8, 30
  sig = rng.permutation(np.linspace(0.5, 4.0, r))   # distinct, in shuffled component order
  a, b = orthogonal_factors(rng, d_in, r, d_out, sig)
  tree = {"layer": {"lora_a": jnp.asarray(a), "lora_b": jnp.asarray(b)}}
  prod = a.astype(np.float64) @ b.astype(np.float64)
  u, s, vt = np.linalg.svd(prod)
  # which component carries the j-th singular direction
  comp_of_sv = np.argmax(np.abs((a / np.linalg.norm(a, axis=0)).T @ u[:, :r]), axis=0)
  assert sorted(comp_of_sv) == list(range(r))
  for m in range(1, r + 1):
    out = soft_update((), tree, jnp.float32(m / r), jax.random.PRNGKey(0), None)
    chosen = set(np.flatnonzero(np.asarray(out.kept["layer"])))
    assert chosen == set(comp_of_sv[:m].tolist()), m
    kept_prod = np.asarray(out.delta["layer"]["lora_a"]) @ np.asarray(out.delta["layer"]["lora_b"])
    best = (u[:, :m] * s[:m]) @ vt[:m]
    np.testing.assert_allclose(kept_prod, best, atol=2e-5 * s[0])
    # error of the kept product is exactly the dropped singular mass (Eckart–Young)
    err = np.linalg.norm(prod - kept_prod) ** 2
    assert err == pytest.approx(np.sum(s[m:r] ** 2), rel=1e-4, abs=1e-6)


def test_soft_ties_go_to_lower_index(soft_update):
  a = np.ones((6, 5), np.float32)
  b = np.ones((5, 7), np.float32)
  tree = {"l": {"lora_a": jnp.asarray(a), "lora_b": jnp.asarray(b)}}
  for m in range(1, 6):
    out = soft_update((), tree, jnp.float32(m / 5), jax.random.PRNGKey(0), None)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(out.kept["l"])), np.arange(m))


def test_soft_score_on_updated_uses_ref_plus_delta():
  # ref has a huge component 0; the update is largest on component 1
  a0 = np.zeros((6, 3), np.float32); b0 = np.zeros((3, 5), np.float32)
  a0[:, 0] = 10.0; b0[0, :] = 10.0
  da = np.full((6, 3), 0.01, np.float32); db = np.full((3, 5), 0.01, np.float32)
  da[:, 1] = 1.0; db[1, :] = 1.0
  ref = {"l": {"lora_a": jnp.asarray(a0), "lora_b": jnp.asarray(b0)}}
  delta = {"l": {"lora_a": jnp.asarray(da), "lora_b": jnp.asarray(db)}}
  rho = jnp.float32(1 / 3)
  k = jax.random.PRNGKey(0)
  by_delta = get_compressor("soft", {"score_on": "delta"}).update((), delta, rho, k, ref)
  by_upd = get_compressor("soft", {"score_on": "updated"}).update((), delta, rho, k, ref)
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(by_delta.kept["l"])), [1])
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(by_upd.kept["l"])), [0])
  # what is sent is still the update's component
  np.testing.assert_allclose(np.asarray(by_upd.delta["l"]["lora_a"])[:, 0], da[:, 0])
  with pytest.raises(ValueError, match="ref_tree"):
    get_compressor("soft", {"score_on": "updated"}).update((), delta, rho, k, None)


def _all_eqns(jaxpr):
  """Every equation of a jaxpr, recursing into sub-jaxprs (pjit, cond branches, ...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for v in eqn.params.values():
      for x in (v if isinstance(v, (tuple, list)) else (v,)):
        if hasattr(x, "eqns"):
          yield from _all_eqns(x)
        elif hasattr(getattr(x, "jaxpr", None), "eqns"):
          yield from _all_eqns(x.jaxpr)


def test_soft_path_has_no_svd_and_no_full_product():
  d_in, r, d_out = 24, 4, 20
  tree = make_tree(3, {"l": (d_in, r, d_out)})
  ref = make_tree(4, {"l": (d_in, r, d_out)})

  def prims(c):
    jp = jax.make_jaxpr(lambda d, rho: c.update(c.init(d), d, rho, jax.random.PRNGKey(0), ref))(
        tree, jnp.float32(0.5))
    return list(_all_eqns(jp.jaxpr))

  for cfg in ({}, {"score_on": "updated", "error_feedback": True}, {"score_on": "product"}):
    eqns = prims(get_compressor("soft", cfg))
    names = {e.primitive.name for e in eqns}
    assert not names & {"svd", "qr", "eigh", "householder_product", "geqrf"}, names
    for e in eqns:
      for v in e.outvars:
        shp = tuple(getattr(v.aval, "shape", ()))
        assert not (d_in in shp and d_out in shp), (e.primitive.name, shp)
  # the walker does see an SVD of a full product where there is one (so the check above can fail)
  eqns = list(_all_eqns(jax.make_jaxpr(lambda a, b: jnp.linalg.svd(a @ b))(
      jnp.ones((d_in, r)), jnp.ones((r, d_out))).jaxpr))
  assert "svd" in {e.primitive.name for e in eqns}
  assert any(d_in in tuple(v.aval.shape) and d_out in tuple(v.aval.shape)
             for e in eqns for v in e.outvars if hasattr(v.aval, "shape"))
  # the 'svd' baseline takes the SVD of the r×r core only: it never forms the product either
  eqns = prims(get_compressor("svd", {}))
  assert {tuple(v.aval.shape) for e in eqns if e.primitive.name == "svd" for v in e.invars} == {(r, r)}
  assert not any(d_in in tuple(v.aval.shape) and d_out in tuple(v.aval.shape)
                 for e in eqns for v in e.outvars if hasattr(v.aval, "shape"))


def test_soft_vmap_over_clients_with_different_ratios():
  c = get_compressor("soft", {"error_feedback": True})
  trees = [make_tree(10 + i) for i in range(3)]
  ratios = jnp.asarray([0.1, 0.5, 1.0], jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)
  states = jax.vmap(c.init)(stacked)
  ref = make_tree(99)
  out = jax.jit(jax.vmap(c.update, in_axes=(0, 0, 0, 0, None)))(states, stacked, ratios, keys, ref)
  for i, t in enumerate(trees):
    one = c.update(c.init(t), t, ratios[i], keys[i], ref)
    for x, y in zip(jax.tree_util.tree_leaves((one.delta, one.state, one.kept)),
                    jax.tree_util.tree_leaves((out.delta, out.state, out.kept))):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y)[i], rtol=1e-6, atol=1e-7)
    assert float(one.bits) == pytest.approx(float(out.bits[i]))
  assert len(set(np.asarray(out.bits).tolist())) == 3


def test_soft_error_feedback_conserves_and_carries():
  c = soft_compressor(error_feedback=True)
  upd = jax.jit(c.update)
  d1, d2 = make_tree(20), make_tree(21)
  st = c.init(d1)
  rho = jnp.float32(0.25)
  total_sent = jax.tree_util.tree_map(jnp.zeros_like, d1)
  for d in (d1, d2):
    out = upd(st, d, rho, jax.random.PRNGKey(0), None)
    lhs = jax.tree_util.tree_map(jnp.add, out.delta, out.state)
    rhs = jax.tree_util.tree_map(jnp.add, d, st)
    for x, y in zip(jax.tree_util.tree_leaves(lhs), jax.tree_util.tree_leaves(rhs)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)
    total_sent = jax.tree_util.tree_map(jnp.add, total_sent, out.delta)
    st = out.state
  # residual is nonzero exactly on the dropped components; head carries nothing
  assert np.all(np.asarray(st["head"]["kernel"]) == 0)
  res_cols = np.any(np.asarray(st["enc"]["q"]["lora_a"]) != 0, axis=0)
  np.testing.assert_array_equal(res_cols, ~np.asarray(out.kept["enc"]["q"]))
  # without EF the state is () and the sent update never includes old residue
  assert soft_compressor().init(d1) == ()


# ------------------------------------------------------------------------------------------- ortho

def np_ortho(tree):
  tot = 0.0
  for name in tree["enc"]:
    a = np.asarray(tree["enc"][name]["lora_a"], np.float64)
    b = np.asarray(tree["enc"][name]["lora_b"], np.float64)
    ga, gb = a.T @ a, b @ b.T
    tot += np.sum((ga - np.eye(a.shape[1])) ** 2) + np.sum((gb - np.diag(np.diag(gb))) ** 2)
  return tot


def test_ortho_penalty_matches_numpy_and_vanishes_on_orthogonal():
  tree = make_tree(5, scale=0.3)
  assert float(ortho_penalty(tree)) == pytest.approx(np_ortho(tree), rel=1e-5)
  rng = np.random.default_rng(0)
  enc = {}
  for name, (d_in, r, d_out) in SHAPES.items():
    a, _ = np.linalg.qr(rng.normal(size=(d_in, r)))
    v, _ = np.linalg.qr(rng.normal(size=(d_out, r)))
    b = rng.uniform(0.1, 3.0, size=r)[:, None] * v.T       # orthogonal rows, distinct norms
    enc[name] = {"lora_a": jnp.asarray(a, jnp.float32), "lora_b": jnp.asarray(b, jnp.float32)}
  ortho = {"enc": enc, "head": tree["head"]}
  assert float(ortho_penalty(ortho)) == pytest.approx(0.0, abs=1e-5)
  # a non-orthonormal a is penalised even with b = 0 (round-1 state)
  zero_b = {"l": {"lora_a": jnp.asarray(2 * np.eye(5, 3), jnp.float32),
                  "lora_b": jnp.zeros((3, 4), jnp.float32)}}
  assert float(ortho_penalty(zero_b)) == pytest.approx(3 * 9.0)


def test_ortho_penalty_gradient_only_touches_adapters():
  tree = make_tree(6, scale=0.3)
  g = jax.jit(jax.grad(ortho_penalty))(tree)
  assert np.all(np.asarray(g["head"]["kernel"]) == 0) and np.all(np.asarray(g["head"]["bias"]) == 0)
  for name in SHAPES:
    assert np.linalg.norm(np.asarray(g["enc"][name]["lora_a"])) > 0
    assert np.linalg.norm(np.asarray(g["enc"][name]["lora_b"])) > 0
  # finite-difference check on one adapter entry
  eps = 1e-3
  t_plus = jax.tree_util.tree_map(lambda x: x, tree)
  t_plus["enc"]["v"] = dict(tree["enc"]["v"])
  t_plus["enc"]["v"]["lora_b"] = tree["enc"]["v"]["lora_b"].at[1, 2].add(eps)
  t_minus = jax.tree_util.tree_map(lambda x: x, t_plus)
  t_minus["enc"]["v"] = dict(tree["enc"]["v"])
  t_minus["enc"]["v"]["lora_b"] = tree["enc"]["v"]["lora_b"].at[1, 2].add(-eps)
  fd = (np_ortho(t_plus) - np_ortho(t_minus)) / (2 * eps)
  assert float(g["enc"]["v"]["lora_b"][1, 2]) == pytest.approx(fd, rel=1e-2, abs=1e-3)


def np_ortho_cosine(tree, eps=1e-4):
  """Slow reference of the 'cosine' B term: loops over pairs of B rows."""
  tot = 0.0
  for name in tree["enc"]:
    a = np.asarray(tree["enc"][name]["lora_a"], np.float64)
    b = np.asarray(tree["enc"][name]["lora_b"], np.float64)
    tot += np.sum((a.T @ a - np.eye(a.shape[1])) ** 2)
    for i in range(b.shape[0]):
      for j in range(b.shape[0]):
        if i != j:
          ni, nj = math.sqrt(b[i] @ b[i] + eps ** 2), math.sqrt(b[j] @ b[j] + eps ** 2)
          tot += (b[i] @ b[j] / (ni * nj)) ** 2
  return tot


def test_ortho_cosine_b_term_is_scale_free_where_gram_vanishes():
  """'cosine' equals the pairwise-loop reference, does not change when B shrinks 100x (the 'gram'
  term shrinks 1e8x: LoRA's small B escapes it), is 0 for orthogonal rows and finite at B = 0."""
  from fedlora.soft import make_ortho_penalty
  tree = make_tree(5, scale=0.3)
  cos = make_ortho_penalty("cosine")
  assert float(cos(tree)) == pytest.approx(np_ortho_cosine(tree), rel=1e-5)
  a_only = float(ortho_penalty({"enc": {k: {"lora_a": v["lora_a"], "lora_b": 0 * v["lora_b"]}
                                        for k, v in tree["enc"].items()}}))
  small = {"enc": {k: {"lora_a": v["lora_a"], "lora_b": 1e-2 * v["lora_b"]}
                   for k, v in tree["enc"].items()}, "head": tree["head"]}
  assert float(cos(small)) == pytest.approx(float(cos(tree)), rel=1e-3)
  assert float(cos(small)) - a_only > 0.5                              # rows still penalised
  assert float(ortho_penalty(small)) - a_only < 1e-6                   # 'gram' no longer sees them
  rng = np.random.default_rng(1)
  v, _ = np.linalg.qr(rng.normal(size=(12, 4)))
  orth = {"l": {"lora_a": jnp.asarray(np.linalg.qr(rng.normal(size=(9, 4)))[0], jnp.float32),
                "lora_b": jnp.asarray(rng.uniform(1e-3, 1.0, 4)[:, None] * v.T, jnp.float32)}}
  assert float(cos(orth)) == pytest.approx(0.0, abs=1e-5)
  zero_b = {"l": {"lora_a": orth["l"]["lora_a"], "lora_b": jnp.zeros((4, 12), jnp.float32)}}
  g = jax.grad(cos)(zero_b)
  assert float(cos(zero_b)) == pytest.approx(0.0, abs=1e-5)
  assert np.all(np.isfinite(np.asarray(g["l"]["lora_b"])))
  with pytest.raises(ValueError, match="ortho_b='cos'.*'gram', 'cosine'"):
    make_ortho_penalty("cos")


# -------------------------------------------------------------------------------------- importance

def test_rank_scores_and_profile():
  tree = make_tree(7)
  a, b = np.asarray(tree["enc"]["q"]["lora_a"]), np.asarray(tree["enc"]["q"]["lora_b"])
  s = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=1)
  np.testing.assert_allclose(np.asarray(rank_scores(a, b)), s, rtol=1e-5)
  prof = importance_profile(tree)
  assert prof["head"]["kernel"] is None
  p = np.asarray(prof["enc"]["q"])
  np.testing.assert_allclose(p, np.sort(s ** 2)[::-1] / np.sum(s ** 2), rtol=1e-5)
  zero = {"l": {"lora_a": jnp.ones((4, 2)), "lora_b": jnp.zeros((2, 3))}}
  np.testing.assert_array_equal(np.asarray(importance_profile(zero)["l"]), 0.0)
  assert float(dropped_mass(zero, 0.5)) == 0.0


def test_dropped_mass_exact_at_integers_linear_between_and_matches_soft(soft_update):
  tree = make_tree(8)
  pairs = [(np.asarray(tree["enc"][n]["lora_a"]), np.asarray(tree["enc"][n]["lora_b"]))
           for n in SHAPES]
  s_all = [np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=1) for a, b in pairs]

  def exact(rho_r_int_per_adapter):
    dropped = sum(np.sum(np.sort(s ** 2)[::-1][m:]) for s, m in zip(s_all, rho_r_int_per_adapter))
    return dropped / sum(np.sum(s ** 2) for s in s_all)

  # single adapter: exact at integers, linear in between, monotone
  s = s_all[0]
  r = len(s)
  e = np.sort(s ** 2)[::-1] / np.sum(s ** 2)
  f = jax.jit(lambda rho: dropped_mass(jnp.asarray(s), rho))
  for m in range(0, r + 1):
    assert float(f(m / r)) == pytest.approx(1.0 - e[:m].sum(), abs=1e-6)
  for m in range(r):
    mid = float(f((m + 0.3) / r))
    assert mid == pytest.approx(1.0 - e[:m].sum() - 0.3 * e[m], abs=1e-6)
  grid = np.asarray(jax.vmap(f)(jnp.linspace(0, 1, 101)))
  assert np.all(np.diff(grid) <= 1e-7) and grid[0] == pytest.approx(1.0) and grid[-1] == pytest.approx(0, abs=1e-7)
  # gradient in ρ is the (negative) slope of the current segment
  g = float(jax.grad(f)(jnp.float32(2.5 / r)))
  assert g == pytest.approx(-r * e[2], rel=1e-4)
  # pooled over adapters (different r) at ρ = 0.5 (integer ρ·r for r = 10, 8, 4) == SOFT's drop
  rho = 0.5
  ms = [m_of(rho, sh[1]) for sh in SHAPES.values()]
  assert float(dropped_mass(tree, rho)) == pytest.approx(exact(ms), rel=1e-5)
  out = soft_update((), tree, jnp.float32(rho), jax.random.PRNGKey(0), None)
  kept = sum(np.sum(s[np.asarray(out.kept["enc"][n])] ** 2) for s, n in zip(s_all, SHAPES))
  assert 1 - kept / sum(np.sum(s ** 2) for s in s_all) == pytest.approx(exact(ms), rel=1e-5)
  # stacked [L, r] scores == tree with the same adapters
  same_r = make_tree(9, {"x": (8, 6, 5), "y": (7, 6, 9)})
  stacked = jnp.stack([rank_scores(same_r["enc"][n]["lora_a"], same_r["enc"][n]["lora_b"])
                       for n in ("x", "y")])
  for rho in (0.1, 0.45, 0.8):
    assert float(dropped_mass(stacked, rho)) == pytest.approx(float(dropped_mass(same_r, rho)),
                                                              rel=1e-6)


def test_product_scores_match_dense_contribution_to_the_product():
  """s_i = ‖(a0+da)_i ⊗ (b0+db)_i − a0_i ⊗ b0_i‖_F from the Gram formula equals the dense value,
  also for an update tiny next to the factors (no cancellation) and with b0 = 0 (round 1)."""
  from fedlora.soft import product_scores
  rng = np.random.default_rng(11)
  d_in, r, d_out = 20, 6, 15
  for scale, b0_zero in ((1.0, False), (1e-3, False), (0.3, True)):
    a0 = rng.normal(size=(d_in, r)); b0 = 0 if b0_zero else rng.normal(size=(r, d_out))
    b0 = np.zeros((r, d_out)) if b0_zero else b0
    da, db = scale * rng.normal(size=(d_in, r)), scale * rng.normal(size=(r, d_out))
    want = [np.linalg.norm(np.outer(a0[:, i] + da[:, i], b0[i] + db[i]) - np.outer(a0[:, i], b0[i]))
            for i in range(r)]
    got = product_scores(*(jnp.asarray(x, jnp.float32) for x in (a0, b0, da, db)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, err_msg=str(scale))


def test_soft_score_on_product_selects_by_contribution():
  """Component 0: big update of a factor whose partner is ~0 in ref and update (tiny contribution);
  component 1: small update times a big partner (large contribution). 'delta' keeps 0, 'product' 1."""
  a0 = np.zeros((6, 2), np.float32); b0 = np.zeros((2, 5), np.float32)
  b0[1, :] = 10.0
  da = np.zeros((6, 2), np.float32); db = np.zeros((2, 5), np.float32)
  da[:, 0] = 1.0; db[0, :] = 1e-3          # component 0: ‖Δa‖‖Δb‖ ~ 5e-3, contribution ~ 5e-3
  da[:, 1] = 0.1; db[1, :] = 1e-4          # component 1: ‖Δa‖‖Δb‖ ~ 5.5e-5, contribution ~ 5.5
  ref = {"l": {"lora_a": jnp.asarray(a0), "lora_b": jnp.asarray(b0)}}
  delta = {"l": {"lora_a": jnp.asarray(da), "lora_b": jnp.asarray(db)}}
  k = jax.random.PRNGKey(0)
  by_delta = get_compressor("soft", {"score_on": "delta"}).update((), delta, 0.5, k, ref)
  by_prod = get_compressor("soft", {"score_on": "product"}).update((), delta, 0.5, k, ref)
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(by_delta.kept["l"])), [0])
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(by_prod.kept["l"])), [1])
  with pytest.raises(ValueError, match="ref_tree"):
    get_compressor("soft", {"score_on": "product"}).update((), delta, 0.5, k, None)

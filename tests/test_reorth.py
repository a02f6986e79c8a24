"""SOFT's server re-orthogonalisation (`method.reorth`, fedlora/soft/reorth.py) and its wiring."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from fedlora import train
from fedlora.compress.base import adapter_pairs, dense_leaves
from fedlora.soft.reorth import reorth_adapter, reorthogonalize


def _factors(seed, d_in=20, r=5, d_out=13, b_scale=0.1):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(d_in, r)) @ rng.normal(size=(r, r))   # correlated columns, unequal norms
  b = b_scale * rng.normal(size=(r, r)) @ rng.normal(size=(r, d_out))
  return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reorth_keeps_the_product_and_makes_scores_its_singular_values(seed):
  """Against numpy's SVD of the product (the slow obvious reference): a'b' = ab, a' has orthogonal
  columns of a's RMS norm, b' orthogonal rows, and ‖a'_i‖·‖b'_i‖ are ab's singular values."""
  a, b = _factors(seed)
  a2, b2 = jax.jit(reorth_adapter)(a, b)
  chex.assert_shape(a2, a.shape)
  chex.assert_shape(b2, b.shape)
  m = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
  np.testing.assert_allclose(np.asarray(a2 @ b2), m, atol=1e-5 * np.abs(m).max())
  c2 = float(jnp.sum(a ** 2)) / a.shape[1]
  np.testing.assert_allclose(np.asarray(a2.T @ a2), c2 * np.eye(a.shape[1]), atol=1e-4 * c2)
  gb = np.asarray(b2 @ b2.T)
  assert np.abs(gb - np.diag(np.diag(gb))).max() < 1e-4 * np.abs(gb).max()
  s = np.asarray(jnp.linalg.norm(a2, axis=0) * jnp.linalg.norm(b2, axis=1))
  sv = np.linalg.svd(m, compute_uv=False)[:a.shape[1]]
  np.testing.assert_allclose(np.sort(s)[::-1], sv, rtol=1e-4)
  # before: the scores were not the singular values (the test could fail)
  s0 = np.asarray(jnp.linalg.norm(a, axis=0) * jnp.linalg.norm(b, axis=1))
  assert np.abs(np.sort(s0)[::-1] - sv).max() > 1e-2 * sv[0]


def test_reorth_of_a_zero_product_orthogonalises_a_and_keeps_b_zero():
  """Round 1 (b = 0): the product stays 0, a gets orthogonal columns of its RMS norm."""
  a, _ = _factors(3)
  b = jnp.zeros((a.shape[1], 13), jnp.float32)
  a2, b2 = reorth_adapter(a, b)
  assert float(jnp.abs(b2).max()) == 0.0
  c2 = float(jnp.sum(a ** 2)) / a.shape[1]
  np.testing.assert_allclose(np.asarray(a2.T @ a2), c2 * np.eye(a.shape[1]), atol=1e-4 * c2)


def test_reorthogonalize_maps_every_adapter_and_leaves_the_rest():
  (a1, b1), (a2, b2) = _factors(4), _factors(5, d_in=9, r=3, d_out=7)
  head = jnp.arange(6, dtype=jnp.float32).reshape(2, 3)
  tree = {"l0": {"q": {"lora_a": a1, "lora_b": b1}}, "l1": {"v": {"lora_a": a2, "lora_b": b2}},
          "head": {"kernel": head}}
  out = jax.jit(reorthogonalize)(tree)
  np.testing.assert_array_equal(np.asarray(out["head"]["kernel"]), np.asarray(head))
  for (_, a, b), (_, x, y) in zip(adapter_pairs(tree), adapter_pairs(out)):
    np.testing.assert_allclose(np.asarray(x @ y), np.asarray(a @ b), atol=1e-5 * float(jnp.abs(a @ b).max()))
    g = np.asarray(x.T @ x)
    assert np.abs(g - np.diag(np.diag(g))).max() < 1e-4 * np.abs(g).max()


def _products(tree):
  return {p: np.asarray(a @ b) for p, a, b in adapter_pairs(tree)}


def test_server_applies_reorth_after_the_round_without_changing_the_model(tmp_path):
  """One tiny round with and without method.reorth: the same model (products, head), and with it on
  the global factors are in their product's singular basis."""
  outs = {}
  for on in (False, True):
    c = tiny_config(**{"method.name": "soft", "method.reorth": on, "fed.rounds": 1,
                       "workdir": str(tmp_path / str(on))})
    exp = train.build(c)
    assert (exp.method.reparam is not None) == on
    st, _ = exp.algorithm.apply(exp.algorithm.init(), 1)
    outs[on] = st["trainable"]
  p0, p1 = _products(outs[False]), _products(outs[True])
  assert max(np.abs(p).max() for p in p0.values()) > 0   # the round changed the products
  for k in p0:
    np.testing.assert_allclose(p1[k], p0[k], atol=1e-5 * max(np.abs(p0[k]).max(), 1e-6))
  dense = [dense_leaves(outs[on]) for on in (False, True)]
  assert dense[0] and [p for p, _ in dense[0]] == [p for p, _ in dense[1]]
  for (_, x), (_, y) in zip(*dense):  # the head: untouched by reorth
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for _, a, b in adapter_pairs(outs[True]):
    g = np.asarray(b @ b.T)
    assert np.abs(g - np.diag(np.diag(g))).max() <= 1e-4 * np.abs(g).max()


@pytest.mark.parametrize("override,named", [({"compress.error_feedback": True}, "client state 'compressor'"),
                                            ({"server.name": "fedavgm"}, "server state 'opt'")])
def test_reorth_is_refused_with_state_in_the_factors_coordinates(tmp_path, override, named):
  c = tiny_config(**{"method.name": "soft", "method.reorth": True, "workdir": str(tmp_path), **override})
  with pytest.raises(ValueError, match=rf"config.method.reorth=True rewrites .*{named}"):
    train.build(c)


def test_reorth_value_is_checked():
  """The config layer keeps the key a bool; the method registry's own check names a bad value (a
  config built another way, e.g. a section replaced whole)."""
  import ml_collections
  from fedlora.config import typed
  from fedlora.methods import build_method
  for on in (False, True):
    m = build_method(typed(tiny_config(**{"method.name": "soft", "method.reorth": on})))
    assert (m.reparam is reorthogonalize) == on
  c = tiny_config(**{"method.name": "soft"})
  c.method = ml_collections.ConfigDict({**c.method.to_dict(), "reorth": "yes"})
  # the check is now the soft method's options section (fedlora/methods/soft.py)
  with pytest.raises(ValueError, match=r"config.method.reorth='yes' is not allowed: True or False"):
    build_method(typed(c))

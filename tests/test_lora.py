"""LoRA: B=0 reproduces the base model, LoRA forward == merged-weight forward, gradients only reach
trainable leaves, target matching and config errors."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from fedlora import lora
from fedlora.compress.base import adapter_pairs
from fedlora.lora.config import LoraConfig
from fedlora.models.layers import Linear, lora_delta


class Tiny(nnx.Module):
  def __init__(self, rngs):
    self.encoder = nnx.List([nnx.Dict(query=Linear(6, 6, rngs=rngs), value=Linear(6, 6, rngs=rngs),
                                      out=Linear(6, 6, rngs=rngs)) for _ in range(2)])
    self.classifier = Linear(6, 3, rngs=rngs)

  def __call__(self, x, key=None):
    for blk in self.encoder:
      x = jnp.tanh(blk["out"](blk["query"](x) * blk["value"](x)))
    return self.classifier(x)


def lcfg(**kw):
  c = ml_collections.ConfigDict(dict(targets=("query", "value"), rank=2, alpha=4.0, dropout=0.0,
                                     init="kaiming"))
  c.update(kw)
  return c


def build(cfg, seed=0):
  m = Tiny(nnx.Rngs(seed))
  base = lora.split_model(m)
  ad = lora.init_adapters(jax.random.PRNGKey(1), base.frozen, cfg)
  lora.attach(m, ad, scale=lora.lora_scale(cfg.alpha, cfg.rank))
  return base, lora.split_model(m)


def test_targets_match_by_regex():
  base, parts = build(lcfg())
  paths = lora.match_targets(base.frozen, ("query", "value"))
  assert sorted("/".join(map(str, p)) for p in paths) == [
      "encoder/0/query", "encoder/0/value", "encoder/1/query", "encoder/1/value"]
  a = parts.trainable["encoder"][0]["query"]
  assert a["lora_a"].shape == (6, 2) and a["lora_b"].shape == (2, 6)
  assert np.all(np.asarray(a["lora_b"]) == 0)
  assert "classifier" in parts.trainable and "kernel" not in parts.trainable["encoder"][0]["query"]


def test_b_zero_reproduces_base_model_exactly():
  base, parts = build(lcfg())
  x = jax.random.normal(jax.random.PRNGKey(3), (4, 6))
  np.testing.assert_array_equal(np.asarray(base.module()(x)), np.asarray(parts.module()(x)))


def test_lora_forward_equals_merged_weights():
  base, parts = build(lcfg(rank=3, alpha=5.0))
  tr = jax.tree_util.tree_map(lambda v: v + 0.1 * jax.random.normal(jax.random.PRNGKey(7), v.shape),
                              parts.trainable)
  x = jax.random.normal(jax.random.PRNGKey(3), (4, 6))
  y_lora = parts.module(tr)(x)
  # base: the model before adapters were attached (trainable = head only)
  merged_frozen = lora.merge(base.frozen, {"encoder": tr["encoder"]}, scale=5.0 / 3)
  y_merged = base.module({"classifier": tr["classifier"]}, merged_frozen)(x)
  np.testing.assert_allclose(np.asarray(y_lora), np.asarray(y_merged), rtol=1e-5, atol=1e-5)


def test_gradients_reach_only_trainable_leaves_and_not_frozen():
  _, parts = build(lcfg())
  x = jax.random.normal(jax.random.PRNGKey(3), (4, 6))

  def loss(tr, fr):
    return (parts.module(tr, fr)(x) ** 2).sum()
  g_tr, g_fr = jax.grad(loss, argnums=(0, 1))(parts.trainable, parts.frozen)
  # the frozen tree is not an argument of training; its gradient exists mathematically but the
  # optimizer only ever sees g_tr, whose structure is adapters + head only
  leaves = jax.tree_util.tree_leaves_with_path(g_tr)
  names = {"/".join(str(getattr(k, "key", k)) for k in p) for p, _ in leaves}
  assert all(n.endswith(("lora_a", "lora_b")) or n.startswith("classifier") for n in names)
  assert any(float(jnp.abs(v).sum()) > 0 for _, v in leaves)
  assert g_fr["encoder"][0]["query"]["kernel"].shape == (6, 6)


def test_ffa_freeze_labels():
  _, parts = build(lcfg())
  labels = lora.trainable_labels(parts.trainable, "lora_a$")
  assert labels["encoder"][0]["query"]["lora_a"] == "freeze"
  assert labels["encoder"][0]["query"]["lora_b"] == "train"
  assert labels["classifier"]["kernel"] == "train"


def test_lora_delta_never_needs_the_product():
  a = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
  b = jax.random.normal(jax.random.PRNGKey(1), (2, 7))
  x = jax.random.normal(jax.random.PRNGKey(2), (3, 5))
  np.testing.assert_allclose(np.asarray(lora_delta(x, a, b, 0.5)), np.asarray(0.5 * x @ (a @ b)),
                             rtol=1e-5, atol=1e-5)


def test_count():
  _, parts = build(lcfg())
  assert lora.tree_size(parts.trainable) == 4 * (6 * 2 + 2 * 6) + 6 * 3 + 3
  assert lora.tree_bytes(parts.trainable) == 4 * lora.tree_size(parts.trainable)


@pytest.mark.parametrize("bad,match", [
    (dict(rank=0), "lora.rank=0"), (dict(alpha=-1.0), "lora.alpha=-1.0"),
    (dict(init="xavier"), "lora.init='xavier'"), (dict(targets=("nomatch",)), "matches no layer"),
    (dict(dropout=1.0), "lora.dropout=1.0"), (dict(init="graded", init_decay=None), "lora.init_decay=None"),
    (dict(init="graded", init_decay=0.0), "lora.init_decay=0.0"),
    (dict(init="graded", init_decay=1.5), r"lora.init_decay=1.5 is not allowed: .*\(0, 1\]")])
def test_bad_lora_config_is_named(bad, match):
  # the section validates itself (was lora.validate_lora_config); a target matching no layer is
  # found when the adapters are built
  with pytest.raises(ValueError, match=match):
    build(LoraConfig.from_dict(lcfg(**bad).to_dict()))


def test_graded_init_is_orthogonal_with_geometric_column_norms():
  """'graded': A's columns orthogonal, column i of norm decay**i; decay 1 is the orthogonal init."""
  base, _ = build(lcfg())
  orth = lora.init_adapters(jax.random.PRNGKey(3), base.frozen, lcfg(init="orthogonal"))
  for decay in (0.5, 1.0):
    ad = lora.init_adapters(jax.random.PRNGKey(3), base.frozen, lcfg(init="graded", init_decay=decay))
    pairs = list(zip(adapter_pairs(ad), adapter_pairs(orth)))
    assert pairs
    for (_, a, b), (_, a_o, _) in pairs:
      g = np.asarray(a.T @ a)
      np.testing.assert_allclose(g, np.diag(decay ** (2.0 * np.arange(a.shape[1]))), atol=1e-5)
      np.testing.assert_allclose(np.asarray(a), np.asarray(a_o) * decay ** np.arange(a.shape[1]),
                                 atol=1e-6)
      assert not np.any(np.asarray(b))

"""Federated rounds: vmapped client phase == Python-loop reference, FedAvg properties."""
import jax
import jax.numpy as jnp
import numpy as np
import chex

from fedlora.fed.aggregate import fedavg
from fedlora.fed.round import tree_sub
from fedlora.fed.sampling import sample_clients


def test_fedavg_matches_numpy_weighted_mean():
  g = {"a": jnp.ones((3, 2)), "b": {"c": jnp.zeros((4,))}}
  d = {"a": jax.random.normal(jax.random.PRNGKey(0), (5, 3, 2)),
       "b": {"c": jax.random.normal(jax.random.PRNGKey(1), (5, 4))}}
  w = jnp.array([1.0, 2.0, 0.0, 3.0, 4.0])
  out = fedavg(g, d, w)
  wn = np.asarray(w) / 10.0
  np.testing.assert_allclose(out["a"], 1 + np.tensordot(wn, np.asarray(d["a"]), 1), rtol=1e-6)
  np.testing.assert_allclose(out["b"]["c"], np.tensordot(wn, np.asarray(d["b"]["c"]), 1), rtol=1e-6)


def test_fedavg_all_dropped_keeps_global():
  g = {"a": jnp.arange(3.0)}
  out = fedavg(g, {"a": jnp.ones((2, 3))}, jnp.zeros(2))
  np.testing.assert_array_equal(out["a"], g["a"])


def test_fedavg_of_identical_clients_is_their_model(tiny_exp):
  """Identical client models average to that same model (FedAvg is a no-op on agreement)."""
  g = tiny_exp.parts.trainable
  local = jax.tree_util.tree_map(lambda x: x + 0.01, g)
  d = tree_sub(local, g)
  stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 3), d)
  fns = tiny_exp.round_fns
  out, _ = fns.server_phase(g, fns.init_server(g), stacked, jnp.array([3.0, 1.0, 7.0]), 1)
  chex.assert_trees_all_close(out, local, rtol=1e-6, atol=1e-7)
  zero = jax.tree_util.tree_map(jnp.zeros_like, stacked)
  chex.assert_trees_all_equal(fns.server_phase(g, fns.init_server(g), zero, jnp.ones(3), 1)[0], g)


def test_sample_clients_distinct_and_in_range():
  for s in range(5):
    ids = np.asarray(sample_clients(jax.random.PRNGKey(s), 10, 4))
    assert len(set(ids.tolist())) == 4 and ids.min() >= 0 and ids.max() < 10


def test_vmapped_round_equals_python_loop_reference(tiny_exp):
  """The jitted, vmapped client phase and a client-by-client Python loop over the same per-client
  function give the same updates, bits and aggregated model."""
  exp = tiny_exp
  fns, g, frozen = exp.round_fns, exp.parts.trainable, exp.parts.frozen
  ids = jnp.array([0, 2])
  key = jax.random.PRNGKey(42)
  ratios = jnp.ones((2,), jnp.float32)
  comp = fns.init_client(g)
  comp_all = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (4,) + x.shape), comp)
  ctx = fns.context(fns.init_server(g), 1)
  out, _ = fns.client_phase(g, frozen, exp.clients, ids, key, ratios, comp_all, ctx)

  # reference: same batches and keys, one client at a time
  batches, keys = fns.sample(key, exp.clients, ids)
  one = jax.jit(fns.one_client)
  deltas, bits, losses = [], [], []
  for c in range(2):
    b_c = jax.tree_util.tree_map(lambda x: x[c], batches)
    o, _ = one(g, frozen, b_c, keys[c], ratios[c], comp, ctx)
    deltas.append(o.delta)
    bits.append(o.bits)
    losses.append(o.metrics["loss"])
  ref_delta = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *deltas)
  chex.assert_trees_all_close(out.delta, ref_delta, rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(out.bits, np.array(bits), rtol=0)
  np.testing.assert_allclose(out.metrics["loss"], np.array(losses), rtol=1e-4)
  # the update is not trivially zero: training moved the adapters and the head
  assert float(jnp.abs(out.delta["classifier"]["kernel"]).max()) > 0
  w = exp.clients.num_examples[ids].astype(jnp.float32)
  chex.assert_trees_all_close(fns.server_phase(g, fns.init_server(g), out.delta, w, 1)[0],
                              fedavg(g, ref_delta, w), rtol=2e-4, atol=2e-6)


def test_local_training_lowers_the_loss(tiny_exp):
  """Convergence on a tiny task: E steps on one client's batch reduce that client's loss."""
  exp = tiny_exp
  fns = exp.round_fns
  batches, keys = fns.sample(jax.random.PRNGKey(0), exp.clients, jnp.array([1]))
  one_batch = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x[0, :1], (8,) + x.shape[2:]), batches)
  g = exp.parts.trainable
  o, _ = jax.jit(fns.one_client)(g, exp.parts.frozen, one_batch, keys[0], jnp.float32(1.0),
                                 fns.init_client(g), fns.context(fns.init_server(g), 1))
  new = jax.tree_util.tree_map(jnp.add, exp.parts.trainable, o.delta)
  from fedlora.tasks.classification import make_loss
  loss = make_loss(exp.parts)
  b0 = jax.tree_util.tree_map(lambda x: x[0], one_batch)
  before = float(loss(exp.parts.trainable, exp.parts.frozen, b0, None)[0])
  after = float(loss(new, exp.parts.frozen, b0, None)[0])
  assert after < 0.7 * before


def test_tsfa_payload_model_equals_soft_bits_on_the_rank_grid(tiny_exp):
  """TSFA plans with bits(ρ) = c0 + c1·ρ; at ρ = m/r that is exactly what SOFT reports."""
  from fedlora.compress import get_compressor
  g = tiny_exp.parts.trainable
  soft = get_compressor("soft", {})
  c0, c1 = soft.payload(g)
  delta = jax.tree_util.tree_map(lambda x: 0.01 * jnp.ones_like(x), g)
  r = tiny_exp.config.lora.rank
  for m in (1, 3, r):
    out = soft.update(soft.init(g), delta, jnp.float32(m / r), jax.random.PRNGKey(0), g)
    assert float(out.bits) == c0 + c1 * m / r

"""Federated rounds: vmapped client phase == Python-loop reference, FedAvg properties."""
import jax
import pytest
import jax.numpy as jnp
import numpy as np
import chex

from fedlora.server.aggregate import fedavg, senders_mean, weighted_mean
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


def test_senders_mean_averages_each_entry_over_the_uploads_that_carry_it():
  """server.mean='senders' equals a per-entry Python loop over the clients (a dropped upload, weight
  0, counts for nothing; an entry no delivered upload carries stays 0) and, for dense uploads, FedAvg."""
  rng = np.random.default_rng(0)
  dense = rng.normal(size=(5, 4, 6)).astype(np.float32)
  sent = np.where(rng.random((5, 4, 6)) < 0.3, dense, 0.0).astype(np.float32)
  sent[:, 0, 0] = 0.0                      # nobody sends this entry
  sent[2, 1, 1] = 7.0                      # only the dropped client sends this one
  sent[[0, 1, 3, 4], 1, 1] = 0.0
  w = np.array([1.0, 2.0, 0.0, 3.0, 4.0], np.float32)
  ref = np.zeros((4, 6))
  for i in range(4):
    for j in range(6):
      num = den = 0.0
      for c in range(5):
        if sent[c, i, j] != 0:
          num, den = num + w[c] * sent[c, i, j], den + w[c]
      ref[i, j] = num / den if den > 0 else 0.0
  out = senders_mean({"x": jnp.asarray(sent)}, jnp.asarray(w))["x"]
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
  assert out[0, 0] == 0 and out[1, 1] == 0
  full = {"x": jnp.asarray(dense)}
  chex.assert_trees_all_close(senders_mean(full, jnp.asarray(w)), weighted_mean(full, jnp.asarray(w)),
                              rtol=1e-6)


def test_server_mean_is_chosen_by_config_and_checked():
  from fedlora.server import build_server
  cfg = {"name": "fedavg", "lr": 1.0, "lr_schedule": "constant", "lr_warmup_rounds": 0,
         "lr_final_fraction": 0.0}
  assert build_server(cfg, 4).mean is weighted_mean
  assert build_server(dict(cfg, mean="senders"), 4).mean is senders_mean
  with pytest.raises(ValueError, match=r"config.server.mean='count'.*'all', 'senders'"):
    build_server(dict(cfg, mean="count"), 4)


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


@pytest.mark.parametrize("scaffold", [False, True])
def test_chunked_client_phase_equals_unchunked_with_error_feedback_state(scaffold):
  """K=3 clients in chunks of 2 (last chunk padded with a dummy client) give the same updates, bits,
  metrics and error-feedback states (random-k: its selection does not hinge on float ties) as one
  vmapped chunk of 3, over two rounds (the second one reads the residuals the first one wrote);
  the never-sampled client's state stays untouched (padding writes nothing)."""
  from conftest import tiny_config
  from fedlora.train import build
  over = {"method.name": "randk", "method.ratio": 0.25, "compress.error_feedback": True,
          "optim.name": "sgd", "optim.lr": 0.5,  # SGD: no Adam amplification of 1-ulp differences
          "fed.clients_per_round": 3, "client.scaffold": scaffold,  # SCAFFOLD: c_i is one more key
          "model.num_layers": 1}  # one layer: chunking does not depend on depth (faster compile)
  runs = {}
  for chunk in (2, 3):
    exp = build(tiny_config(**over, **{"fed.client_chunk": chunk}))
    assert exp.round_fns.client_chunk == chunk
    g, frozen = exp.parts.trainable, exp.parts.frozen
    states = exp.round_fns.init_client_states(g, 4)
    outs = []
    for t, ids in enumerate((jnp.array([0, 1, 3]), jnp.array([3, 0, 1]))):  # client 2 never
      out, states = exp.round_fns.client_phase(g, frozen, exp.clients, ids, jax.random.PRNGKey(t),
                                               jnp.full((3,), 0.25), states, exp.round_fns.context(exp.round_fns.init_server(g), 1))
      outs.append(out)
    runs[chunk] = (outs, states)
  (o2, s2), (o3, s3) = runs[2], runs[3]
  for a, b in zip(o2, o3):
    chex.assert_trees_all_close(a.delta, b.delta, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(a.bits, b.bits)
    chex.assert_trees_all_close(a.metrics, b.metrics, rtol=1e-5, atol=1e-6)
    chex.assert_tree_shape_prefix(a.delta, (3,))
    chex.assert_trees_all_close(a.control_delta, b.control_delta, rtol=1e-5, atol=1e-7)
  assert set(s2) == ({"compressor", "scaffold"} if scaffold else {"compressor"})
  chex.assert_trees_all_close(s2, s3, rtol=1e-5, atol=1e-7)
  # the residual is what random-k dropped from the adapters: nonzero for the sampled clients only
  row_max = jnp.stack([jnp.abs(x).reshape(4, -1).max(1) for x in jax.tree_util.tree_leaves(s2)]).max(0)
  assert [float(v) > 0 for v in row_max] == [True, True, False, True]


def test_chunked_guard_keeps_a_nonfinite_clients_whole_state_row():
  """The non-finite guard over the generic per-client state: K=3 in chunks of 2, client 1's
  error-feedback row poisoned with NaN -> its flag is False, its upload zero, and its whole row
  (every key, here 'compressor' and an extra 'control') left as it was; the other clients' rows update;
  the same result as one chunk of 3."""
  from conftest import tiny_config
  from fedlora.train import build
  over = {"method.name": "randk", "method.ratio": 0.25, "compress.error_feedback": True,
          "optim.name": "sgd", "optim.lr": 0.5, "fed.clients_per_round": 3,
          "model.num_layers": 1}  # one layer: the guard does not depend on depth (faster compile)
  ids = jnp.array([0, 1, 3])
  res = {}
  for chunk in (2, 3):
    exp = build(tiny_config(**over, **{"fed.client_chunk": chunk}))
    g = exp.parts.trainable
    st = exp.round_fns.init_client_states(g, 4)
    st = {"compressor": jax.tree_util.tree_map(lambda x: x.at[1].set(jnp.nan), st["compressor"]),
          "control": jnp.arange(4.0)}
    before = jax.tree_util.tree_map(np.asarray, st)
    out, new = exp.round_fns.client_phase(g, exp.parts.frozen, exp.clients, ids, jax.random.PRNGKey(0),
                                          jnp.full((3,), 0.25), st, exp.round_fns.context(exp.round_fns.init_server(g), 1))
    np.testing.assert_array_equal(out.metrics["finite"], [True, False, True])
    for x in jax.tree_util.tree_leaves(out.delta):
      assert float(jnp.abs(x[1]).max()) == 0.0 and float(jnp.abs(x[0]).max()) > 0
    for b, n in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(new)):
      np.testing.assert_array_equal(np.asarray(n)[1], b[1])  # NaN row kept as it was
    np.testing.assert_array_equal(new["control"], before["control"])
    moved = [float(np.abs(np.asarray(n)[0] - b[0]).max())
             for b, n in zip(jax.tree_util.tree_leaves(before["compressor"]), jax.tree_util.tree_leaves(new["compressor"]))]
    assert max(moved) > 0
    res[chunk] = (out, new)
  chex.assert_trees_all_close(res[2][0].delta, res[3][0].delta, rtol=1e-5, atol=1e-7)


def test_auto_chunk_fits_the_budget_and_matches_fixed_chunk(capsys):
  """fed.client_chunk=0 sizes C from XLA's estimate of one client's step: a budget that leaves room
  for about 2 clients picks C=2 (and prints why); a huge budget runs all K in one chunk."""
  from conftest import tiny_config
  from fedlora.train import build
  from fedlora.fed import memory
  big = build(tiny_config(**{"fed.clients_per_round": 4, "fed.memory_budget_gb": 64.0}))
  ch = big.chunk_choice
  assert big.round_fns.client_chunk == 4 and ch.per_client_bytes > 0
  assert "client_chunk=4 of K=4" in capsys.readouterr().out
  budget_gb = (ch.fixed_bytes + 2.5 * ch.per_client_bytes) / 2**30
  small = build(tiny_config(**{"fed.clients_per_round": 4, "fed.memory_budget_gb": budget_gb}))
  assert small.round_fns.client_chunk == 2
  assert "client_chunk=2 of K=4 (2 chunk(s))" in capsys.readouterr().out
  c = memory.choose_chunk(10, 100, 50, 50 + 350, "test", devices=2)
  assert c.chunk == 2  # 3 fit, rounded down to the 2 devices of the clients axis
  # the CPU cap (fed.cpu_chunk_tokens): at most `cap` (to the devices' multiple), balanced, named
  for cap, devices, want in ((3, 1, 3), (3, 2, 4), (7, 1, 5), (20, 1, 10)):
    c = memory.choose_chunk(10, 1, 0, 10**6, "test", devices=devices, cap=cap, cap_why="the cap")
    assert c.chunk == want and (("capped at" in c.reason) == (cap < 10)), (cap, devices, c)
  assert "the cap" in memory.choose_chunk(10, 1, 0, 10**6, "test", cap=3, cap_why="the cap").reason
  capped = build(tiny_config(**{"fed.clients_per_round": 4, "fed.memory_budget_gb": 64.0,
                                "fed.cpu_chunk_tokens": 1}))  # 1 token: one client per chunk
  assert capped.round_fns.client_chunk == 1
  assert "capped at 1 by fed.cpu_chunk_tokens=1" in capsys.readouterr().out


def test_remat_cuts_the_per_client_step_memory():
  """model.remat='block' lowers XLA's estimate of what each client adds to the step (the residuals a
  block keeps for the backward pass) by more than a quarter on the tiny 2-layer model; with the old
  Python loop of checkpointed blocks the estimate was byte-identical to no remat (XLA apparently merged each
  recomputation with its forward pass). The stacked block weights count once, as shared bytes."""
  from conftest import tiny_config
  from fedlora.fed.memory import client_step_bytes
  from fedlora.train import build
  est = {}
  for r in ("none", "block"):
    exp = build(tiny_config(**{"fed.client_chunk": 2, "model.remat": r}))
    est[r] = client_step_bytes(exp.round_fns, exp.parts.trainable, exp.parts.frozen, exp.clients)
  assert est["block"]["per_client"] < 0.75 * est["none"]["per_client"], est
  layers = sum(x.nbytes for x in jax.tree_util.tree_leaves(exp.parts.frozen["encoder"]["layers"]))
  assert est["block"]["shared"] >= layers > est["none"]["shared"]  # one stacked copy, not per client


def test_remat_is_exact_and_bf16_keeps_trainable_float32():
  """model.remat='block' recomputes the same numbers (same updates, also with LoRA dropout: the scan
  over blocks folds each block's own key); bfloat16 frozen base and matmuls give the same first loss
  to bf16 precision while LoRA factors, head and updates stay float32."""
  from conftest import tiny_config
  from fedlora.train import build
  outs = {}
  # two encoder layers (a scan of two blocks) and a fixed chunk of K=2 (no auto-chunk compile)
  small = {"model.num_layers": 2, "fed.client_chunk": 2, "lora.dropout": 0.1}
  for name, over in (("f32", {}), ("remat", {"model.remat": "block"}),
                     ("bf16", {"model.compute_dtype": "bfloat16", "model.param_dtype": "bfloat16"})):
    exp = build(tiny_config(**over, **small))
    g = exp.parts.trainable
    st = exp.round_fns.init_client_states(g, 4)
    out, _ = exp.round_fns.client_phase(g, exp.parts.frozen, exp.clients, jnp.array([0, 2]),
                                        jax.random.PRNGKey(1), jnp.ones(2), st, exp.round_fns.context(exp.round_fns.init_server(g), 1))
    outs[name] = out
    kernel = exp.parts.frozen["encoder"]["layers"][0]["attention"]["query"]["kernel"]
    assert kernel.dtype == (jnp.bfloat16 if name == "bf16" else jnp.float32)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves((g, out.delta)))
  # the scan fuses the blocks' arithmetic differently: float32 rounding, measured ≤ 1.3e-6 on updates
  # of ~1.5e-3 (Adam amplifies it where a gradient is near 0); other dropout keys move them by 8e-3
  chex.assert_trees_all_close(outs["remat"].delta, outs["f32"].delta, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(outs["bf16"].metrics["first_loss"], outs["f32"].metrics["first_loss"],
                             rtol=2e-2)

"""Skewed clients: server optimisers, FedProx / SCAFFOLD drift control, client lr schedules,
label-skew losses and the skew metrics — each against a slow obvious reference."""
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from fedlora import train
from fedlora.config import typed
from fedlora.drift import build_drift
from fedlora.fed.config import ClientConfig
from fedlora.fed.local import make_local_update
from fedlora.fed.round import make_round
from fedlora.optim import make_optimizer
from fedlora.schedules import round_schedule
from fedlora.section import ConfigError
from fedlora.server import SERVERS, build_server
from fedlora.tasks.classification import make_loss
from fedlora.tasks.label_skew import client_label_counts, fedlc, fedrs
from fedlora.tasks.skew_metrics import skew_metrics
from fedlora.utils.checkpoint import Checkpointer
from fedlora.utils.metrics import read_metrics

NAMES = SERVERS.names()

SERVER_CFG = {"name": "fedavg", "lr": 0.5, "lr_schedule": "constant", "lr_warmup_rounds": 0,
              "lr_final_fraction": 0.0, "momentum": 0.8, "nesterov": False, "b1": 0.9,
              "b2": 0.99, "tau": 1e-2}


def _toy_tree(seed):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return {"a": jax.random.normal(k1, (3, 2)), "b": {"c": jax.random.normal(k2, (4,))}}


def _server(name, **kw):
  return build_server(dict(SERVER_CFG, name=name, **kw), total_rounds=6)


def _ref_server(name, x, deltas, lr):
  """numpy reference of the five server optimisers (Hsu et al. 2019; Reddi et al. 2021, Alg. 2)."""
  x = np.asarray(x, np.float64)
  m, v, mom = np.zeros_like(x), np.full_like(x, 1e-4), np.zeros_like(x)
  for d in deltas:
    d = np.asarray(d, np.float64)
    g = -d
    if name == "fedavg":
      x = x + lr * d
    elif name == "fedavgm":
      mom = 0.8 * mom + g
      x = x - lr * mom
    else:
      m = 0.9 * m + 0.1 * g
      if name == "fedadagrad":
        v = v + g * g
      elif name == "fedadam":
        v = 0.99 * v + 0.01 * g * g
      else:
        v = v - 0.01 * g * g * np.sign(v - g * g)
      x = x - lr * m / (np.sqrt(v) + 1e-2)
  return x


@pytest.mark.parametrize("name", NAMES)
def test_server_optimiser_matches_hand_reference(name):
  """Four server steps on a toy tree equal the numpy transcription of the paper's update."""
  opt = _server(name)
  x = _toy_tree(0)
  deltas = [_toy_tree(s + 1) for s in range(4)]
  state = opt.init(x)
  for t, d in enumerate(deltas, 1):
    x, state = opt.update(state, x, d, t, jnp.bool_(True))
  for path in (("a",), ("b", "c")):
    get = lambda t: t[path[0]] if len(path) == 1 else t[path[0]][path[1]]  # noqa: E731
    ref = _ref_server(name, get(_toy_tree(0)), [get(d) for d in deltas], 0.5)
    np.testing.assert_allclose(np.asarray(get(x)), ref, rtol=2e-5, atol=1e-6)


def test_fedavg_server_at_lr_1_is_plain_fedavg_and_no_delivery_is_no_step():
  opt = _server("fedadam")
  x = _toy_tree(0)
  state = opt.init(x)
  y, s2 = opt.update(state, x, _toy_tree(1), 1, jnp.bool_(False))
  chex.assert_trees_all_equal(y, x)
  chex.assert_trees_all_equal(s2, state)
  avg = _server("fedavg", lr=1.0)
  y, _ = avg.update(avg.init(x), x, _toy_tree(1), 1, jnp.bool_(True))
  chex.assert_trees_all_equal(y, jax.tree_util.tree_map(jnp.add, x, _toy_tree(1)))


@pytest.mark.parametrize("name", NAMES)
def test_server_state_resumes_bit_identically(name, tmp_path):
  """Save the params + optimiser state after step 2 with the run's Checkpointer, restore into a
  fresh structure and continue: steps 3-4 equal the uninterrupted run bit for bit."""
  opt = _server(name, lr_schedule="cosine", lr_warmup_rounds=1)
  deltas = [_toy_tree(s + 1) for s in range(4)]

  def steps(x, state, ts):
    for t in ts:
      x, state = opt.update(state, x, deltas[t - 1], t, jnp.bool_(True))
    return x, state
  x0 = _toy_tree(0)
  full = steps(x0, opt.init(x0), [1, 2, 3, 4])
  half = steps(x0, opt.init(x0), [1, 2])
  ck = Checkpointer(str(tmp_path), 2)
  ck.save(2, {"trainable": half[0], "server": {"opt": half[1]}})
  like = {"trainable": x0, "server": {"opt": opt.init(x0)}}
  restored = ck.restore(2, like)
  ck.close()
  resumed = steps(restored["trainable"], restored["server"]["opt"], [3, 4])
  chex.assert_trees_all_equal(resumed, full)


def test_round_schedules():
  w = round_schedule("warmup", 4, 20)
  np.testing.assert_allclose([float(w(t)) for t in (1, 2, 4, 9)], [0.25, 0.5, 1.0, 1.0])
  c = round_schedule("cosine", 2, 12, 0.1)
  ref = [0.5, 1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 2) / 10)) for t in range(3, 13)]
  np.testing.assert_allclose([float(c(t)) for t in range(1, 13)], ref, rtol=1e-6)
  assert float(round_schedule("constant", 3, 10)(1)) == 1.0


def _quad_loss(target):
  def loss(params, frozen, batch, key):
    r = params["w"] - target * batch["x"]
    return 0.5 * jnp.sum(r * r), {"acc": jnp.float32(0)}
  return loss


def test_fedprox_scaffold_and_lr_scale_match_hand_sgd():
  """E SGD steps on 0.5‖w − x_k·t‖² with FedProx (μ), SCAFFOLD's shift (c − c_i) and a round lr
  scale s equal the hand recurrence w <- w − s·η·(g + μ(w − w0) + c − c_i); SCAFFOLD's new c_i is
  the mean raw gradient."""
  t = jnp.array([1.0, -2.0, 0.5])
  batches = {"x": jnp.array([1.0, 0.5, 2.0, -1.0])}
  w0 = {"w": jnp.array([0.3, 0.1, -0.2])}
  mu, eta, s = 0.7, 0.1, 0.5
  shift = {"w": jnp.array([0.05, -0.1, 0.2])}
  dc = build_drift(ClientConfig.from_dict({"prox_mu": mu, "scaffold": True}), w0, None, 32, 4)
  assert [c.name for c in dc.corrections] == ["fedprox", "scaffold"]
  local = make_local_update(_quad_loss(t), optax.sgd(eta), dc.correct, track_grads=True)
  w, _, gmean = local(w0, None, batches, jax.random.PRNGKey(0), s,
                      {"fedprox": w0, "scaffold": shift})  # FedProx's w_global, SCAFFOLD's c − c_i
  ref, gs = np.asarray(w0["w"], np.float64), []
  for x in np.asarray(batches["x"]):
    g = ref - x * np.asarray(t)
    gs.append(g)
    ref = ref - s * eta * (g + mu * (ref - np.asarray(w0["w"])) + np.asarray(shift["w"]))
  np.testing.assert_allclose(np.asarray(w["w"]), ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gmean["w"]), np.mean(gs, 0), rtol=1e-5, atol=1e-6)


def _round_fns(exp, drift, lr_scale=None, server=None, num_classes=0):
  c = exp.config
  labels = None
  return make_round(make_loss(exp.parts), make_optimizer(c.optim, labels), exp.method.compressor,
                    local_steps=c.fed.local_steps, batch_size=c.fed.batch_size, drift=drift,
                    client_lr_scale=lr_scale, server=server, num_classes=num_classes)


def _states(fns, g, n):
  return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), fns.init_client(g))


def test_fedprox_mu0_and_zero_scaffold_equal_fedavg(tiny_exp):
  """One round: FedProx with μ = 0, and SCAFFOLD with zero control variates (its first round), give
  FedAvg's updates and aggregate; SCAFFOLD's upload adds exactly its dense Δc bits."""
  exp = tiny_exp
  g, frozen = exp.parts.trainable, exp.parts.frozen
  ids, key, ratios = jnp.array([1, 3]), jax.random.PRNGKey(7), jnp.ones(2)
  n = exp.clients.num_clients
  w = exp.clients.num_examples[ids].astype(jnp.float32)
  res = {}
  for label, (mu, sc) in {"fedavg": (0.0, False), "prox0": (0.0, False),
                          "scaffold": (0.0, True)}.items():
    cfg = tiny_config(**{"client.prox_mu": mu, "client.scaffold": sc}).client
    dc = build_drift(cfg, g, None, 32, n)
    fns = _round_fns(exp, dc)
    sstate = fns.init_server(g)
    out, _ = fns.client_phase(g, frozen, exp.clients, ids, key, ratios, _states(fns, g, n),
                              fns.context(sstate, 1))
    res[label] = (out, fns.server_phase(g, sstate, out.delta, w, 1, out.control_delta)[0])
  for label in ("prox0", "scaffold"):
    chex.assert_trees_all_equal(res[label][0].delta, res["fedavg"][0].delta)
    chex.assert_trees_all_equal(res[label][1], res["fedavg"][1])
  size = sum(x.size for x in jax.tree_util.tree_leaves(g))
  np.testing.assert_array_equal(res["scaffold"][0].bits, res["fedavg"][0].bits + 32.0 * size)


def test_vmapped_round_with_drift_control_equals_python_loop(tiny_exp):
  """FedProx + SCAFFOLD (non-zero c and c_i) + a client lr scale: the jitted vmapped client phase
  equals a client-by-client loop over `one_client`; the sampled clients' c_i are scattered back,
  the others untouched; the server variate moves by Σ Δc_i / N."""
  exp = tiny_exp
  g, frozen = exp.parts.trainable, exp.parts.frozen
  n = exp.clients.num_clients
  cfg = tiny_config(**{"client.prox_mu": 0.3, "client.scaffold": True}).client
  dc = build_drift(cfg, g, None, 32, n)
  fns = _round_fns(exp, dc, lr_scale=round_schedule("warmup", 4, 10))
  leaves, treedef = jax.tree_util.tree_flatten(g)
  rnd = lambda s, shape: 0.01 * jax.random.normal(jax.random.PRNGKey(s), shape)  # noqa: E731
  states = _states(fns, g, n)
  states["scaffold"] = jax.tree_util.tree_unflatten(
      treedef, [rnd(i, (n,) + x.shape) for i, x in enumerate(leaves)])
  sstate = fns.init_server(g)
  sstate["control"] = jax.tree_util.tree_unflatten(
      treedef, [rnd(100 + i, x.shape) for i, x in enumerate(leaves)])
  ctx = fns.context(sstate, 2)
  assert float(ctx["lr_scale"]) == 0.5
  ids, key, ratios = jnp.array([0, 2]), jax.random.PRNGKey(3), jnp.ones(2)
  out, new_states = fns.client_phase(g, frozen, exp.clients, ids, key, ratios, states, ctx)
  batches, keys = fns.sample(key, exp.clients, ids)
  one = jax.jit(fns.one_client)
  refs = []
  for c in range(2):
    st = jax.tree_util.tree_map(lambda x: x[ids[c]], states)
    refs.append(one(g, frozen, jax.tree_util.tree_map(lambda x: x[c], batches), keys[c],
                    ratios[c], st, ctx))
  stack = lambda *x: jnp.stack(x)  # noqa: E731
  chex.assert_trees_all_close(out.delta, jax.tree_util.tree_map(stack, *[r[0].delta for r in refs]),
                              rtol=2e-4, atol=2e-6)
  chex.assert_trees_all_close(out.control_delta,
                              jax.tree_util.tree_map(stack, *[r[0].control_delta for r in refs]),
                              rtol=2e-4, atol=2e-6)
  for c in range(2):
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[ids[c]], new_states["scaffold"]),
                                refs[c][1]["scaffold"], rtol=2e-4, atol=2e-6)
  for other in (1, 3):
    chex.assert_trees_all_equal(jax.tree_util.tree_map(lambda x: x[other], new_states),
                                jax.tree_util.tree_map(lambda x: x[other], states))
  assert float(jnp.abs(out.control_delta["scaffold"]["classifier"]["kernel"]).max()) > 0
  w = exp.clients.num_examples[ids].astype(jnp.float32)
  _, s2 = fns.server_phase(g, sstate, out.delta, w, 2, out.control_delta)
  want = jax.tree_util.tree_map(lambda c, d: c + d.sum(0) / n, sstate["control"],
                                out.control_delta["scaffold"])
  chex.assert_trees_all_close(s2["control"], want, rtol=1e-5, atol=1e-7)


def test_label_skew_losses_match_hand_computation():
  logits = jnp.array([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 0.3, 3.0]])
  counts = jnp.array([9.0, 1.0, 0.0, 16.0])
  labels = np.array([0, 3])
  z = np.asarray(logits, np.float64)

  def ce(zz):
    zz = zz - zz.max(1, keepdims=True)
    return -(zz[np.arange(2), labels] - np.log(np.exp(zz).sum(1))).mean()
  tau = 0.8
  cal = z - tau * np.array([9.0, 1.0, 1.0, 16.0]) ** -0.25
  cal[:, 2] = -np.inf  # an absent class drops out of the softmax
  got = optax.softmax_cross_entropy_with_integer_labels(fedlc(logits, counts, tau), labels).mean()
  np.testing.assert_allclose(float(got), ce(cal), rtol=1e-6)
  rs = z * np.array([1.0, 1.0, 0.3, 1.0])
  got = optax.softmax_cross_entropy_with_integer_labels(fedrs(logits, counts, 0.3), labels).mean()
  np.testing.assert_allclose(float(got), ce(rs), rtol=1e-6)
  np.testing.assert_array_equal(fedrs(logits, counts, 1.0), logits)


def test_label_counts_reach_the_batches():
  """With a label-skew loss, every sampled client's batch carries its own training histogram."""
  exp = train.build(tiny_config(**{"client.logit_adjust": "fedlc"}))
  ids = jnp.array([0, 3])
  batches, _ = exp.round_fns.sample(jax.random.PRNGKey(0), exp.clients, ids)
  e = exp.config.fed.local_steps
  hist = exp.data.info["histogram"]
  want = np.repeat(np.asarray(hist)[np.asarray(ids)][:, None, :], e, 1)
  np.testing.assert_array_equal(np.asarray(batches["label_counts"]), want)
  np.testing.assert_array_equal(
      client_label_counts(exp.clients.labels, exp.clients.num_examples,
                          len(exp.data.info["label_names"])),
      np.asarray(hist))


def test_skew_metrics_from_a_hand_confusion_matrix():
  conf = np.array([[8, 2, 0], [1, 3, 0], [5, 0, 0]], float)  # rows true, cols predicted
  hist = np.array([[10, 0, 0], [0, 5, 5], [1, 1, 2], [0, 0, 4]], float)
  m = skew_metrics(conf, hist)
  recall = np.array([0.8, 0.75, 0.0])
  prec = np.array([8 / 14, 3 / 5, 0.0])
  f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(prec, recall)]
  assert m["balanced_accuracy"] == pytest.approx(recall.mean())
  assert m["macro_f1"] == pytest.approx(np.mean(f1))
  client = [0.8, 0.375, (0.8 + 0.75) / 4, 0.0]
  assert m["client_accuracy_mean"] == pytest.approx(np.mean(client))
  assert m["client_accuracy_worst10"] == pytest.approx(0.0)  # ceil(4/10) = 1 worst client


@pytest.mark.parametrize("key,value,match", [
    ("server.name", "fedsgd", "server.name='fedsgd'"),
    ("server.lr", 0.0, "server.lr=0.0"),
    ("server.b2", 1.0, "server.b2=1.0"),  # checked by the adaptive optimiser that uses it
    ("server.lr_schedule", "step", "server.lr_schedule='step'"),
    ("client.prox_mu", -1.0, "client.prox_mu=-1.0"),
    ("client.logit_adjust", "focal", "client.logit_adjust='focal'"),
    ("client.fedrs_alpha", 1.5, "client.fedrs_alpha=1.5"),
    ("client.lr_warmup_rounds", -2, "client.lr_warmup_rounds=-2"),
])
def test_bad_server_and_client_values_are_named(key, value, match):
  with pytest.raises(ConfigError, match=match):
    extra = {"server.name": "fedadam"} if key == "server.b2" else {}
    typed(tiny_config(**{key: value, **extra}))


def test_skewed_run_resumes_and_counts_scaffold_bits(tmp_path, monkeypatch):
  """FedYogi (cosine server lr) + SCAFFOLD + FedProx + FedLC + client warm-up on the tiny config:
  interrupted after round 2 and rerun == uninterrupted, bit for bit (server optimiser state, server
  variate and every client's c_i included); each upload and download carries the dense control
  variate; the skew metrics are written."""
  over = {"fed.rounds": 3, "server.name": "fedyogi", "server.lr": 0.05, "server.lr_schedule": "cosine",
          "client.scaffold": True, "client.prox_mu": 0.01, "client.logit_adjust": "fedlc",
          "client.lr_schedule": "warmup", "client.lr_warmup_rounds": 2,
          "fed.client_chunk": 2}  # K=2 in one chunk, as auto-chunking picks (without its compile)
  c_full = tiny_config(**over, workdir=str(tmp_path / "full"))
  real_build, built = train.build, []
  monkeypatch.setattr(train, "build", lambda c: built.append(real_build(c)) or built[-1])
  s_full = train.run(c_full)
  exp = built[0]
  c_int = tiny_config(**over, workdir=str(tmp_path / "int"))
  real = exp.algorithm.apply

  def crash(state, t):
    if t == 3:
      raise KeyboardInterrupt("simulated")
    return real(state, t)
  # the interrupted run reuses the full run's build (same config but the workdir: the same jitted
  # functions, no second compile); the resumed run below builds afresh, as a rerun does
  monkeypatch.setattr(train, "build", lambda c: exp._replace(
      config=c, algorithm=exp.algorithm._replace(apply=crash)))
  with pytest.raises(KeyboardInterrupt):
    train.run(c_int)
  monkeypatch.setattr(train, "build", real_build)
  s_int = train.run(c_int)
  assert s_int["resumed_from_round"] == 2
  like = exp.algorithm.init()
  states = []
  for c in (c_full, c_int):
    ck = Checkpointer(c.workdir, 2)
    states.append(ck.restore(3, like))
    ck.close()
  chex.assert_trees_all_equal(states[0], states[1])
  assert float(jnp.abs(states[0]["server"]["control"]["classifier"]["kernel"]).max()) > 0
  assert float(jnp.abs(states[0]["server"]["opt"].v["classifier"]["kernel"]).max()) > 0
  size = sum(x.size for x in jax.tree_util.tree_leaves(exp.parts.trainable))
  recs = read_metrics(str(tmp_path / "full/metrics.jsonl"))
  k = c_full.fed.clients_per_round
  for r in recs:
    assert r["uplink_bits"] == [2 * 32.0 * size] * k  # dense update + dense Δc_i
    assert r["downlink_bytes_round"] == k * 2 * 32.0 * size / 8  # model + server variate
    assert r["scaffold_uplink_bytes_round"] == k * 32.0 * size / 8
    for m in ("balanced_accuracy", "macro_f1", "client_accuracy_mean", "client_accuracy_worst10"):
      assert 0.0 <= r[f"test_{m}"] <= 1.0
  assert [r["client_lr_scale"] for r in recs] == [0.5, 1.0, 1.0]
  assert s_full["final_test_accuracy"] == s_int["final_test_accuracy"]
  assert s_full["final_test_balanced_accuracy"] is not None


def test_scaffold_bits_skip_leaves_the_method_freezes(tiny_exp):
  """FFA-LoRA freezes A: SCAFFOLD's c_i is zero there and its upload counts only B and the head."""
  from fedlora import lora
  g = tiny_exp.parts.trainable
  labels = lora.trainable_labels(g, "lora_a$")
  dc = build_drift(tiny_config(**{"client.scaffold": True}).client, g, labels, 16, 4)
  flat = jax.tree_util.tree_flatten_with_path(g)[0]
  n_a = sum(x.size for p, x in flat if "lora_a" in jax.tree_util.keystr(p))
  total = sum(x.size for _, x in flat)
  scaffold = {c.name: c for c in dc.corrections}["scaffold"]
  assert n_a > 0 and scaffold.upload_values == total - n_a
  assert dc.upload_bits_of("scaffold") == 16.0 * (total - n_a)
  grads = jax.tree_util.tree_map(jnp.ones_like, g)
  new, uploads, bits = dc.finish(dc.init_client(g), grads)
  for p, x in jax.tree_util.tree_flatten_with_path(new["scaffold"])[0]:
    assert float(jnp.abs(x).max()) == (0.0 if "lora_a" in jax.tree_util.keystr(p) else 1.0)


def test_all_options_combine_with_soft_tsfa_over_the_channel(tmp_path, monkeypatch):
  """SOFT + TSFA over the wireless uplink with FedAvgM, SCAFFOLD, FedProx, FedRS and a cosine client
  lr: each upload is SOFT's payload at its planned ratio plus the dense Δc_i, and the run finishes
  with finite accuracy."""
  c = tiny_config(**{"workdir": str(tmp_path / "w"), "method.name": "soft", "wireless.enabled": True,
                     "server.name": "fedavgm", "server.lr": 0.5, "client.scaffold": True,
                     "client.prox_mu": 0.01, "client.logit_adjust": "fedrs",
                     "client.lr_schedule": "cosine", "checkpoint.every": 10,
                     "fed.client_chunk": 2})  # K=2 in one chunk, as auto-chunking picks (no compile)
  real_build, built = train.build, []
  monkeypatch.setattr(train, "build", lambda c: built.append(real_build(c)) or built[-1])
  s = train.run(c)
  assert 0.0 <= s["final_test_accuracy"] <= 1.0
  exp = built[0]  # the run's own experiment
  c0, c1 = exp.method.compressor.payload(exp.parts.trainable)  # SOFT's own payload model
  extra = exp.round_fns.drift.upload_bits_of("scaffold")
  assert extra > 0
  for r in read_metrics(str(tmp_path / "w/metrics.jsonl")):
    np.testing.assert_allclose(r["uplink_bits"], [c0 + c1 * rho + extra for rho in r["ratio"]],
                               rtol=1e-6)

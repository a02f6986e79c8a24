"""One way to register anything: for every kind of component, a new one registered from a test-local
file (tests/fixtures/plugins.py) is found by name, its own keys are config keys (defaults, CLI,
validation), and a round runs with it and shows its effect."""
import importlib
import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from fedlora.config import defaults, typed
from fedlora.section import ConfigError

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))


@pytest.fixture(scope="module")
def plugins():
  """The test-local components, registered for this module's tests and removed afterwards."""
  import plugins as mod
  mod = importlib.reload(mod)  # registers (again) on import
  yield mod
  for reg, name in mod.NAMES.items():
    reg.unregister(name)
  from fedlora.methods import METHODS
  METHODS.unregister(mod.METHOD)
  METHODS.unregister(mod.METHOD_ONLY_B)


@pytest.fixture(scope="module")
def combined(plugins, tmp_path_factory):
  """One round with the test-local model family, data source, partition, LoRA init and schedule
  together (each test below checks its own component's effect; one build keeps the suite short)."""
  from fedlora.utils.model_path import resolve_model_path
  src = resolve_model_path(typed(small()).model)
  dst = tmp_path_factory.mktemp("family") / "model"
  shutil.copytree(src, dst)
  cfg = json.loads((dst / "config.json").read_text())
  (dst / "config.json").write_text(json.dumps(dict(cfg, model_type="plug_bert")))
  before = plugins.CALLS["reader"]
  out = one_round(small(**{"model.path": str(dst), "data.source": "plug_bbc_titles",
                           "data.max_length": 32, "data.partition": "plug_contiguous",
                           "lora.init": "plug_constant", "lora.plug_init_value": 0.02,
                           "client.lr_schedule": "plug_halving"}))
  return out, plugins.CALLS["reader"] - before


def small(**kw):
  """The tiny experiment cut to one layer, 16 tokens, 3 clients, one local step, one round."""
  return tiny_config(**{"model.num_layers": 1, "data.max_length": 16, "data.max_examples": 60,
                        "data.num_clients": 3, "data.min_examples_per_client": 4, "fed.rounds": 1,
                        "fed.clients_per_round": 2, "fed.local_steps": 1, "fed.batch_size": 2,
                        "eval.batch_size": 16, **kw})


def one_round(config):
  from fedlora.train import build
  exp = build(config)
  state = exp.algorithm.init()
  new, rec = exp.algorithm.apply(state, 1)
  return exp, state, new, rec


def leaves_named(tree, name):
  return [x for p, x in jax.tree_util.tree_leaves_with_path(tree) if str(p[-1].key) == name]


def test_compressor(plugins):
  exp, old, new, rec = one_round(small(**{"method.name": plugins.METHOD_ONLY_B}))
  for a, a0 in zip(leaves_named(new["trainable"], "lora_a"), leaves_named(old["trainable"], "lora_a")):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(a0))  # A never sent: the global A stays
  assert max(np.abs(np.asarray(b)).max() for b in leaves_named(new["trainable"], "lora_b")) > 0
  n_a = sum(int(a.size) for a in leaves_named(new["trainable"], "lora_a"))
  n_all = sum(int(x.size) for x in jax.tree_util.tree_leaves(new["trainable"]))
  np.testing.assert_allclose(np.asarray(rec["uplink_bits"]), (n_all - n_a) * 32.0)


def test_method(plugins):
  assert defaults().method.plug_l2_weight == 0.25  # its key, at its file's default
  with pytest.raises(ConfigError, match=r"config\.method\.plug_l2_weight=-1\.0 is not allowed"):
    typed(small(**{"method.name": plugins.METHOD, "method.plug_l2_weight": -1.0}))
  exp, old, new, rec = one_round(small(**{"method.name": plugins.METHOD, "method.plug_l2_weight": 0.5}))
  assert exp.method.penalty_weight == 0.5 and exp.method.penalty is plugins.l2
  assert np.isfinite(rec["train_loss"])


def test_task(plugins, tmp_path):
  from fedlora.train import run
  summary = run(small(**{"task.name": "plug_classify_loss", "workdir": str(tmp_path / "w")}))
  assert summary["task"] == "plug_classify_loss" and summary["headline"] == "test_loss"
  assert summary["plug_final_loss"] == summary["final_test_loss"] > 0


def test_model_family(combined):
  from fedlora.models.families import family_for
  (exp, old, new, rec), _ = combined
  assert family_for("plug_bert").name == "plug_bert_alias"
  assert exp.config.model.path.endswith("model") and np.isfinite(rec["train_loss"])


def test_server_optimiser(plugins):
  assert "plug_sign" in typed(small(**{"server.name": "plug_sign"})).server.name
  with pytest.raises(ConfigError, match=r"config\.server\.plug_sign_scale=0\.0 is not allowed"):
    typed(small(**{"server.plug_sign_scale": 0.0}))  # validated even when another server is chosen
  lr, scale = 0.01, 0.5
  exp, old, new, rec = one_round(small(**{"server.name": "plug_sign", "server.lr": lr,
                                          "server.plug_sign_scale": scale}))
  steps = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel() for a, b in zip(
      jax.tree_util.tree_leaves(new["trainable"]), jax.tree_util.tree_leaves(old["trainable"]))])
  moved = steps[steps > 0]
  assert moved.size > 0
  np.testing.assert_allclose(moved, lr * scale, rtol=1e-3)  # every moved entry by exactly lr·scale


def test_aggregation_rule(plugins):
  def moved(rule):  # two local steps: A gets a gradient once B has left 0
    exp, old, new, rec = one_round(small(**{"server.aggregation": rule, "fed.local_steps": 2}))
    return {n: [not np.array_equal(a, b) for a, b in zip(leaves_named(new["trainable"], n),
                                                         leaves_named(old["trainable"], n))]
            for n in ("lora_a", "lora_b")}
  assert any(moved("fedavg")["lora_a"])  # the control: FedAvg moves A
  plug = moved("plug_b_only")
  assert plug["lora_a"] and not any(plug["lora_a"]) and all(plug["lora_b"])


def test_drift_correction(plugins):
  exp, old, new, rec = one_round(small(**{"client.plug_grad_factor": 0.0}))
  assert [c.name for c in exp.round_fns.drift.corrections] == ["plug_gradscale"]
  for a, b in zip(jax.tree_util.tree_leaves(new["trainable"]), jax.tree_util.tree_leaves(old["trainable"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # zero gradients: nothing moves
  assert build_drift_off(plugins)


def build_drift_off(plugins):
  """At its default (factor 1) the correction is off."""
  from fedlora.drift import build_drift
  return build_drift(typed(small()).client, {"w": np.zeros(2)}).corrections == ()


def test_client_optimiser(plugins):
  exp, old, new, rec = one_round(small(**{"optim.name": "plug_noop"}))
  for a, b in zip(jax.tree_util.tree_leaves(new["trainable"]), jax.tree_util.tree_leaves(old["trainable"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_partition(combined):
  (exp, old, new, rec), _ = combined
  parts = exp.data.info["parts"]
  assert len(parts) == 3
  for p in parts:
    np.testing.assert_array_equal(p, np.arange(p[0], p[0] + p.size))  # contiguous runs
  np.testing.assert_array_equal(np.concatenate(parts), np.arange(sum(p.size for p in parts)))


def test_lora_init(combined):
  (exp, old, new, rec), _ = combined
  for a in leaves_named(old["trainable"], "lora_a"):
    np.testing.assert_array_equal(np.asarray(a), np.float32(0.02))
  assert np.isfinite(rec["train_loss"])


def test_schedule(combined):
  (exp, old, new, rec), _ = combined
  assert rec["client_lr_scale"] == 1.0
  assert float(exp.round_fns.context(new["server"], 3)["lr_scale"]) == 0.25
  with pytest.raises(ConfigError, match=r"config\.client\.lr_schedule='plug_nope' is not allowed: "
                                        r"one of \(.*'plug_halving'"):
    typed(small(**{"client.lr_schedule": "plug_nope"}))  # the allowed names come from the registry


def test_data_source(combined):
  (exp, old, new, rec), calls = combined
  assert calls == 1
  lengths = exp.data.test["attention_mask"].sum(1)
  assert lengths.max() < 32  # titles, never cut at 32 tokens like the articles

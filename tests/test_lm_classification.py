"""Classification as generation (task 'lm_classification'): rows, loss and scores against a slow
reference over the full logits, clients by domain, the zero-shot record, and its config errors."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from fedlora.section import ConfigError

TINY = os.path.join(ROOT, "configs", "lm_smollm2.py")


def tiny(**kw):
  import importlib.util
  spec = importlib.util.spec_from_file_location("_lm_smollm2", TINY)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("tiny")
  from fedlora.utils.overrides import apply_overrides
  return apply_overrides(c, kw)


@pytest.fixture(scope="module")
def exp():
  from fedlora.train import build
  return build(tiny())


def full_logprobs(exp, trainable, rows):
  """Slow reference: the full `[B, L, V]` logits, log-softmaxed, read at every target position."""
  logits = exp.parts.module(trainable, exp.parts.frozen)(
      jnp.asarray(rows["input_ids"]), jnp.asarray(rows["attention_mask"]),
      position_ids=jnp.asarray(rows["position_ids"]))
  lp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), -1))
  out = np.zeros(rows["target_ids"].shape, np.float64)
  for b in range(out.shape[0]):
    for j in range(out.shape[1]):
      if rows["target_w"][b, j]:
        out[b, j] = lp[b, rows["target_pos"][b, j], rows["target_ids"][b, j]]
  return out


def test_rows_put_each_label_word_after_its_prompt(exp):
  test = exp.data.test
  n, c, _ = test["input_ids"].shape
  assert c == 3 and test["labels"].shape == (n,)
  for i in range(n):
    for k in range(c):
      w = test["target_w"][i, k] > 0
      pos, ids = test["target_pos"][i, k][w], test["target_ids"][i, k][w]
      np.testing.assert_array_equal(test["input_ids"][i, k][pos + 1], ids)  # logits at t predict t+1
      assert test["attention_mask"][i, k][: pos[-1] + 2].all() and not test["attention_mask"][i, k][pos[-1] + 2:].any()


def test_loss_at_target_positions_equals_the_full_logits_reference(exp):
  from fedlora.tasks.lm_classification import gold, make_loss
  rows = {k: v[:6] for k, v in gold(exp.data.test).items()}
  tr = jax.tree_util.tree_map(lambda x: x + 0.01, exp.parts.trainable)  # B != 0: the adapters count
  loss, aux = make_loss(exp.parts)(tr, exp.parts.frozen, {k: jnp.asarray(v) for k, v in rows.items()}, None)
  ref = full_logprobs(exp, tr, rows)
  w = rows["target_w"]
  np.testing.assert_allclose(float(aux["ce"]), -(ref * w).sum() / w.sum(), rtol=1e-5)


def test_evaluation_scores_every_class_like_the_reference(exp):
  test = exp.data.test
  tr = jax.tree_util.tree_map(lambda x: x + 0.01, exp.parts.trainable)
  out = exp.evaluate(tr, exp.parts.frozen, test)
  n, c = test["labels"].shape[0], test["input_ids"].shape[1]
  flat = {k: v.reshape((n * c,) + v.shape[2:]) for k, v in test.items() if k != "labels"}
  ll = (full_logprobs(exp, tr, flat) * flat["target_w"]).sum(-1).reshape(n, c)
  assert out["accuracy"] == pytest.approx(float((ll.argmax(-1) == test["labels"]).mean()))
  gold_ll = ll[np.arange(n), test["labels"]].sum()
  gold_tok = flat["target_w"].reshape(n, c, -1).sum(-1)[np.arange(n), test["labels"]].sum()
  assert out["loss"] == pytest.approx(-gold_ll / gold_tok, rel=1e-4)
  assert {"balanced_accuracy", "macro_f1", "client_accuracy_mean"} <= set(out)


def test_one_row_per_example_scores_like_every_class_row():
  """Label words 'xa', 'xb', 'xc' (the tiny tokenizer: a shared 'x' token, then one letter): the
  rows differ only in the last token, so evaluation runs one row per example; its scores equal the
  slow reference over every class's own row. The default words (different lengths) do not."""
  from fedlora.tasks.lm_classification import shared_prompt
  from fedlora.train import build
  e = build(tiny(**{"task.label_words": ("xa", "xb", "xc")}))
  test = e.data.test
  assert shared_prompt(test) and test["target_ids"].shape[-1] == 2
  tr = jax.tree_util.tree_map(lambda x: x + 0.01, e.parts.trainable)
  out = e.evaluate(tr, e.parts.frozen, test)
  n, c = test["labels"].shape[0], test["input_ids"].shape[1]
  flat = {k: v.reshape((n * c,) + v.shape[2:]) for k, v in test.items() if k != "labels"}
  ll = full_logprobs(e, tr, flat).sum(-1).reshape(n, c)
  assert out["accuracy"] == pytest.approx(float((ll.argmax(-1) == test["labels"]).mean()))
  assert out["loss"] == pytest.approx(-ll[np.arange(n), test["labels"]].sum() / (2 * n), rel=1e-4)
  assert not shared_prompt(build(tiny()).data.test)


def test_clients_by_domain_and_zero_shot_record(tmp_path):
  from fedlora.train import run
  summary = run(tiny(workdir=str(tmp_path / "w")))
  records = [json.loads(line) for line in open(tmp_path / "w" / "metrics.jsonl")]
  assert records[0]["round"] == 0 and "test_accuracy" in records[0]  # before any training
  assert summary["zero_shot_test_accuracy"] == records[0]["test_accuracy"]
  assert summary["final_test_accuracy"] == records[-1]["test_accuracy"] and summary["rounds"] == 2



def test_clients_hold_one_domain_each(exp):
  """data.partition='column' over data.category_column: every client's examples share a domain."""
  from fedlora.config import typed
  from fedlora.data.sources import load_dataset_with_report
  from fedlora.data.split import split_indices
  d = typed(tiny()).data
  ds, _ = load_dataset_with_report(d)
  train_idx, _ = split_indices(np.asarray(ds["label"]), d.test_fraction, d.split_seed)
  domains = np.asarray(ds["category"])[train_idx]
  parts = exp.data.info["parts"]
  assert len(parts) == 4 and sorted(np.concatenate(parts).tolist()) == list(range(len(train_idx)))
  assert all(len(set(domains[p])) == 1 for p in parts)
  assert {domains[p][0] for p in parts} == {"hotels", "products"}


def test_config_errors_name_the_value(tmp_path):
  from fedlora.config import typed
  from fedlora.train import build
  with pytest.raises(ConfigError, match=r"config\.task\.prompt_template='no placeholder' is not allowed"):
    typed(tiny(**{"task.prompt_template": "no placeholder"}))
  with pytest.raises(ConfigError, match=r"config\.data\.partition='column' is not allowed: 'column' needs "
                                        r"data\.category_column"):
    typed(tiny(**{"data.category_column": ""}))
  with pytest.raises(ValueError, match=r"label_words=\('a', 'b'\) has 2 words but the data has 3 classes"):
    build(tiny(**{"task.label_words": ("a", "b")}))

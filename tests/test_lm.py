"""Causal-LM task: prompt masking, packing, truncation, data sources and partitions, the vmapped LM round
vs the Python-loop reference, every method on the LM task, and configs/lm_instruct.py:tiny end to end."""
import json
import os
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from fedlora import train
from fedlora.data.instruct import (Example, generation_arrays, pack_rows, pad_rows, prepare_instruct_data,
                                   render_messages, tokenize_examples)
from fedlora.methods.registry import METHODS
from fedlora.tasks.causal_lm import exact_matches, make_loss, response_token_ce
from fedlora.utils.metrics import read_metrics
from fedlora.utils.overrides import apply_overrides
from fedlora.config import typed
from fedlora.section import ConfigError

FIX = os.path.join(ROOT, "tests", "fixtures")
FAST = {"fed.local_steps": 2, "fed.batch_size": 4, "eval.max_new_tokens": 0, "eval.print_samples": 0,
        "lora.targets": ("q_proj", "v_proj")}


def lm_config(**overrides):
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import lm_instruct  # noqa: PLC0415
  return apply_overrides(lm_instruct.get_config("tiny"), overrides)


@pytest.fixture(scope="module")
def lm_exp():
  return train.build(lm_config(**FAST))


def _tok():
  from fedlora.data.tokenize import load_tokenizer
  return load_tokenizer(os.path.join(FIX, "tiny_llama3"))


# ---- loss masking --------------------------------------------------------------------------------------

def test_prompt_tokens_are_masked_out_of_the_loss():
  """Hand-built batch: row 0 = prompt [5, 6, 7], response [8, 9, EOS=2], 2 pads; row 1 = two packed
  examples. Only predictions OF response tokens (same segment) count."""
  batch = {"input_ids": jnp.array([[5, 6, 7, 8, 9, 2, 0, 0], [5, 8, 2, 6, 7, 9, 2, 0]]),
           "attention_mask": jnp.array([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 2, 2, 2, 2, 0]]),
           "loss_mask": jnp.array([[0, 0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 1, 1, 0]]),
           "position_ids": jnp.array([[0, 1, 2, 3, 4, 5, 0, 0], [0, 1, 2, 0, 1, 2, 3, 0]])}
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 12))
  ce, w, _ = response_token_ce(logits, batch)
  # counted predictions: position t predicts t+1
  np.testing.assert_array_equal(np.asarray(w), [[0, 0, 1, 1, 1, 0, 0], [1, 1, 0, 0, 1, 1, 0]])
  lp = np.asarray(jax.nn.log_softmax(logits, -1))
  ids = np.asarray(batch["input_ids"])
  want = -np.mean([lp[0, t, ids[0, t + 1]] for t in (2, 3, 4)] + [lp[1, t, ids[1, t + 1]] for t in (0, 1, 4, 5)])
  got = float((ce * w).sum() / w.sum())
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # changing the logits at positions that predict prompt tokens / padding / across segments: no effect
  noise = logits.at[0, :2].add(5.0).at[0, 5:].add(5.0).at[1, 2:4].add(5.0).at[1, 6:].add(5.0)
  ce2, w2, _ = response_token_ce(noise, batch)
  np.testing.assert_allclose(float((ce2 * w2).sum() / w2.sum()), got, rtol=1e-6)


def test_packed_rows_give_the_same_loss_as_padded_rows(lm_exp):
  """Segment masking + per-segment positions: packing the same examples changes nothing."""
  tok = _tok()
  exs, _ = tokenize_examples(["what is 1 + 2?", "reverse: cat", "upper: dog", "letter after c?"],
                             ["3", "tac", "DOG", "d"], tok, 32, eos_id=2)
  padded = {k: jnp.asarray(v) for k, v in pad_rows(exs, 32, 0).items()}
  packed = {k: jnp.asarray(v) for k, v in pack_rows(exs, 32, 0).items()}
  assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
  loss = jax.jit(make_loss(lm_exp.parts))
  tr = jax.tree_util.tree_map(lambda x: x + 0.05, lm_exp.parts.trainable)  # B != 0
  a = float(loss(tr, lm_exp.parts.frozen, padded, None)[0])
  b = float(loss(tr, lm_exp.parts.frozen, packed, None)[0])
  np.testing.assert_allclose(a, b, rtol=2e-5)


# ---- data ------------------------------------------------------------------------------------------------

def test_packing_preserves_every_token_once():
  rng = np.random.default_rng(0)
  exs = [Example(list(rng.integers(3, 90, rng.integers(1, 9))), list(rng.integers(3, 90, rng.integers(1, 6))) + [2])
         for _ in range(40)]
  a = pack_rows(exs, 16, 0)
  seq = []
  for i in range(a["input_ids"].shape[0]):
    seg = a["attention_mask"][i]
    for s in range(1, seg.max() + 1):
      m = seg == s
      seq.append(a["input_ids"][i][m].tolist())
      np.testing.assert_array_equal(a["position_ids"][i][m], np.arange(m.sum()))
      assert np.flatnonzero(m).tolist() == list(range(np.flatnonzero(m)[0], np.flatnonzero(m)[-1] + 1))
  assert seq == [e.prompt + e.response for e in exs]  # every token once, in order, never split
  assert a["loss_mask"].sum() == sum(len(e.response) for e in exs)
  assert (a["input_ids"][a["attention_mask"] == 0] == 0).all()
  assert a["input_ids"].shape[0] < len(exs)  # rows are shared
  p = pad_rows(exs, 16, 0)
  assert p["input_ids"].shape == (40, 16) and p["loss_mask"].sum() == a["loss_mask"].sum()


def test_truncation_cuts_the_prompt_from_the_left():
  tok = _tok()
  exs, stats = tokenize_examples(["abcdefghij", "xy"], ["KLMNOPQRSTUVWXYZ", "z"], tok, 12, eos_id=2)
  (p0, r0), (p1, r1) = exs
  assert len(p0) + len(r0) == 12 and stats == {"truncated_prompts": 1, "truncated_responses": 1}
  assert r0 == tok("KLMNOPQRSTU", add_special_tokens=False)["input_ids"]  # 11 = max_length - 1, no EOS
  assert p0 == tok("j", add_special_tokens=False)["input_ids"]  # the prompt's LAST token is kept
  assert p1 == [1] + tok("xy", add_special_tokens=False)["input_ids"] and r1[-1] == 2  # BOS ... EOS
  g = generation_arrays(exs, 12, 0, 2, 4)
  assert g["answer_fits"].tolist() == [0, 1] and g["prompt_mask"][1].tolist() == [0] * 9 + [1] * 3


def _data_cfg(**kw):
  c = lm_config(**{"data.category_column": ""}).data
  for k, v in kw.items():
    c[k] = v
  return c


def test_sources_columns_and_category_partitions(tmp_path):
  tok = _tok()
  rows = [{"q": f"what is {i % 7} + 1?", "a": str(i % 7 + 1), "cat": "ab"[i % 2]} for i in range(60)]
  (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (tmp_path / "d.csv").write_text("q,a,cat\n" + "".join(f"{r['q']},{r['a']},{r['cat']}\n" for r in rows))
  for src, f in (("json", "d.jsonl"), ("csv", "d.csv")):
    cfg = _data_cfg(source=src, path=str(tmp_path / f), prompt_column="q", response_column="a",
                    category_column="cat", partition="dirichlet", dirichlet_alpha=0.3, num_clients=3,
                    test_fraction=0.2, max_length=24, min_examples_per_client=2)
    d = prepare_instruct_data(cfg, tok, pad_id=0, eos_id=2, max_new_tokens=3)
    assert d.categories == ["a", "b"] and d.histogram.sum() == 48 and d.stats["test_examples"] == 12
    assert d.clients.num_examples.tolist() == [len(p) for p in d.parts] and d.histogram.min() >= 0
    assert set(d.clients.arrays) == {"input_ids", "attention_mask", "loss_mask", "position_ids"}
    assert d.clients.input_ids.shape[0] == 3 and d.clients.input_ids.shape[2] == 24
    assert d.test["answer_fits"].all()  # 1-digit answers + EOS fit in 3 tokens
  packed = prepare_instruct_data(_data_cfg(source="json", path=str(tmp_path / "d.jsonl"), prompt_column="q",
                                           response_column="a", partition="quantity", num_clients=3,
                                           max_length=48, packing=True), tok, pad_id=0, eos_id=2)
  assert packed.stats["train_rows"] < packed.stats["train_examples"]
  with pytest.raises(ValueError, match="category_column"):
    prepare_instruct_data(_data_cfg(source="json", path=str(tmp_path / "d.jsonl"), prompt_column="q",
                                    response_column="a", partition="dirichlet"), tok, pad_id=0, eos_id=2)
  with pytest.raises(ValueError, match=r"\['question'\].*available columns"):
    prepare_instruct_data(_data_cfg(source="json", path=str(tmp_path / "d.jsonl"), prompt_column="question",
                                    response_column="a"), tok, pad_id=0, eos_id=2)


def test_hosted_clients_pack_only_their_examples_and_sum_to_the_full_stats(tmp_path):
  """Packed rows, 3 clients: building each client alone (`hosted=[k]`, as a process of a
  multi-process run does) gives that client's rows of the full build once padded to the global n_max
  (`repad_clients`), and the test part + every client's own counts add up to the full stats."""
  from fedlora.data.clients import repad_clients
  tok = _tok()
  rows = [{"q": f"what is {i % 7} + 1? " + "x " * (i % 5) + "z" * 40 * (i % 10 == 0),
           "a": str(i % 7 + 1) + " y" * (i % 3)} for i in range(60)]
  (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  cfg = _data_cfg(source="json", path=str(tmp_path / "d.jsonl"), prompt_column="q", response_column="a",
                  partition="quantity", num_clients=3, max_length=48, packing=True)
  full = prepare_instruct_data(cfg, tok, pad_id=0, eos_id=2, max_new_tokens=3)
  assert full.stats["truncated_prompts"] > 0 and full.stats["train_rows"] < full.stats["train_examples"]
  summed = {}
  for k in range(3):
    one = prepare_instruct_data(cfg, tok, pad_id=0, eos_id=2, max_new_tokens=3, hosted=np.array([k]))
    assert one.stats["hosted_examples"] == len(full.parts[k])
    got = repad_clients(one.clients, full.clients.n_max)
    assert int(got.num_examples[0]) == int(full.clients.num_examples[k])
    for key in full.clients.arrays:
      np.testing.assert_array_equal(got.arrays[key][0], full.clients.arrays[key][k])
    for key, v in one.stats["per_client"].items():
      summed[key] = summed.get(key, one.stats[key]) + int(v.sum())
    for key in full.test:
      np.testing.assert_array_equal(one.test[key], full.test[key])
  assert summed == {key: full.stats[key] for key in summed}


def test_messages_column_plain_and_chat_template(tmp_path):
  conv = [{"role": "user", "content": "upper: cat"}, {"role": "assistant", "content": "CAT"}]

  class NoTemplate:
    chat_template = None
  assert render_messages(conv, NoTemplate()) == ("user: upper: cat\nassistant: ", "CAT")

  class Template:  # what a jinja chat template renders, without needing jinja2
    chat_template = "x"

    def apply_chat_template(self, msgs, tokenize=False, add_generation_prompt=False):
      s = "<s>" + "".join(f"[{m['role']}]{m['content']}</t>" for m in msgs)
      return s + ("[assistant]" if add_generation_prompt else "")
  assert render_messages(conv, Template()) == ("<s>[user]upper: cat</t>[assistant]", "CAT</t>")
  (tmp_path / "m.jsonl").write_text("".join(json.dumps({"messages": conv}) + "\n" for _ in range(12)))
  cfg = _data_cfg(source="json", path=str(tmp_path / "m.jsonl"), messages_column="messages",
                  partition="iid", num_clients=2, min_examples_per_client=1, max_length=32)
  tok = _tok()
  # the fixture tokenizer's own jinja template (tests/fixtures/tiny_llama3/chat_template.jinja)
  assert tok.chat_template and render_messages(conv, tok) == (
      "<s>user: upper: cat\nassistant: ", "CAT\n")
  tok.chat_template = None  # and without a template: plain `role: content` rendering
  d = prepare_instruct_data(cfg, tok, pad_id=0, eos_id=2)
  row = d.test["input_ids"][0]
  learned = row[d.test["loss_mask"][0] > 0]
  assert tok.decode(learned[:-1]) == "CAT" and learned[-1] == 2
  assert tok.decode(row[(d.test["attention_mask"][0] > 0) & (d.test["loss_mask"][0] == 0)],
                    skip_special_tokens=True) == "user: upper: cat\nassistant: "


def test_exact_match_needs_answer_then_eos():
  gen = np.array([[5, 6, 2, 0], [5, 6, 7, 2], [5, 2, 0, 0], [5, 6, 0, 0]])
  ans = np.array([[5, 6, -1], [5, 6, -1], [5, 6, -1], [5, 6, -1]])
  assert exact_matches(gen, ans, 2).tolist() == [True, False, False, False]


# ---- config / wiring errors --------------------------------------------------------------------------------

def test_lm_config_errors_are_named(tmp_path):
  with pytest.raises(ValueError, match="unknown variant 'huge'"):
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    import lm_instruct  # noqa: PLC0415
    lm_instruct.get_config("huge")
  for kv, match in (({"data.source": "bbcnews"}, "data.source='bbcnews'"),
                    ({"data.category_column": ""}, "data.partition='dirichlet'"),
                    ({"task.name": "seq2seq"}, "task.name='seq2seq'"),
                    ({"eval.max_new_tokens": -1}, "eval.max_new_tokens=-1")):
    with pytest.raises(ConfigError, match=match):
      typed(lm_config(**kv))
  with pytest.raises(ConfigError, match="model.path is empty"):
    train.build(apply_overrides(lm_instruct.get_config(), {"data.path": os.path.join(FIX, "tiny_instruct.jsonl")}))
  c = lm_config(**{"task.name": "classification", "data.source": "json", "workdir": str(tmp_path / "w")})
  with pytest.raises(ValueError, match="'classifier' head.*'llama'"):
    train.build(c)
  assert not os.path.exists(tmp_path / "w")


# ---- rounds ------------------------------------------------------------------------------------------------

def test_vmapped_lm_round_equals_python_loop_reference(lm_exp):
  exp = lm_exp
  fns, g, frozen = exp.round_fns, exp.parts.trainable, exp.parts.frozen
  ids = jnp.array([3, 1])
  key = jax.random.PRNGKey(7)
  ratios = jnp.ones((2,), jnp.float32)
  states = fns.init_client_states(g, 4)  # {'compressor': [4, ...]}
  comp = jax.tree_util.tree_map(lambda x: x[0], states)  # one client's row
  ctx = fns.context(fns.init_server(g), 1)
  out, _ = fns.client_phase(g, frozen, exp.clients, ids, key, ratios, states, ctx)
  batches, keys = fns.sample(key, exp.clients, ids)
  assert set(batches) == {"input_ids", "attention_mask", "loss_mask", "position_ids"}
  assert batches["input_ids"].shape == (2, 2, 4, 32)  # [K, E, B, L]
  one = jax.jit(fns.one_client)
  ref = [one(g, frozen, jax.tree_util.tree_map(lambda x: x[c], batches), keys[c], ratios[c], comp, ctx)[0]
         for c in range(2)]
  chex.assert_trees_all_close(out.delta, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[o.delta for o in ref]),
                              rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(out.metrics["loss"], [float(o.metrics["loss"]) for o in ref], rtol=1e-4)
  assert float(jnp.abs(out.delta["model"]["layers"][0]["self_attn"]["q_proj"]["lora_b"]).max()) > 0


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_one_lm_round(method, tmp_path):
  c = lm_config(**{**FAST, "method.name": method, "model.num_layers": 1, "fed.local_steps": 1,
                   "fed.batch_size": 2, "fed.clients_per_round": 2, "workdir": str(tmp_path)})
  exp = train.build(c)
  state, rec = exp.algorithm.apply(exp.algorithm.init(), 1)
  assert np.isfinite(rec["client_loss"]).all() and rec["train_loss"] > 0
  assert float(jnp.min(rec["uplink_bits"])) > 0 and np.asarray(rec["delivered"]).tolist() == [1.0, 1.0]
  moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), state["trainable"], exp.parts.trainable)
  assert max(jax.tree_util.tree_leaves(moved)) > 0
  if method == "ffa":  # A stays frozen
    a = state["trainable"]["model"]["layers"][0]["self_attn"]["q_proj"]["lora_a"]
    np.testing.assert_array_equal(a, exp.parts.trainable["model"]["layers"][0]["self_attn"]["q_proj"]["lora_a"])


@pytest.mark.slow  # ~25 s: the BERT twin in test_fed.py runs in the default suite
def test_lm_remat_is_exact_and_bf16_is_close_for_llama_and_gpt2(tmp_path):
  """model.remat / compute_dtype / param_dtype work for the causal-LM task too (Llama 'layers' and
  GPT-2 'h' block lists): remat='block' gives the same updates, bf16 the same first loss to bf16
  precision, LoRA updates float32; a KV-cache generation step runs under both (no remat there)."""
  import shutil  # noqa: PLC0415
  d = tmp_path / "gpt2"
  shutil.copytree(os.path.join(FIX, "tiny_gpt2"), d)
  for f in os.listdir(os.path.join(FIX, "tiny_llama3")):
    if f.startswith("tokenizer") or f.endswith(".jinja"):
      shutil.copy(os.path.join(FIX, "tiny_llama3", f), d / f)
  for path in (None, str(d)):
    outs = {}
    for name, over in (("f32", {}), ("remat", {"model.remat": "block"}),
                       ("bf16", {"model.compute_dtype": "bfloat16", "model.param_dtype": "bfloat16"})):
      base = {**FAST, "model.num_layers": 2, "fed.local_steps": 1, "fed.batch_size": 2,
              "fed.clients_per_round": 2, **({"model.path": path, "lora.targets": ()} if path else {})}
      exp = train.build(lm_config(**base, **over))
      g = exp.parts.trainable
      out, _ = exp.round_fns.client_phase(g, exp.parts.frozen, exp.clients, jnp.array([0, 2]),
                                          jax.random.PRNGKey(1), jnp.ones(2), exp.round_fns.init_client_states(g, 4),
                                          exp.round_fns.context(exp.round_fns.init_server(g), 1))
      assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(out.delta))
      assert bool(out.metrics["finite"].all())
      outs[name] = out
    chex.assert_trees_all_close(outs["remat"].delta, outs["f32"].delta, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(outs["bf16"].metrics["first_loss"], outs["f32"].metrics["first_loss"],
                               rtol=3e-2)


def test_lm_tiny_end_to_end_from_the_readme_command(tmp_path):
  """`python -m fedlora --config configs/lm_instruct.py:tiny`: held-out loss falls every round."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  t0 = time.time()
  p = subprocess.run([sys.executable, "-m", "fedlora", "--config", "configs/lm_instruct.py:tiny",
                      f"--config.workdir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=600)
  wall = time.time() - t0
  assert p.returncode == 0, p.stderr[-3000:]
  recs = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
  losses = [r["test_loss"] for r in recs]
  assert len(losses) == 3 and all(b < a for a, b in zip(losses, losses[1:])), losses
  assert all(abs(r["test_perplexity"] - np.exp(r["test_loss"])) < 1e-3 * r["test_perplexity"] for r in recs)
  assert all(0.0 <= r["test_exact_match"] <= 1.0 and r["test_exact_match_n"] == 48 for r in recs)
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["task"] == "causal_lm" and summary["final_test_loss"] == losses[-1]
  assert p.stdout.count("--- sample") == 2 and "final test loss" in p.stdout
  print(f"lm_instruct:tiny wall {wall:.1f} s, held-out loss {losses}")


def test_gpt2_family_runs_the_lm_round_with_its_default_targets(tmp_path):
  """A second family through the same trainer: GPT-2 (fused c_attn, tied wte), lora.targets=() = the
  family's default, packed rows."""
  import shutil  # noqa: PLC0415
  d = tmp_path / "gpt2"
  shutil.copytree(os.path.join(FIX, "tiny_gpt2"), d)
  for f in os.listdir(os.path.join(FIX, "tiny_llama3")):
    if f.startswith("tokenizer") or f.endswith(".jinja"):
      shutil.copy(os.path.join(FIX, "tiny_llama3", f), d / f)
  c = lm_config(**{**FAST, "model.path": str(d), "lora.targets": (), "data.packing": True,
                   "fed.clients_per_round": 2, "workdir": str(tmp_path / "w")})
  exp = train.build(c)
  assert set(exp.parts.trainable["transformer"]["h"][0]["attn"]) == {"c_attn"}
  assert exp.clients.attention_mask.max() >= 2  # rows hold several packed examples
  state, rec = exp.algorithm.apply(exp.algorithm.init(), 1)
  assert np.isfinite(rec["client_loss"]).all()
  before = exp.evaluate(exp.parts.trainable, exp.parts.frozen, exp.data.test)
  after = exp.evaluate(state["trainable"], exp.parts.frozen, exp.data.test)
  assert after["loss"] < before["loss"]

"""Model families: every decoder family's logits equal the PyTorch reference (fixtures recorded by
tests/fixtures/record_reference.py), also with LoRA attached at B = 0; GPT-2 Conv1D weights are not
transposed; GQA / llama3 rope / tied embeddings / q-k-v bias / sliding window are what the fixtures
hold; the KV-cache generation equals full recomputation; unsupported model types are named."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedlora import lora
from fedlora.models import GPT2LMHeadModel, LlamaForCausalLM, load_pretrained
from fedlora.models.families import families, family_for
from fedlora.models.generate import generate, generate_reference
from fedlora.models.hf_loading import read_tensors

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
DECODERS = ["tiny_llama", "tiny_qwen2", "tiny_llama3", "tiny_mistral", "tiny_gpt2"]
ALL_LINEAR = ("proj", "c_attn", "c_fc")


def _ref(name):
  return dict(np.load(os.path.join(FIX, f"{name}_reference.npz")))


def _logits(model, r):
  return np.asarray(jax.jit(lambda i, m: model(i, m))(jnp.asarray(r["input_ids"]), jnp.asarray(r["attention_mask"])))


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_logits_match_reference_with_and_without_lora(name):
  r = _ref(name)
  valid = r["attention_mask"].astype(bool)
  assert (~valid[:, 0]).any() and (~valid[:, -1]).any(), "fixture has left and right padding"
  assert np.abs(r["logits"][valid]).max() > 1.0  # the reference is not trivially small
  model = load_pretrained(os.path.join(FIX, name))
  np.testing.assert_allclose(_logits(model, r)[valid], r["logits"][valid], atol=1e-4, rtol=1e-5)

  # LoRA on every Linear with B = 0 (the initial state): the same logits
  base = lora.split_model(model)
  cfg = type("L", (), {"targets": ALL_LINEAR, "rank": 2, "alpha": 4.0, "dropout": 0.0, "init": "kaiming"})
  adapters = lora.init_adapters(jax.random.PRNGKey(0), base.frozen, cfg)
  lora.attach(model, adapters, scale=2.0)
  parts = lora.split_model(model)
  n_adapted = sum(1 for p, _ in jax.tree_util.tree_leaves_with_path(parts.trainable))
  assert n_adapted >= 2 * 2 * 4  # A and B, >= 4 Linears per layer, 2 layers
  np.testing.assert_allclose(_logits(model, r)[valid], r["logits"][valid], atol=1e-4, rtol=1e-5)
  # ... and B != 0 changes them (the adapters are live)
  bumped = jax.tree_util.tree_map(lambda x: x + 0.1, parts.trainable)
  assert not np.allclose(_logits(parts.module(bumped), r)[valid], r["logits"][valid], atol=1e-2)


def test_fixture_features_are_what_the_families_must_support():
  l3 = load_pretrained(os.path.join(FIX, "tiny_llama3"))
  c = l3.config
  assert (c.num_attention_heads, c.num_key_value_heads) == (4, 1)  # GQA 4:1
  assert c.rope_type == "llama3" and dict(c.rope_params)["factor"] == 8.0
  assert c.tie_word_embeddings and l3.lm_head is None
  mi = load_pretrained(os.path.join(FIX, "tiny_mistral")).config
  assert mi.rope_type == "linear" and mi.sliding_windows == (4, 4)
  for name in DECODERS:  # each family's tied-embedding rule agrees with the module it built
    m = load_pretrained(os.path.join(FIX, name))
    fam = family_for(json.load(open(os.path.join(FIX, name, "config.json")))["model_type"])
    assert fam.tied_embeddings(m.config) == (getattr(m, "lm_head", None) is None)
  qw = load_pretrained(os.path.join(FIX, "tiny_qwen2"))
  assert qw.model.layers[0].self_attn.k_proj.bias is not None and qw.lm_head is None


def test_gpt2_conv1d_weights_are_not_transposed():
  t = read_tensors(os.path.join(FIX, "tiny_gpt2"))
  m = load_pretrained(os.path.join(FIX, "tiny_gpt2"))
  assert isinstance(m, GPT2LMHeadModel)
  w = t["transformer.h.1.attn.c_attn.weight"]
  assert w.shape == (32, 96)  # Conv1D: [in, out]
  np.testing.assert_array_equal(np.asarray(m.transformer.h[1].attn.c_attn.kernel[...]), w)
  np.testing.assert_array_equal(np.asarray(m.transformer.h[0].mlp.c_proj.kernel[...]),
                                t["transformer.h.0.mlp.c_proj.weight"])
  # a Llama kernel IS transposed from PyTorch's [out, in]
  tl = read_tensors(os.path.join(FIX, "tiny_llama"))
  ml = load_pretrained(os.path.join(FIX, "tiny_llama"))
  np.testing.assert_array_equal(np.asarray(ml.model.layers[0].self_attn.k_proj.kernel[...]),
                                tl["model.layers.0.self_attn.k_proj.weight"].T)


def test_registry_declarations():
  fams = families()
  assert {"bert", "llama", "gpt2"} <= set(fams)
  assert family_for("qwen2").name == "llama" and family_for("mistral").name == "llama"
  assert family_for("gpt2").heads == ("causal_lm",) and family_for("roberta").heads == ("classifier",)
  for f in fams.values():  # every family's default LoRA targets select layers of its fixture
    name = {"bert": "tiny_roberta", "llama": "tiny_llama3", "gpt2": "tiny_gpt2",
            "gemma3": "tiny_gemma3"}[f.name]
    kw = {"num_labels": 2} if "classifier" in f.heads else {}
    frozen = lora.split_model(load_pretrained(os.path.join(FIX, name), **kw), f.head_paths).frozen
    assert lora.match_targets(frozen, f.lora_targets)
    node = frozen
    for p in f.embedding_path.split("/"):
      node = node[p]
    assert node.ndim == 2


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
  d = tmp_path / "m"
  shutil.copytree(os.path.join(FIX, "tiny_gpt2"), d)
  cfg = json.loads((d / "config.json").read_text())
  cfg["model_type"] = "falcon"
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match=r"'falcon'.*supported.*bert.*gpt2.*llama.*mistral.*qwen2"):
    load_pretrained(d)
  with pytest.raises(ValueError, match="causal LM"):
    load_pretrained(os.path.join(FIX, "tiny_gpt2"), num_labels=3)


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_mistral"])  # both cache implementations
def test_kv_cache_generation_equals_full_recompute(name):
  model = load_pretrained(os.path.join(FIX, name))
  assert isinstance(model, (GPT2LMHeadModel, LlamaForCausalLM))
  ids = jnp.array([[0, 0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15], [0, 40, 41, 42, 43, 44, 45]], jnp.int32)
  mask = (jnp.arange(7)[None] >= jnp.array([[3], [0], [1]])).astype(jnp.int32)
  # greedy for both; sampling (O(1) random weights give peaked logits: a high T samples widely) once
  for temp in ((0.0, 50.0) if name == "tiny_gpt2" else (0.0,)):
    key = jax.random.PRNGKey(3)
    fast = jax.jit(lambda i, m, k: generate(model, i, m, k, max_new_tokens=4, temperature=temp, eos_id=2))(
        ids, mask, key)
    slow = jax.jit(lambda i, m, k: generate_reference(model, i, m, k, max_new_tokens=4, temperature=temp,
                                                      eos_id=2))(ids, mask, key)
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(slow))
    if temp > 0:
      assert len(set(np.asarray(fast).reshape(-1).tolist())) > 3  # sampling produced varied tokens
  # prefill + one cached step gives the logits of the full forward at that position
  @jax.jit
  def two_ways(ids, mask):
    cache = model.init_cache(3, 7)
    pos = jnp.maximum(jnp.cumsum(mask, 1) - 1, 0)
    l1, cache = model(ids[:, :5], mask[:, :5], position_ids=pos[:, :5], cache=cache)
    l2, cache = model(ids[:, 5:], mask[:, 5:], position_ids=pos[:, 5:], cache=cache)
    return model(ids, mask), jnp.concatenate([l1, l2], 1), cache["index"]
  full, cached, index = two_ways(ids, mask)
  v = np.asarray(mask).astype(bool)
  np.testing.assert_allclose(np.asarray(cached)[v], np.asarray(full)[v], atol=1e-4)
  assert int(index) == 7



def test_bert_family_matches_reference_with_lora_at_b_zero():
  r = _ref("tiny_roberta")
  model = load_pretrained(os.path.join(FIX, "tiny_roberta"), num_labels=2, pooling="cls")
  f = family_for("roberta")
  base = lora.split_model(model, f.head_paths)
  cfg = type("L", (), {"targets": ("attention", "mlp"), "rank": 2, "alpha": 4.0, "dropout": 0.0, "init": "kaiming"})
  lora.attach(model, lora.init_adapters(jax.random.PRNGKey(0), base.frozen, cfg), scale=2.0)
  parts = lora.split_model(model, f.head_paths)
  assert "classifier" in parts.trainable and len(jax.tree_util.tree_leaves(parts.trainable)) == 2 + 2 * 2 * 6
  ids, mask = jnp.asarray(r["input_ids"]), jnp.asarray(r["attention_mask"])
  valid = r["attention_mask"].astype(bool)
  h = np.asarray(jax.jit(lambda i, m: model.encode(i, m))(ids, mask))
  np.testing.assert_allclose(h[valid], r["last_hidden_state"][valid], atol=1e-4, rtol=1e-5)

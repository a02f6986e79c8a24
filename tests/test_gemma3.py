"""Gemma 3 family: logits equal transformers' Gemma3ForCausalLM (fixture recorded by
tests/fixtures/record_gemma3.py) on padded sequences longer than the sliding window, also with soft-capping
and with LoRA at B = 0; greedy KV-cache generation past the window equals the reference's tokens and our
own recomputation; config parsing (pattern / older rope keys / multimodal text_config / errors); the GGUF
spec maps a llama.cpp-style GGUF (written by tests/fixtures/gemma3_gguf.py, which transformers' GGUF loader
reads back into the same tensors) to the checkpoint's tensors and config."""
import dataclasses
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fedlora import lora
from fedlora.models import load_pretrained
from fedlora.models.families import family_for
from fedlora.models.gemma3 import Gemma3Config, Gemma3ForCausalLM, gguf_config, gguf_tensor
from fedlora.models.generate import generate
from fedlora.models.hf_loading import read_config, read_tensors
from fedlora.models.layers import dot_product_attention

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
TINY = os.path.join(FIX, "tiny_gemma3")
sys.path.insert(0, FIX)
from gemma3_gguf import read_gguf, write_gemma3_gguf  # noqa: E402


@pytest.fixture(scope="module")
def ref():
  return dict(np.load(os.path.join(FIX, "tiny_gemma3_reference.npz")))


@pytest.fixture(scope="module")
def model():
  return load_pretrained(TINY)


@pytest.fixture(scope="module")
def forward(model):
  """The tiny model's jitted no-cache forward (compiled once per shape for the whole file)."""
  return jax.jit(lambda i, a: model(i, a))


def _logits(m, r):
  return np.asarray(jax.jit(lambda i, a: m(i, a))(jnp.asarray(r["input_ids"]), jnp.asarray(r["attention_mask"])))


def test_fixture_has_what_gemma3_must_support(model, ref):
  c = model.config
  assert isinstance(model, Gemma3ForCausalLM) and family_for("gemma3_text").name == "gemma3"
  assert c.sliding_windows == (4, None, 4, None)  # both layer types
  assert c.head_dim * c.num_attention_heads != c.hidden_size and c.query_pre_attn_scalar != c.head_dim
  assert (c.num_attention_heads, c.num_key_value_heads) == (4, 2)
  assert c.rope_type == "linear" and c.rope_theta != c.rope_local_theta
  assert c.tie_word_embeddings and model.lm_head is None
  assert ref["input_ids"].shape[1] > c.sliding_window and ref["gen_tokens"].shape[1] > c.sliding_window
  valid = ref["attention_mask"].astype(bool)
  assert (~valid[:, 0]).any() and (~valid[:, -1]).any()  # left and right padding


def test_logits_match_reference_with_and_without_lora(forward, ref):
  valid = ref["attention_mask"].astype(bool)
  assert np.abs(ref["logits"][valid]).max() > 1.0
  got = np.asarray(forward(jnp.asarray(ref["input_ids"]), jnp.asarray(ref["attention_mask"])))
  np.testing.assert_allclose(got[valid], ref["logits"][valid], atol=1e-4, rtol=1e-5)
  m = load_pretrained(TINY)
  fam = family_for("gemma3_text")
  base = lora.split_model(m, fam.head_paths)
  cfg = type("L", (), {"targets": fam.lora_targets, "rank": 2, "alpha": 4.0, "dropout": 0.0, "init": "kaiming"})
  lora.attach(m, lora.init_adapters(jax.random.PRNGKey(0), base.frozen, cfg), scale=2.0)
  parts = lora.split_model(m, fam.head_paths)
  leaves = jax.tree_util.tree_leaves_with_path(parts.trainable)
  paths = ["/".join(str(getattr(k, "key", k)) for k in p) for p, _ in leaves]
  assert len(paths) == 2 * 2 * 4 and all(("q_proj" in p or "v_proj" in p) for p in paths)  # A, B x q, v x 4
  np.testing.assert_allclose(_logits(m, ref)[valid], ref["logits"][valid], atol=1e-4, rtol=1e-5)
  bumped = jax.tree_util.tree_map(lambda x: x + 0.1, parts.trainable)
  assert not np.allclose(_logits(parts.module(bumped), ref)[valid], ref["logits"][valid], atol=1e-2)


def test_softcapping(ref, tmp_path):
  d = tmp_path / "capped"
  shutil.copytree(TINY, d)
  cfg = read_config(d)
  cfg.update(final_logit_softcapping=3.0)
  (d / "config.json").write_text(json.dumps(cfg))
  m = load_pretrained(d)
  valid = ref["attention_mask"].astype(bool)
  got = _logits(m, ref)[valid]
  np.testing.assert_allclose(got, ref["logits_softcap"][valid], atol=1e-4, rtol=1e-5)
  assert np.abs(got).max() <= 3.0 and not np.allclose(ref["logits_softcap"], ref["logits"], atol=1e-2)
  # attention soft-capping (transformers' Gemma 3 ignores the field, so no reference logits): the scores
  # `c * tanh(scale * q.k / c)`, masked, softmaxed
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
  q, k, v = (3 * jax.random.normal(kk, (1, 5, 2, 8)) for kk in (k1, k2, k3))
  causal = jnp.tril(jnp.ones((5, 5), bool))[None, None]
  s = np.einsum("blhd,bshd->bhls", np.asarray(q), np.asarray(k)) * 0.2
  s = np.where(np.asarray(causal), 2.0 * np.tanh(s / 2.0), -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  want = np.einsum("bhls,bshd->blhd", p / p.sum(-1, keepdims=True), np.asarray(v))
  attend = jax.jit(dot_product_attention, static_argnames=("scale", "softcap"))
  got = np.asarray(attend(q, k, v, causal, scale=0.2, softcap=2.0))
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert not np.allclose(got, np.asarray(attend(q, k, v, causal, scale=0.2)), atol=1e-3)


def test_greedy_kv_cache_generation_past_the_window(model, ref):
  ids, mask = jnp.asarray(ref["gen_prompt_ids"]), jnp.asarray(ref["gen_prompt_mask"])
  n = ref["gen_tokens"].shape[1]
  key = jax.random.PRNGKey(0)
  fast = jax.jit(lambda i, m: generate(model, i, m, key, max_new_tokens=n))(ids, mask)
  np.testing.assert_array_equal(np.asarray(fast), ref["gen_tokens"])
  # our own recomputation without a cache (`generate_reference`'s loop, at one compiled shape: the
  # sequence so far, right-padded to its final length, which the mask hides)
  forward = jax.jit(lambda i, m: model(i, m))
  seq = jnp.concatenate([ids, jnp.zeros_like(fast)], 1)
  seg = jnp.concatenate([mask, jnp.zeros_like(fast)], 1)
  lp = ids.shape[1]
  for t in range(n):
    nxt = jnp.argmax(forward(seq, seg)[:, lp + t - 1], -1)
    seq, seg = seq.at[:, lp + t].set(nxt), seg.at[:, lp + t].set(1)
  np.testing.assert_array_equal(np.asarray(seq[:, lp:]), ref["gen_tokens"])


def test_cached_steps_equal_full_forward_and_window_is_enforced(model, forward, ref):
  ids, mask = jnp.asarray(ref["input_ids"]), jnp.asarray(ref["attention_mask"])
  pos = jnp.maximum(jnp.cumsum(mask, 1) - 1, 0)

  @jax.jit
  def cached_chunks(ids, mask):
    cache = model.init_cache(3, 12)
    outs = []
    for a, b in ((0, 6), (6, 12)):  # prefill, then 6 tokens at once (past the window)
      o, cache = model(ids[:, a:b], mask[:, a:b], position_ids=pos[:, a:b], cache=cache)
      outs.append(o)
    return jnp.concatenate(outs, 1)
  full, cached = forward(ids, mask), cached_chunks(ids, mask)
  v = np.asarray(mask).astype(bool)
  np.testing.assert_allclose(np.asarray(cached)[v], np.asarray(full)[v], atol=1e-4)
  np.testing.assert_allclose(np.asarray(full)[v], ref["logits"][v], atol=1e-4, rtol=1e-5)
  # a token further back than the window is not seen: in one sliding layer, changing token 0 leaves the
  # logits from slot 4 on unchanged (but not before)
  one = dataclasses.replace(model.config, num_hidden_layers=1, layer_types=("sliding_attention",))
  sliding = Gemma3ForCausalLM(one, rngs=nnx.Rngs(0))
  fwd = jax.jit(lambda i: sliding(i, jnp.ones_like(i)))
  a, b = np.asarray(fwd(ids)), np.asarray(fwd(ids.at[:, 0].set(ids[:, 0] + 1)))
  assert not np.allclose(a[:, :4], b[:, :4]) and np.allclose(a[:, 4:], b[:, 4:], atol=1e-6)


def test_config_parsing():
  cfg = read_config(TINY)
  c = Gemma3Config.from_dict(cfg)
  # the older config.json form (transformers 4): pattern, rope_theta / rope_local_base_freq / rope_scaling
  old = {k: v for k, v in cfg.items() if k not in ("layer_types", "rope_parameters")}
  old.update(rope_theta=1e6, rope_local_base_freq=1e4, rope_scaling={"rope_type": "linear", "factor": 2.0},
             sliding_window_pattern=2)
  assert Gemma3Config.from_dict(old) == c
  # the multimodal 'gemma3' config: the text model's fields in text_config
  assert Gemma3Config.from_dict({"model_type": "gemma3", "text_config": cfg}) == c
  # Gemma 3 270M's shape: every 6th layer global by default
  d = Gemma3Config.from_dict({"model_type": "gemma3_text", "num_hidden_layers": 12})
  assert [w is None for w in d.sliding_windows] == [False] * 5 + [True] + [False] * 5 + [True]
  assert (d.rope_theta, d.rope_local_theta, d.query_pre_attn_scalar) == (1e6, 1e4, 256.0)
  with pytest.raises(ValueError, match="layer_types.*sliding_attention"):
    Gemma3Config.from_dict({**cfg, "layer_types": ["sliding_attention", "global"] * 2})
  with pytest.raises(ValueError, match="use_bidirectional_attention"):
    Gemma3Config.from_dict({**cfg, "use_bidirectional_attention": True})
  with pytest.raises(ValueError, match="rope_type='yarn'"):
    Gemma3Config.from_dict({**cfg, "rope_parameters": {"full_attention": {"rope_type": "yarn"}}})
  with pytest.raises(ValueError, match="'gemma2'.*allowed"):
    Gemma3Config.from_dict({**cfg, "model_type": "gemma2"})


def test_gguf_spec_reads_a_llama_cpp_style_file(tmp_path):
  hf_cfg = read_config(TINY)
  tensors = read_tensors(TINY)
  path = str(tmp_path / "tiny.gguf")
  write_gemma3_gguf(path, hf_cfg, tensors)
  meta, raw = read_gguf(path)
  # as fedlora.models.gguf passes it: no vocabulary arrays, the tensor shapes instead
  meta = {k: v for k, v in meta.items() if not k.startswith("tokenizer.ggml.") or k.endswith("_id")}
  meta["gguf.tensor_shapes"] = {n: a.shape for n, a in raw.items()}
  fam = family_for("gemma3_text")
  assert fam.gguf.archs == ("gemma3",) and meta["general.architecture"] == "gemma3"
  cfg = fam.gguf.config(meta)
  for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "sliding_window", "bos_token_id", "eos_token_id", "pad_token_id"):
    assert cfg[k] == hf_cfg[k], k
  assert cfg["rope_theta"] == 1e6 and cfg["rope_local_base_freq"] == 1e4 and cfg["tie_word_embeddings"]
  # what a GGUF does not carry follows llama.cpp's gemma3 graph: every 6th layer global, scale head_dim**-0.5
  c = Gemma3Config.from_dict(cfg)
  assert c.sliding_windows == (4, 4, 4, 4) and c.query_pre_attn_scalar == 32.0
  got = dict(fam.gguf.tensor(n, a, cfg) for n, a in raw.items())
  assert sorted(got) == sorted(tensors)
  one = np.float32(1.0)
  for k, v in tensors.items():
    want = (v + one) - one if k.endswith("norm.weight") else v  # llama.cpp stored 1 + w
    np.testing.assert_array_equal(got[k], want, err_msg=k)
  assert gguf_tensor("blk.0.attn_norm.weight", np.full(3, 1.25, np.float32), cfg)[1].tolist() == [0.25] * 3
  assert gguf_tensor("rope_freqs.weight", np.ones(3), cfg) is None
  with pytest.raises(ValueError, match="blk.0.ffn_gate_exps.weight"):
    gguf_tensor("blk.0.ffn_gate_exps.weight", np.ones(3), cfg)
  with pytest.raises(ValueError, match="'llama'.*gemma3"):
    gguf_config({**meta, "general.architecture": "llama"})
  untied = gguf_config({**meta, "gguf.tensor_shapes": {**meta["gguf.tensor_shapes"], "output.weight": (300, 64)}})
  assert untied["tie_word_embeddings"] is False and untied["vocab_size"] == 300
  scaled = gguf_config({**meta, "gemma3.rope.scaling.type": "linear", "gemma3.rope.scaling.factor": 8.0})
  assert scaled["rope_scaling"] == {"rope_type": "linear", "factor": 8.0}

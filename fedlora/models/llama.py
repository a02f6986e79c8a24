"""Decoder-only causal LM of the Llama family (Llama, Mistral, Qwen2) in Flax NNX.

Module layout (Hugging Face names, so LoRA regexes written for PEFT carry over):

  model/embed_tokens/embedding                                   [vocab, H]
  model/layers/<i>/input_layernorm, post_attention_layernorm     RMSNorm
  model/layers/<i>/self_attn/{q_proj,k_proj,v_proj,o_proj}       Linear (GQA: k/v project to Hkv * D)
  model/layers/<i>/mlp/{gate_proj,up_proj,down_proj}             Linear (SwiGLU)
  model/norm                                                     RMSNorm
  lm_head                                                        Linear (H -> vocab); None when tied

Pre-norm blocks, rotary embeddings (HF rotate_half convention), causal + padding (+ optional
sliding-window) mask. Position ids default to `cumsum(attention_mask > 0) - 1` (clipped at 0), so
left padding does not shift positions; for right padding this equals `0..L-1`.

`attention_mask` holds segment ids: 0 = padding, and a token attends only to earlier tokens of the
same segment (`1` everywhere = the usual padding mask; `1, 1, 2, 2, 2` = two packed examples; pass
their per-segment `position_ids`). An optional KV cache (`init_cache`, see `fedlora.models.generate`)
makes incremental decoding one token at a time.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import nnx

from fedlora.models.families import FAMILIES, decoder_namer
from fedlora.models.layers import (CausalLM, Embed, Linear, RMSNorm, activation, apply_rope,
                                   dot_product_attention, rope_cos_sin, rope_inv_freq, run_blocks,
                                   segment_mask, site_key, write_kv_cache)

CAUSAL_LM_TYPES = ("llama", "mistral", "qwen2")
ROPE_TYPES = ("default", "linear", "llama3")
_S_Q, _S_K, _S_V, _S_O, _S_GATE, _S_UP, _S_DOWN = range(7)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """The fields of a Hugging Face Llama/Mistral/Qwen2 `config.json` this implementation uses."""
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_type: str = "default"
  rope_params: tuple = ()          # sorted (name, value) pairs for 'linear' / 'llama3'
  tie_word_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  hidden_act: str = "silu"
  sliding_windows: tuple = ()       # per layer: int window or None (full attention)
  model_type: str = "llama"

  @classmethod
  def from_dict(cls, cfg: dict[str, Any]) -> "LlamaConfig":
    mt = cfg.get("model_type")
    if mt not in CAUSAL_LM_TYPES:
      raise ValueError(f"model_type={mt!r} is not a supported causal LM; allowed: {list(CAUSAL_LM_TYPES)}")
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if cfg.get(k) is None]
    if missing:
      raise ValueError(f"config.json lacks required {mt} fields {missing}")
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    if n_heads % n_kv:
      raise ValueError(f"num_attention_heads={n_heads} is not a multiple of num_key_value_heads={n_kv}")
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_heads

    # RoPE: transformers 5 writes `rope_parameters`; older files `rope_theta` + `rope_scaling`.
    rp = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if rp and all(isinstance(v, dict) for v in rp.values()):
      raise ValueError(f"per-layer-type rope_parameters {sorted(rp)} are not supported")
    theta = float(rp.get("rope_theta", cfg.get("rope_theta", 10000.0)) or 10000.0)
    rope_type = rp.get("rope_type", rp.get("type", "default"))
    if rope_type not in ROPE_TYPES:
      raise ValueError(f"rope_type={rope_type!r} is not supported; allowed: {list(ROPE_TYPES)}")
    prf = rp.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if prf not in (None, 1.0):
      raise ValueError(f"partial_rotary_factor={prf!r} is not supported; allowed: [1.0]")
    params = {}
    if rope_type == "linear":
      params = {"factor": float(rp["factor"])}
    elif rope_type == "llama3":
      params = {k: float(rp[k]) for k in ("factor", "low_freq_factor", "high_freq_factor")}
      params["original_max_position_embeddings"] = float(
          rp.get("original_max_position_embeddings", cfg.get("max_position_embeddings")))

    n_layers = cfg["num_hidden_layers"]
    if mt == "qwen2":
      qkv_bias, o_bias, mlp_bias = True, False, False
    elif mt == "mistral":
      qkv_bias, o_bias, mlp_bias = False, False, False
    else:
      ab = bool(cfg.get("attention_bias", False))
      qkv_bias, o_bias, mlp_bias = ab, ab, bool(cfg.get("mlp_bias", False))

    window = cfg.get("sliding_window")
    if mt == "qwen2" and not cfg.get("use_sliding_window", False):
      window = None
    layer_types = cfg.get("layer_types")
    if layer_types is None:
      if mt == "qwen2":
        mwl = cfg.get("max_window_layers", 28)
        layer_types = ["sliding_attention" if window is not None and i >= mwl else "full_attention"
                       for i in range(n_layers)]
      else:
        layer_types = ["sliding_attention" if window is not None else "full_attention"] * n_layers
    windows = tuple(int(window) if (t == "sliding_attention" and window is not None) else None
                    for t in layer_types)
    c = cls(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"], num_hidden_layers=n_layers,
            num_attention_heads=n_heads, num_key_value_heads=n_kv, head_dim=head_dim,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), rope_theta=theta, rope_type=rope_type,
            rope_params=tuple(sorted(params.items())),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=qkv_bias, o_bias=o_bias, mlp_bias=mlp_bias,
            hidden_act=cfg.get("hidden_act", "silu"), sliding_windows=windows, model_type=mt)
    activation(c.hidden_act)  # validates the name
    return c

  def with_layers(self, n: int) -> "LlamaConfig":
    """The first `n` layers only."""
    return dataclasses.replace(self, num_hidden_layers=n, sliding_windows=self.sliding_windows[:n])


class LlamaAttention(nnx.Module):
  """Grouped-query self-attention with rotary embeddings."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    h, d = cfg.hidden_size, cfg.head_dim
    self.q_proj = Linear(h, cfg.num_attention_heads * d, use_bias=cfg.qkv_bias, rngs=rngs)
    self.k_proj = Linear(h, cfg.num_key_value_heads * d, use_bias=cfg.qkv_bias, rngs=rngs)
    self.v_proj = Linear(h, cfg.num_key_value_heads * d, use_bias=cfg.qkv_bias, rngs=rngs)
    self.o_proj = Linear(cfg.num_attention_heads * d, h, use_bias=cfg.o_bias, rngs=rngs)
    self.num_heads = cfg.num_attention_heads
    self.num_kv_heads = cfg.num_key_value_heads
    self.head_dim = d

  def __call__(self, x, cos, sin, mask, key=None, cache=None):
    """x `[B, L, H]`; mask `[B, 1, L, S]`; cache None or (k, v `[B, S, Hkv, D]`, index) -> out
    (and the updated (k, v) when a cache is given: this step's keys/values written at `index`)."""
    b, l, _ = x.shape
    q = self.q_proj(x, key=site_key(key, _S_Q)).reshape(b, l, self.num_heads, self.head_dim)
    k = self.k_proj(x, key=site_key(key, _S_K)).reshape(b, l, self.num_kv_heads, self.head_dim)
    v = self.v_proj(x, key=site_key(key, _S_V)).reshape(b, l, self.num_kv_heads, self.head_dim)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = write_kv_cache(k, v, cache)
    ctx = dot_product_attention(q, k, v, mask).reshape(b, l, self.num_heads * self.head_dim)
    out = self.o_proj(ctx, key=site_key(key, _S_O))
    return out if cache is None else (out, (k, v))


class LlamaMLP(nnx.Module):
  """SwiGLU: `down_proj(act(gate_proj(x)) * up_proj(x))`."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    h, i = cfg.hidden_size, cfg.intermediate_size
    self.gate_proj = Linear(h, i, use_bias=cfg.mlp_bias, rngs=rngs)
    self.up_proj = Linear(h, i, use_bias=cfg.mlp_bias, rngs=rngs)
    self.down_proj = Linear(i, h, use_bias=cfg.mlp_bias, rngs=rngs)
    self.hidden_act = cfg.hidden_act

  def __call__(self, x, key=None):
    g = activation(self.hidden_act)(self.gate_proj(x, key=site_key(key, _S_GATE)))
    return self.down_proj(g * self.up_proj(x, key=site_key(key, _S_UP)), key=site_key(key, _S_DOWN))


class LlamaDecoderLayer(nnx.Module):
  def __init__(self, cfg: LlamaConfig, layer_idx: int, *, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    self.self_attn = LlamaAttention(cfg, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    self.mlp = LlamaMLP(cfg, rngs=rngs)
    self.sliding_window = cfg.sliding_windows[layer_idx] if cfg.sliding_windows else None

  def __call__(self, x, cos, sin, mask, key=None, cache=None, slots=None):
    """slots: (query slots `[L]`, key slots `[S]`) for the sliding window (default `0..L-1`)."""
    if self.sliding_window is not None:
      if slots is None:
        slots = (jnp.arange(x.shape[1]), jnp.arange(x.shape[1]))
      qi, ki = slots[0][:, None], slots[1][None, :]
      mask = mask & (qi - ki < self.sliding_window)
    if cache is None:
      x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, key)
      return x + self.mlp(self.post_attention_layernorm(x), key)
    a, new = self.self_attn(self.input_layernorm(x), cos, sin, mask, key, cache)
    x = x + a
    return x + self.mlp(self.post_attention_layernorm(x), key), new


class LlamaModel(nnx.Module):
  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs)
    self.layers = nnx.List([LlamaDecoderLayer(cfg, i, rngs=rngs) for i in range(cfg.num_hidden_layers)])
    self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    self.head_dim = cfg.head_dim
    self.rope_theta = cfg.rope_theta
    self.rope_type = cfg.rope_type
    self.rope_params = cfg.rope_params

  def __call__(self, input_ids, attention_mask, *, position_ids=None, key=None, cache=None):
    """-> final hidden states `[B, L, H]` (after the last RMSNorm), and the new cache if one is given."""
    if position_ids is None:
      position_ids = jnp.maximum(jnp.cumsum((attention_mask > 0).astype(jnp.int32), axis=1) - 1, 0)
    mask, slots, index, kv_seg = segment_mask(attention_mask, cache)
    inv = rope_inv_freq(self.head_dim, self.rope_theta, self.rope_type, **dict(self.rope_params))
    cos, sin = rope_cos_sin(position_ids, inv)
    x = self.embed_tokens(input_ids)
    if cache is None:
      x = run_blocks(self.layers, getattr(self, "remat", None),
                     lambda layer, h, k: layer(h, cos, sin, mask, k), x, key,
                     barrier=getattr(self, "block_barrier", False))
      return self.norm(x)
    # with a KV cache (generation: no backward pass) blocks are never rematerialised
    ks, vs = [], []
    for i, layer in enumerate(self.layers):
      x, (k, v) = layer(x, cos, sin, mask, site_key(key, i), (cache["k"][i], cache["v"][i], index), slots)
      ks.append(k)
      vs.append(v)
    new = {"k": jnp.stack(ks), "v": jnp.stack(vs), "mask": kv_seg, "index": index + input_ids.shape[1]}
    return self.norm(x), new


class LlamaForCausalLM(CausalLM):
  """`LlamaModel` + `lm_head` (or the tied embedding when `tie_word_embeddings`); the forward pass,
  KV cache and head are `layers.CausalLM`'s."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.model = LlamaModel(cfg, rngs=rngs)
    self.lm_head = (None if cfg.tie_word_embeddings
                    else Linear(cfg.hidden_size, cfg.vocab_size, use_bias=False, rngs=rngs))


# ---- the family declaration (see fedlora.models.families) ---------------------------------------------

def _llama_build(cfg: LlamaConfig, head: str, options: dict):
  return LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))


# ---- GGUF (llama.cpp) checkpoints: metadata -> config.json dict, tensor names -> HF names ----------------

_GGUF_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
               "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}
_GGUF_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _gguf_config(meta: dict) -> dict:
  """`llama.*` / `tokenizer.ggml.*` metadata (+ `gguf.tensor_shapes`) -> a Llama `config.json` dict."""
  from fedlora.models.gguf import TENSOR_SHAPES_KEY
  shapes = meta.get(TENSOR_SHAPES_KEY, {})

  def get(key, default=None):
    return meta.get(f"llama.{key}", default)
  missing = [f"llama.{k}" for k in ("embedding_length", "feed_forward_length", "block_count",
                                    "attention.head_count") if get(k) is None]
  if missing:
    raise ValueError(f"GGUF metadata lacks {missing} (needed for a llama-architecture model)")
  n_heads, hidden = int(get("attention.head_count")), int(get("embedding_length"))
  head_dim = int(get("attention.key_length", hidden // n_heads))
  rope_dim = get("rope.dimension_count", head_dim)
  if rope_dim != head_dim:
    raise ValueError(f"llama.rope.dimension_count={rope_dim} != head_dim={head_dim}: partial rotary "
                     "embeddings are not supported")
  if "rope_freqs.weight" in shapes:
    raise ValueError("the GGUF file holds rope_freqs.weight (llama3-style rope scaling stored as a "
                     "tensor), which is not supported; supported: no rope scaling or "
                     "llama.rope.scaling.type='linear'")
  vocab = get("vocab_size") or (shapes["token_embd.weight"][0] if "token_embd.weight" in shapes else None)
  cfg = {"model_type": "llama", "vocab_size": int(vocab) if vocab else None, "hidden_size": hidden,
         "intermediate_size": int(get("feed_forward_length")),
         "num_hidden_layers": int(get("block_count")), "num_attention_heads": n_heads,
         "num_key_value_heads": int(get("attention.head_count_kv", n_heads)), "head_dim": head_dim,
         "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
         "rope_theta": float(get("rope.freq_base", 10000.0)),
         "max_position_embeddings": int(get("context_length", 2048)),
         "tie_word_embeddings": "output.weight" not in shapes,
         "attention_bias": "blk.0.attn_q.bias" in shapes, "hidden_act": "silu"}
  scaling = get("rope.scaling.type", "none")
  if scaling == "linear":
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
  elif scaling not in ("none", None):
    raise ValueError(f"llama.rope.scaling.type={scaling!r} is not supported; allowed: ['none', 'linear']")
  for ours, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                    ("pad_token_id", "padding_token_id")):
    if f"tokenizer.ggml.{key}" in meta:
      cfg[ours] = int(meta[f"tokenizer.ggml.{key}"])
  return cfg


def unpermute_qk(w, n_heads: int):
  """Undo llama.cpp's rope row permutation of a q/k projection.

  llama.cpp stores each head's rows as interleaved (x0, x_{D/2}), (x1, x_{D/2+1}), ... pairs (its rope
  rotates adjacent pairs); Hugging Face keeps the two halves apart (`rotate_half`).
  w: `[n_heads * D, ...]` (a weight `[out, in]` or a bias `[out]`) -> same shape, HF row order.
  """
  d = w.shape[0] // n_heads
  return w.reshape(n_heads, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_tensor(name: str, arr, cfg: dict):
  """GGUF tensor (numpy order) -> (HF name, array); the q/k rows are un-permuted."""
  base, _, leaf = name.rpartition(".")
  if leaf not in ("weight", "bias"):
    raise ValueError(f"GGUF tensor {name!r}: expected a '.weight' or '.bias' tensor")
  if base in _GGUF_TOP:
    return f"{_GGUF_TOP[base]}.{leaf}", arr
  parts = base.split(".")
  if len(parts) != 3 or parts[0] != "blk" or parts[2] not in _GGUF_LAYER:
    raise ValueError(f"GGUF tensor {name!r} is not one the llama family reads; it reads token_embd, "
                     f"output_norm, output and blk.N.{{{', '.join(_GGUF_LAYER)}}}")
  kind = parts[2]
  if kind == "attn_q":
    arr = unpermute_qk(arr, cfg["num_attention_heads"])
  elif kind == "attn_k":
    arr = unpermute_qk(arr, cfg["num_key_value_heads"])
  return f"model.layers.{parts[1]}.{_GGUF_LAYER[kind]}.{leaf}", arr


def _family():
  from fedlora.models.families import Family, GGUFSpec, default_pad_token_id, transpose_kernels
  return Family(
      name="llama", model_types=CAUSAL_LM_TYPES, heads=("causal_lm",),
      parse_config=LlamaConfig.from_dict, build=_llama_build, tensor_namer=decoder_namer,
      transpose=transpose_kernels, tied_embeddings=lambda c: c.tie_word_embeddings,
      embedding_path="model/embed_tokens/embedding", head_paths=(),
      lora_targets=("self_attn/(q_proj|v_proj)",), pad_token_id=default_pad_token_id,
      gguf=GGUFSpec(archs=("llama",), config=_gguf_config, tensor=_gguf_tensor))


FAMILY = FAMILIES.register("llama")(_family())

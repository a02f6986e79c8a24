"""GPT-2 causal LM in Flax NNX, and its family declaration (the whole family lives in this file).

Module layout (Hugging Face names; `Conv1D` weights are stored `[in, out]`, so nothing is transposed):

  transformer/wte/embedding [vocab, H], transformer/wpe/embedding [n_positions, H]
  transformer/h/<i>/ln_1, ln_2                       LayerNorm
  transformer/h/<i>/attn/c_attn                      Linear H -> 3H (fused q, k, v; bias)
  transformer/h/<i>/attn/c_proj                      Linear H -> H
  transformer/h/<i>/mlp/c_fc, mlp/c_proj             Linear H -> n_inner -> H
  transformer/ln_f                                   LayerNorm
  output projection: tied to `wte` (GPT-2 always ties)

Pre-LN blocks, learned absolute positions, `gelu_new`. `attention_mask` holds segment ids as in
`fedlora.models.llama` (0 = padding); positions default to `cumsum(mask > 0) - 1`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import nnx

from fedlora.models.families import FAMILIES
from fedlora.models.layers import (at_positions, Embed, LayerNorm, Linear, activation, dot_product_attention,
                                   init_kv_cache, run_blocks, segment_mask, site_key,
                                   write_kv_cache)

MODEL_TYPES = ("gpt2",)


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  vocab_size: int
  n_positions: int
  n_embd: int
  n_layer: int
  n_head: int
  n_inner: int
  activation_function: str = "gelu_new"
  layer_norm_epsilon: float = 1e-5

  @property
  def head_dim(self) -> int:
    return self.n_embd // self.n_head

  @classmethod
  def from_dict(cls, cfg: dict[str, Any]) -> "GPT2Config":
    missing = [k for k in ("vocab_size", "n_embd", "n_layer", "n_head") if cfg.get(k) is None]
    if missing:
      raise ValueError(f"config.json lacks required gpt2 fields {missing}")
    for k in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
      if cfg.get(k):
        raise ValueError(f"gpt2 {k}=True is not supported; allowed: False")
    if cfg.get("scale_attn_weights") is False:
      raise ValueError("gpt2 scale_attn_weights=False is not supported; allowed: True")
    if cfg.get("tie_word_embeddings") is False:
      raise ValueError("gpt2 tie_word_embeddings=False is not supported; allowed: True")
    if cfg["n_embd"] % cfg["n_head"]:
      raise ValueError(f"n_embd={cfg['n_embd']} is not divisible by n_head={cfg['n_head']}")
    c = cls(vocab_size=cfg["vocab_size"], n_positions=cfg.get("n_positions", 1024), n_embd=cfg["n_embd"],
            n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_inner=cfg.get("n_inner") or 4 * cfg["n_embd"],
            activation_function=cfg.get("activation_function", "gelu_new"),
            layer_norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-5)))
    activation(c.activation_function)
    return c

  def with_layers(self, n: int) -> "GPT2Config":
    return dataclasses.replace(self, n_layer=n)


class GPT2Attention(nnx.Module):
  def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
    self.c_attn = Linear(cfg.n_embd, 3 * cfg.n_embd, rngs=rngs)
    self.c_proj = Linear(cfg.n_embd, cfg.n_embd, rngs=rngs)
    self.n_head = cfg.n_head
    self.head_dim = cfg.head_dim

  def __call__(self, x, mask, key=None, cache=None):
    b, l, h = x.shape
    q, k, v = jnp.split(self.c_attn(x, key=site_key(key, 0)), 3, axis=-1)
    q, k, v = (t.reshape(b, l, self.n_head, self.head_dim) for t in (q, k, v))
    k, v = write_kv_cache(k, v, cache)
    out = self.c_proj(dot_product_attention(q, k, v, mask).reshape(b, l, h), key=site_key(key, 1))
    return out if cache is None else (out, (k, v))


class GPT2MLP(nnx.Module):
  def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
    self.c_fc = Linear(cfg.n_embd, cfg.n_inner, rngs=rngs)
    self.c_proj = Linear(cfg.n_inner, cfg.n_embd, rngs=rngs)
    self.act = cfg.activation_function

  def __call__(self, x, key=None):
    return self.c_proj(activation(self.act)(self.c_fc(x, key=site_key(key, 2))), key=site_key(key, 3))


class GPT2Block(nnx.Module):
  def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
    self.ln_1 = LayerNorm(cfg.n_embd, cfg.layer_norm_epsilon)
    self.attn = GPT2Attention(cfg, rngs=rngs)
    self.ln_2 = LayerNorm(cfg.n_embd, cfg.layer_norm_epsilon)
    self.mlp = GPT2MLP(cfg, rngs=rngs)

  def __call__(self, x, mask, key=None, cache=None):
    if cache is None:
      x = x + self.attn(self.ln_1(x), mask, key)
      return x + self.mlp(self.ln_2(x), key)
    a, new = self.attn(self.ln_1(x), mask, key, cache)
    x = x + a
    return x + self.mlp(self.ln_2(x), key), new


class GPT2Model(nnx.Module):
  def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
    self.wte = Embed(cfg.vocab_size, cfg.n_embd, rngs=rngs)
    self.wpe = Embed(cfg.n_positions, cfg.n_embd, rngs=rngs)
    self.h = nnx.List([GPT2Block(cfg, rngs=rngs) for _ in range(cfg.n_layer)])
    self.ln_f = LayerNorm(cfg.n_embd, cfg.layer_norm_epsilon)


class GPT2LMHeadModel(nnx.Module):
  """GPT-2 with the tied output projection; same call/cache protocol as `LlamaForCausalLM`."""

  def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
    self.config = cfg
    self.transformer = GPT2Model(cfg, rngs=rngs)

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32):
    c = self.config
    return init_kv_cache(c.n_layer, batch, max_len, c.n_head, c.head_dim, dtype)

  def __call__(self, input_ids, attention_mask, *, position_ids=None, key=None, cache=None,
               positions=None):
    """input_ids, attention_mask (segment ids) `[B, L]` -> logits `[B, L, vocab]` (, new cache);
    with `positions [B, P]` (no cache), the logits at those positions only, `[B, P, vocab]`."""
    t = self.transformer
    if position_ids is None:
      position_ids = jnp.maximum(jnp.cumsum((attention_mask > 0).astype(jnp.int32), axis=1) - 1, 0)
    mask, _, index, kv_seg = segment_mask(attention_mask, cache)
    x = t.wte(input_ids) + t.wpe(position_ids)
    if cache is None:
      x = run_blocks(t.h, getattr(t, "remat", None), lambda block, h, k: block(h, mask, k), x, key,
                     barrier=getattr(t, "block_barrier", False))
      return t.wte.attend(at_positions(t.ln_f(x), positions))
    ks, vs = [], []  # with a KV cache (generation: no backward pass) blocks are never rematerialised
    for i, block in enumerate(t.h):
      x, (k, v) = block(x, mask, site_key(key, i), (cache["k"][i], cache["v"][i], index))
      ks.append(k)
      vs.append(v)
    logits = t.wte.attend(t.ln_f(x))
    return logits, {"k": jnp.stack(ks), "v": jnp.stack(vs), "mask": kv_seg,
                    "index": index + input_ids.shape[1]}


# ---- the family declaration (see fedlora.models.families) ---------------------------------------------

def _namer(tensors, options):
  from fedlora.models.families import LEAF_NAMES, dotted, find_prefix
  prefix = find_prefix(tensors, "wte.weight", ("transformer.", ""))

  def name_of(path):
    return prefix + dotted(path[1:-1]) + "." + LEAF_NAMES[path[-1]]
  return name_of


def _family():
  from fedlora.models.families import Family, default_pad_token_id
  return Family(
      name="gpt2", model_types=MODEL_TYPES, heads=("causal_lm",), parse_config=GPT2Config.from_dict,
      build=lambda cfg, head, options: GPT2LMHeadModel(cfg, rngs=nnx.Rngs(0)), tensor_namer=_namer,
      transpose=lambda path: False,  # Conv1D weights are stored [in, out] already
      tied_embeddings=lambda c: True, embedding_path="transformer/wte/embedding", head_paths=(),
      lora_targets=("attn/c_attn",), pad_token_id=default_pad_token_id)


FAMILY = FAMILIES.register("gpt2")(_family())

"""Greedy / temperature decoding for the causal-LM families, with a KV cache, as jitted pure functions.

A causal LM here is any module with `init_cache(batch, max_len)` and
`__call__(ids [B, l], segment_ids [B, l], position_ids=[B, l], cache=cache) -> (logits [B, l, V], cache)`
(`LlamaForCausalLM`, `GPT2LMHeadModel`). Prompts are LEFT-padded (`prompt_mask` 0 on the left), so
the last column is every row's last prompt token; positions are `cumsum(mask) - 1`, so padding does
not shift them. The prompt is run once (prefill, filling the cache), then one token per step.

`generate_reference` recomputes the whole sequence every step without a cache: the slow obvious
reference the tests compare against.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _pick(logits, key, temperature: float):
  """Next token `[B]`: argmax when temperature == 0, else a sample from softmax(logits / T)."""
  if temperature <= 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)


def generate(model, prompt_ids, prompt_mask, key, *, max_new_tokens: int, temperature: float = 0.0,
             eos_id: int | None = None, pad_id: int = 0):
  """Decodes `max_new_tokens` tokens after each (left-padded) prompt with a KV cache.

  Args:
    model: a causal-LM module (call inside jit: e.g. `parts.module(trainable, frozen)`).
    prompt_ids, prompt_mask: `[B, Lp]` int32, left-padded.
    key: PRNG key (used only when temperature > 0).
    eos_id: once a row emits it, the row's later tokens are `pad_id`.
  Returns:
    tokens `[B, max_new_tokens]` int32.
  """
  b, lp = prompt_ids.shape
  mask = (prompt_mask > 0).astype(jnp.int32)
  pos = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  cache = model.init_cache(b, lp + max_new_tokens)
  logits, cache = model(prompt_ids, mask, position_ids=pos, cache=cache)
  lens = mask.sum(1)

  def step(carry, t):
    cache, last, done, k = carry
    k, sub = jax.random.split(k)
    tok = jnp.where(done, pad_id, _pick(last, sub, temperature))
    if eos_id is not None:
      done = done | (tok == eos_id)
    out, cache = model(tok[:, None], jnp.ones((b, 1), jnp.int32), position_ids=(lens + t)[:, None],
                       cache=cache)
    return (cache, out[:, -1], done, k), tok

  init = (cache, logits[:, -1], jnp.zeros((b,), bool), key)
  _, toks = jax.lax.scan(step, init, jnp.arange(max_new_tokens))
  return toks.T


def generate_reference(model, prompt_ids, prompt_mask, key, *, max_new_tokens: int,
                       temperature: float = 0.0, eos_id: int | None = None, pad_id: int = 0):
  """Same contract as `generate`, recomputing the full sequence `[B, Lp + t]` at every step."""
  b, lp = prompt_ids.shape
  ids = jnp.concatenate([prompt_ids, jnp.full((b, max_new_tokens), pad_id, prompt_ids.dtype)], axis=1)
  mask = jnp.concatenate([(prompt_mask > 0).astype(jnp.int32), jnp.zeros((b, max_new_tokens), jnp.int32)],
                         axis=1)
  done = jnp.zeros((b,), bool)
  toks = []
  k = key
  for t in range(max_new_tokens):
    logits = model(ids[:, :lp + t], mask[:, :lp + t])
    k, sub = jax.random.split(k)
    tok = jnp.where(done, pad_id, _pick(logits[:, -1], sub, temperature))
    if eos_id is not None:
      done = done | (tok == eos_id)
    ids = ids.at[:, lp + t].set(tok)
    mask = mask.at[:, lp + t].set(1)
    toks.append(tok)
  return jnp.stack(toks, axis=1)


def make_generate(module_fn: Callable, *, max_new_tokens: int, temperature: float = 0.0,
                  eos_id: int | None = None, pad_id: int = 0):
  """`jit(gen(trainable, frozen, prompt_ids, prompt_mask, key) -> tokens [B, T])`, where
  `module_fn(trainable, frozen)` builds the module (e.g. `ModelParts.module`)."""
  @jax.jit
  def gen(trainable, frozen, prompt_ids, prompt_mask, key):
    return generate(module_fn(trainable, frozen), prompt_ids, prompt_mask, key,
                    max_new_tokens=max_new_tokens, temperature=temperature, eos_id=eos_id, pad_id=pad_id)
  return gen


__all__ = ["generate", "generate_reference", "make_generate"]

"""Basic layers shared by every model, written so LoRA adapters can be attached by path.

Kernels are stored `[d_in, d_out]` and applied as `x @ kernel` (PyTorch checkpoints store
`[d_out, d_in]`; the loaders transpose). A `Linear` may carry a LoRA adapter
(`lora_a: [d_in, r]`, `lora_b: [r, d_out]`, see `fedlora.lora`), attached after construction by
`fedlora.lora.attach`; the forward pass is then `x @ W0 + (alpha/r) * (dropout(x) @ A) @ B`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def lora_delta(x, a, b, scale, dropout_rate=0.0, key=None):
  """The LoRA branch `(alpha/r) * (dropout(x) @ a) @ b`.

  Args:
    x: `[..., d_in]` input. a: `[d_in, r]`. b: `[r, d_out]`. scale: alpha / r.
    dropout_rate: LoRA dropout on the branch input; needs `key` when > 0.
  Returns:
    `[..., d_out]`; never forms the `[d_in, d_out]` product `a @ b`.
  """
  if dropout_rate > 0.0 and key is not None:
    keep = jax.random.bernoulli(key, 1.0 - dropout_rate, x.shape)
    x = jnp.where(keep, x / (1.0 - dropout_rate), 0.0).astype(x.dtype)
  return scale * ((x @ a) @ b)


class Linear(nnx.Module):
  """`y = x @ kernel + bias`, plus an optional LoRA branch.

  Attributes:
    kernel: `[d_in, d_out]` frozen base weight. bias: `[d_out]` or None.
    lora_a / lora_b: `nnx.LoRAParam` `[d_in, r]` / `[r, d_out]`, or None when not adapted.
    lora_scale / lora_dropout: static floats set by `fedlora.lora.attach`.
  """

  def __init__(self, d_in: int, d_out: int, *, use_bias: bool = True, rngs: nnx.Rngs,
               init_std: float = 0.02):
    self.kernel = nnx.Param(init_std * jax.random.normal(rngs.params(), (d_in, d_out), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((d_out,), jnp.float32)) if use_bias else nnx.data(None)
    self.lora_a = nnx.data(None)
    self.lora_b = nnx.data(None)
    self.lora_scale = 0.0
    self.lora_dropout = 0.0

  def __call__(self, x, key=None):
    """x: `[..., d_in]` -> `[..., d_out]`. `key` drives LoRA dropout only."""
    y = x @ self.kernel[...]
    if self.bias is not None:
      y = y + self.bias[...]
    if self.lora_a is not None:
      y = y + lora_delta(x, self.lora_a[...], self.lora_b[...], self.lora_scale,
                         self.lora_dropout, key)
    return y


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis with learned `scale`/`bias` `[d]` (BERT style)."""

  def __init__(self, d: int, eps: float = 1e-12):
    self.scale = nnx.Param(jnp.ones((d,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((d,), jnp.float32))
    self.eps = eps

  def __call__(self, x):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class RMSNorm(nnx.Module):
  """RMSNorm over the last axis with learned `scale` `[d]` (Llama style: x * rsqrt(mean(x^2)+eps) * w)."""

  def __init__(self, d: int, eps: float = 1e-6):
    self.scale = nnx.Param(jnp.ones((d,), jnp.float32))
    self.eps = eps

  def __call__(self, x):
    var = (x.astype(jnp.float32) ** 2).mean(-1, keepdims=True)
    return (x * jax.lax.rsqrt(var + self.eps)) * self.scale[...]


class Embed(nnx.Module):
  """Token embedding table `embedding: [vocab, d]`; `__call__(ids [...]) -> [..., d]`."""

  def __init__(self, vocab: int, d: int, *, rngs: nnx.Rngs, init_std: float = 0.02):
    self.embedding = nnx.Param(init_std * jax.random.normal(rngs.params(), (vocab, d), jnp.float32))

  def __call__(self, ids):
    return jnp.take(self.embedding[...], ids, axis=0)

  def attend(self, x):
    """Tied output projection: `[..., d] -> [..., vocab]`."""
    return x @ self.embedding[...].T

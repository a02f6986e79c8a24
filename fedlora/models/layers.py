"""Basic layers shared by every model, written so LoRA adapters can be attached by path.

Kernels are stored `[d_in, d_out]` and applied as `x @ kernel` (PyTorch checkpoints store
`[d_out, d_in]`; the loaders transpose). A `Linear` may carry a LoRA adapter
(`lora_a: [d_in, r]`, `lora_b: [r, d_out]`, see `fedlora.lora`), attached after construction by
`fedlora.lora.attach`; the forward pass is then `x @ W0 + (alpha/r) * (dropout(x) @ A) @ B`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
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
    """x: `[..., d_in]` -> `[..., d_out]`. `key` drives LoRA dropout only.

    With a `compute_dtype` (set by `set_precision`) the input, kernel and LoRA factors are cast
    to it for the matmuls (the float32 LoRA factors get float32 gradients through the cast)."""
    cd = getattr(self, "compute_dtype", None)
    cast = (lambda t: t.astype(cd)) if cd is not None else (lambda t: t)  # noqa: E731
    x = cast(x)
    y = x @ cast(self.kernel[...])
    if self.bias is not None:
      y = y + cast(self.bias[...])
    if self.lora_a is not None:
      y = y + lora_delta(x, cast(self.lora_a[...]), cast(self.lora_b[...]), self.lora_scale,
                         self.lora_dropout, key).astype(y.dtype)
    return y


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis with learned `scale`/`bias` `[d]` (BERT style)."""

  def __init__(self, d: int, eps: float = 1e-12):
    self.scale = nnx.Param(jnp.ones((d,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((d,), jnp.float32))
    self.eps = eps

  def __call__(self, x):
    """Computed in float32 whatever the input/parameter dtype; returns float32."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...].astype(jnp.float32)
            + self.bias[...].astype(jnp.float32))


class RMSNorm(nnx.Module):
  """RMSNorm over the last axis with learned `scale` `[d]` (Llama style: x * rsqrt(mean(x^2)+eps) * w)."""

  def __init__(self, d: int, eps: float = 1e-6):
    self.scale = nnx.Param(jnp.ones((d,), jnp.float32))
    self.eps = eps

  def __call__(self, x):
    """Statistics in float32; a bfloat16 input comes out float32 (promoted by the float32 scale)."""
    var = (x.astype(jnp.float32) ** 2).mean(-1, keepdims=True)
    return (x * jax.lax.rsqrt(var + self.eps)) * self.scale[...].astype(jnp.float32)


class Embed(nnx.Module):
  """Token embedding table `embedding: [vocab, d]`; `__call__(ids [...]) -> [..., d]`."""

  def __init__(self, vocab: int, d: int, *, rngs: nnx.Rngs, init_std: float = 0.02):
    self.embedding = nnx.Param(init_std * jax.random.normal(rngs.params(), (vocab, d), jnp.float32))

  def __call__(self, ids):
    return jnp.take(self.embedding[...], ids, axis=0)

  def attend(self, x):
    """Tied output projection: `[..., d] -> [..., vocab]`."""
    return x @ self.embedding[...].T


# --- shared helpers for the model families (additions; the classes above are unchanged) -----------

def gelu_exact(x):
  """GELU with the exact erf form (BERT's 'gelu')."""
  return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x):
  """GELU with the tanh approximation ('gelu_new', 'gelu_pytorch_tanh')."""
  return jax.nn.gelu(x, approximate=True)


ACTIVATIONS = {
    "gelu": gelu_exact,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str):
  """The activation function named by a Hugging Face `hidden_act`; ValueError lists the allowed ones."""
  if name not in ACTIVATIONS:
    raise ValueError(f"hidden_act={name!r} is not supported; allowed: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def dropout(x, rate: float, key):
  """Inverted dropout driven only by `key`; identity when `rate == 0` or `key is None`."""
  if rate <= 0.0 or key is None:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def site_key(key, *indices):
  """`key` folded with each index in turn (per layer / per site); None stays None."""
  if key is None:
    return None
  for i in indices:
    key = jax.random.fold_in(key, i)
  return key


def dot_product_attention(q, k, v, mask, scale=None, softcap=None):
  """Softmax attention with grouped-query support.

  Args:
    q: `[B, L, H, D]` queries (unscaled: this multiplies the scores by `scale`, default `1/sqrt(D)`).
    k, v: `[B, S, Hkv, D]` with `H % Hkv == 0`; query head `h` reads kv head `h // (H // Hkv)`
      (the Hugging Face `repeat_kv` order).
    mask: bool, broadcastable to `[B, H, L, S]`; False entries get the dtype's most negative value
      before the softmax (a fully masked row becomes uniform, never NaN).
    scale: the score scale (Gemma: `query_pre_attn_scalar ** -0.5`); None = `1/sqrt(D)`.
    softcap: None, or `c` to soft-cap the scaled scores to `c * tanh(scores / c)` before the mask.
  Returns:
    `[B, L, H, D]`.

  The heads are moved in front of the sequence once (`[B, Hkv, G, L, D]`, `[B, Hkv, S, D]`) so
  both batched matmuls read and write contiguous `[L, D]` / `[L, S]` tiles; written straight into
  `[B, L, H, D]` the P·V product was slower on XLA:CPU (`benchmarks/bench_cpu_step.py` times both
  layouts; the values are the same).
  """
  b, l, h, d = q.shape
  hkv = k.shape[2]
  g = h // hkv
  qh = q.reshape(b, l, hkv, g, d).transpose(0, 2, 3, 1, 4)  # [B, Hkv, G, L, D]
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, Hkv, S, D]
  scores = jnp.einsum("bkgld,bksd->bkgls", qh, kh)
  scores = scores / jnp.sqrt(jnp.asarray(d, q.dtype)) if scale is None else scores * jnp.asarray(scale, q.dtype)
  if softcap is not None:
    scores = jnp.tanh(scores / softcap) * softcap
  scores = scores.reshape(b, h, l, -1)
  scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
  probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)
  out = jnp.einsum("bkgls,bksd->bkgld", probs.reshape(b, hkv, g, l, -1), vh)  # [B, Hkv, G, L, D]
  return out.transpose(0, 3, 1, 2, 4).reshape(b, l, h, d)


def rotate_half(x):
  """`[x1, x2] -> [-x2, x1]` over the last axis (the Hugging Face rotary convention)."""
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def rope_inv_freq(head_dim: int, theta: float, rope_type: str = "default", **params) -> jnp.ndarray:
  """Inverse frequencies `[head_dim // 2]` for rotary embeddings.

  rope_type: 'default'; 'linear' (`factor`); 'llama3' (`factor`, `low_freq_factor`,
  `high_freq_factor`, `original_max_position_embeddings`), as in Hugging Face `modeling_rope_utils`.
  """
  inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
  inv = inv.astype(np.float32)
  if rope_type == "default":
    return jnp.asarray(inv)
  if rope_type == "linear":
    return jnp.asarray(inv / np.float32(params["factor"]))
  if rope_type == "llama3":
    factor = params["factor"]
    lo, hi = params["low_freq_factor"], params["high_freq_factor"]
    old = params["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    wl = 2 * np.pi / inv
    out = np.where(wl > lo_wl, inv / factor, inv)
    smooth = (old / wl - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wl < hi_wl) & ~(wl > lo_wl)
    return jnp.asarray(np.where(medium, smoothed, out).astype(np.float32))
  raise ValueError(f"rope_type={rope_type!r} is not supported; allowed: ['default', 'linear', 'llama3']")


def rope_cos_sin(positions, inv_freq):
  """positions `[B, L]` int -> (cos, sin) `[B, L, 1, D]` with `D = 2 * len(inv_freq)`."""
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, L, D/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb)[:, :, None, :], jnp.sin(emb)[:, :, None, :]


def apply_rope(x, cos, sin):
  """Rotary embedding of `x: [B, L, H, D]` with (cos, sin) from `rope_cos_sin`."""
  return (x * cos + rotate_half(x) * sin).astype(x.dtype)


# --- precision and rematerialisation (generic over model families) --------------------------------

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
REMAT = ("none", "block")
BLOCK_LISTS = ("layers", "h")  # attribute names of a family's block list (BERT/Llama 'layers', GPT-2 'h')


def remat_policies() -> tuple[str, ...]:
  """Names accepted by `model.remat` besides 'none'/'block': the `jax.checkpoint_policies` entries
  that are policies themselves (not factories needing arguments)."""
  names = []
  for n in dir(jax.checkpoint_policies):
    if n.startswith("_"):
      continue
    f = getattr(jax.checkpoint_policies, n)
    if callable(f) and n not in ("save_only_these_names", "save_any_names_but_these",
                                 "save_and_offload_only_these_names", "save_from_both_policies",
                                 "offload_dot_with_no_batch_dims"):
      names.append(n)
  return tuple(names)


def check_remat(name: str) -> str:
  allowed = REMAT + remat_policies()
  if name not in allowed:
    raise ValueError(f"model.remat={name!r}: allowed values are {allowed}")
  return name


def check_dtype(key: str, name: str):
  if name not in DTYPES:
    raise ValueError(f"{key}={name!r}: allowed values are {tuple(DTYPES)}")
  return DTYPES[name]


def set_precision(model: nnx.Module, compute_dtype: str = "float32", remat: str = "none",
                  grad_barrier: bool = False) -> nnx.Module:
  """Build-time: every `Linear` computes its matmuls in `compute_dtype` ('float32' leaves the
  reference path untouched), and every module with a block loop (`remat` and `block_barrier`
  attributes, read by `run_blocks`) recomputes its blocks' activations in the backward pass per
  `remat` and, with `grad_barrier`, materialises the gradient between blocks on CPU.
  Returns the model for chaining."""
  cd = check_dtype("model.compute_dtype", compute_dtype)
  check_remat(remat)
  for _, m in nnx.iter_modules(model):
    if isinstance(m, Linear):
      m.compute_dtype = None if cd == jnp.float32 else cd
    if any(isinstance(getattr(m, a, None), nnx.List) for a in BLOCK_LISTS):
      m.remat = remat
      m.block_barrier = bool(grad_barrier)
  return model


BARRIER_WIDTH = 8  # the identity matmul of `grad_barrier` contracts groups of this many elements


def _materialise(g):
  """`g` through an `[.., 8] @ eye(8)` matmul: the same values (for finite `g`), but a dot, which
  XLA:CPU never fuses into an elementwise consumer, so `g` is computed once and read from memory."""
  if g.size % BARRIER_WIDTH:
    return g
  eye = jnp.eye(BARRIER_WIDTH, dtype=g.dtype)
  return (g.reshape(-1, BARRIER_WIDTH) @ eye).reshape(g.shape)


@jax.custom_vjp
def grad_barrier(x):
  """Identity whose backward pass materialises the cotangent on CPU (on other platforms: identity).

  Why: in the backward pass of a block stack without remat, XLA:CPU fuses each block's
  residual-stream gradient (its LayerNorm backward, a chain of elementwise ops) into every
  consumer instead of writing it once, so the fusions of block i recompute the chain of all the
  blocks above it: quadratic in depth. It happened whenever a client step was compiled unbatched
  or in a chunk of one client (the Python loop, `fed.client_chunk=1`) and for small clients
  (2 × 32 tokens, also 4 per chunk), not for 4 default clients (8 × 128) per chunk;
  `benchmarks/bench_cpu_step.py` counts the fused instructions and times the step with and
  without the barrier.
  `jax.lax.optimization_barrier` does not stop it (XLA:CPU expands it before fusion); a dot
  does. The matmul costs 2·8 FLOPs per element (~0.1 % of a block's). Values are unchanged bar
  one case: a non-finite cotangent spreads NaN over its group of 8 (such a step is non-finite
  anyway; the guard counts and drops it). `tests/test_models.py` checks equality.
  """
  return x


def _grad_barrier_fwd(x):
  return x, None


def _grad_barrier_bwd(_, g):
  return (jax.lax.platform_dependent(g, cpu=_materialise, default=lambda t: t),)


grad_barrier.defvjp(_grad_barrier_fwd, _grad_barrier_bwd)


def run_blocks(blocks, remat: str | None, step, x, key=None, barrier: bool = False):
  """`x` through every block in order: `x = step(block, x, site_key(key, i))` for block i.

  remat 'none' (or None): a Python loop, the reference path. 'block' (save nothing inside a block)
  or a `jax.checkpoint_policies` name: each run of consecutive blocks with the same structure (nnx
  graphdef; e.g. Qwen2's sliding-window and full-attention layers differ) is ONE `lax.scan` over
  the blocks' stacked states, with the scan body under `jax.checkpoint`. The scan is what makes
  remat save memory: with a Python loop of `jax.checkpoint`ed blocks, XLA:CPU's estimate of the
  step's temporaries stayed byte-identical to no remat (by all appearances each block's
  recomputation is merged with or scheduled beside its forward pass); inside the scan's backward
  loop the recomputation of block i can only happen at iteration i. Cost: the stacked weights are
  one copy of the blocks' weights per call (outside any vmap over clients: they are not batched).
  barrier: (Python loop only; the scan's loop boundary already does it) the gradient between
  blocks goes through `grad_barrier`, which on CPU stops XLA from recomputing the whole
  residual-gradient chain inside every block's fusions.
  """
  if remat in (None, "none"):
    for i, block in enumerate(blocks):
      if barrier and i > 0:  # the gradient entering block i-1 from block i (`grad_barrier`)
        x = grad_barrier(x)
      x = step(block, x, site_key(key, i))
    return x
  policy = None if remat == "block" else getattr(jax.checkpoint_policies, remat)
  splits = [nnx.split(b) for b in blocks]
  i = 0
  while i < len(splits):
    graphdef = splits[i][0]
    j = i + 1
    while j < len(splits) and splits[j][0] == graphdef:
      j += 1
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[st for _, st in splits[i:j]])

    def body(h, inp, graphdef=graphdef):
      state, idx = inp
      return step(nnx.merge(graphdef, state), h, site_key(key, idx)), None
    x, _ = jax.lax.scan(jax.checkpoint(body, policy=policy), x, (stacked, jnp.arange(i, j)))
    i = j
  return x


# --- decoder helpers: segment-id masks and the KV cache (shared by the causal-LM families) ----------

def segment_mask(attention_mask, cache=None):
  """Attention mask `[B, 1, L, S]` from segment ids (0 = padding): causal, same segment, not padding.

  Without a cache S = L and slots are `0..L-1`. With a cache (`{'mask': [B, S], 'index'}`) the L new
  tokens occupy slots `index..index+L-1`; their segment ids are written into the cache's mask.
  Returns (mask, (query slots [L], key slots [S]), index, key segment ids [B, S]).
  """
  l = attention_mask.shape[1]
  if cache is None:
    index = 0
    kv_seg = attention_mask
  else:
    index = cache["index"]
    kv_seg = jax.lax.dynamic_update_slice(cache["mask"], attention_mask.astype(cache["mask"].dtype),
                                          (0, index))
  q_slot = index + jnp.arange(l)
  k_slot = jnp.arange(kv_seg.shape[1])
  causal = k_slot[None, :] <= q_slot[:, None]
  same = (attention_mask[:, :, None] == kv_seg[:, None, :]) & (kv_seg[:, None, :] > 0)
  return (causal[None] & same)[:, None], (q_slot, k_slot), index, kv_seg


def write_kv_cache(k, v, cache):
  """This step's k, v `[B, L, Hkv, D]` written at slot `index` of a layer's cache `(ck, cv, index)`
  (ck, cv `[B, S, Hkv, D]`, cast to their dtype). Returns (k, v) `[B, S, Hkv, D]` (the keys/values
  to attend over, also the layer's new cache entries); without a cache (None) k, v as given."""
  if cache is None:
    return k, v
  ck, cv, index = cache
  return (jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, index, 0, 0)),
          jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, index, 0, 0)))


def init_kv_cache(num_layers, batch, max_len, num_kv_heads, head_dim, dtype=jnp.float32):
  """An empty KV cache: k, v `[layers, B, S, Hkv, D]`, segment ids `mask [B, S]` (0), `index` 0."""
  shape = (num_layers, batch, max_len, num_kv_heads, head_dim)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
          "mask": jnp.zeros((batch, max_len), jnp.int32), "index": jnp.asarray(0, jnp.int32)}



class CausalLM(nnx.Module):
  """A decoder (`self.model`: `(input_ids, attention_mask, position_ids=, key=, cache=) -> h` or
  `(h, new cache)`, with `embed_tokens`) and its output projection (`self.lm_head`, or the tied input
  embedding when it is None). Families subclass it and set `config`, `model` and `lm_head`;
  `logits_of` is the hook for what follows the projection (Gemma's final soft-capping)."""

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32):
    """An empty KV cache for `batch` sequences of up to `max_len` tokens (every layer, every slot)."""
    c = self.config
    return init_kv_cache(c.num_hidden_layers, batch, max_len, c.num_key_value_heads, c.head_dim, dtype)

  def logits_of(self, h, key=None):
    """`[..., hidden] -> [..., vocab]`: the projection (or the tied embedding)."""
    if self.lm_head is None:
      return self.model.embed_tokens.attend(h)
    return self.lm_head(h, key=site_key(key, 1))

  def __call__(self, input_ids, attention_mask, *, position_ids=None, key=None, cache=None,
               positions=None):
    """input_ids, attention_mask (segment ids) `[B, L]` int32 -> logits `[B, L, vocab]` float32;
    with `cache`, -> (logits, updated cache); with `positions [B, P]`, the logits at those positions
    only, `[B, P, vocab]`."""
    out = self.model(input_ids, attention_mask, position_ids=position_ids, key=site_key(key, 0),
                     cache=cache)
    h, new = out if cache is not None else (out, None)
    logits = self.logits_of(at_positions(h, positions), key)
    return logits if cache is None else (logits, new)

def at_positions(h, positions):
  """`h [B, L, D]` at `positions [B, P]` (int) -> `[B, P, D]`: a causal LM's head is then computed
  only where a loss or a score reads it (vocabularies of 50k-260k make the full `[B, L, V]` costly)."""
  if positions is None:
    return h
  return jnp.take_along_axis(h, positions[..., None].astype(jnp.int32), axis=1)

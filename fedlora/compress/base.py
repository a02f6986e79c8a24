"""Shared pieces of the uplink compressors: the interface, adapter-tree mapping, masks and bit counts.

LoRA layout (fixed across fedlora): an adapted layer is a dict node holding `lora_a: [d_in, r]` and
`lora_b: [r, d_out]`; rank component i is the pair `(lora_a[:, i], lora_b[i, :])`. Every other array
leaf of a trainable tree (e.g. the head's `kernel [d, C]`, `bias [C]`) is a *dense* leaf, always sent
uncompressed at `bits_per_value` bits per entry.

Interface (optax-like, one instance per run, state per client):
  `init(trainable) -> state`
  `update(state, delta, ratio, key, ref) -> CompressOut(delta, bits, state, kept, profile)`
  `payload(trainable) -> (c0, c1)`: the compressor's own payload model, bits(ρ) = c0 + c1·ρ (static
      Python floats), exact on the ratio grid named in each compressor's docstring; TSFA plans with it.
`ratio` is a traced float32 scalar in (0, 1] that may differ per client under `jax.vmap`, so every
compressor works with masks over fixed shapes; no shape ever depends on `ratio`.

`CompressOut.profile: [r]` is the importance profile the server plans with (TSFA's sparsification
error E(ρ), docs/method.md): the sorted, normalised mass of the SAME scores the compressor selects
by, pooled over adapters, such that `1 − kept_mass(m/r, profile)` is the fraction of that mass the
compressor drops at ρ = m/r. Each rule reports per adapter an unnormalised `[r]` vector of masses in
the order it keeps them (rank compressors: s_i² sorted; element compressors: the sorted squared
entries summed in r equal-count bins); `compress_by_parts` sums them over adapters and normalises.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

PyTree = Any

ADAPTER_KEYS = ("lora_a", "lora_b")


class CompressOut(NamedTuple):
  delta: PyTree         # what the server receives: structure/shapes of the input delta, dropped entries 0
  bits: jax.Array       # float32 scalar: payload of this upload in bits (values + indices/masks/seeds)
  state: Any            # new per-client state (error-feedback residual tree, or ())
  kept: PyTree | None   # diagnostics: per-adapter kept-rank masks `[r]` (bool) at adapter nodes, or None
  profile: jax.Array | None = None  # [r] planning profile (module docstring); zeros = nothing to drop


class Compressor(NamedTuple):
  init: Callable[[PyTree], Any]
  update: Callable[..., CompressOut]  # (state, delta, ratio, key, ref) -> CompressOut
  payload: Callable[[PyTree], tuple] | None = None  # trainable -> (c0, c1): bits(ρ) = c0 + c1·ρ


# ----------------------------------------------------------------------------------------------------
# Adapter-tree mapping
# ----------------------------------------------------------------------------------------------------

def is_adapter(node: Any) -> bool:
  """True for a dict-like node holding both `lora_a` and `lora_b`."""
  return hasattr(node, "keys") and all(k in node for k in ADAPTER_KEYS)


def path_str(path: Sequence) -> str:
  """'/'-joined key path, e.g. `encoder/layers/0/attention/query`."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _flatten(tree: PyTree, *rest: PyTree):
  """Flatten with adapter nodes as leaves: ([(path, node)], treedef, [rest nodes per leaf])."""
  with_path, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_adapter)
  rest_leaves = [treedef.flatten_up_to(r) for r in rest]
  per_leaf = [tuple(rl[i] for rl in rest_leaves) for i in range(len(with_path))]
  return with_path, treedef, per_leaf


def _replace_ab(node, a, b):
  new = dict(node)
  new["lora_a"], new["lora_b"] = a, b
  return new if type(node) is dict else type(node)(new)


def _pair(node):
  return node["lora_a"], node["lora_b"]


def map_parts(adapter_fn: Callable, dense_fn: Callable, tree: PyTree, *rest: PyTree) -> list:
  """Apply `adapter_fn(path, a, b, *rest_pairs)` to each adapter and `dense_fn(path, x, *rest_x)` to
  each other leaf, in flattening order. Returns the list of results (any Python objects) plus the
  treedef as `(results, treedef, is_adapter_flags)`; used to build compressors with side outputs.

  `rest` trees must have `tree`'s structure down to the adapter nodes (delta / ref / residual trees).
  Extra keys of an adapter node (e.g. a `kernel` beside `lora_a/lora_b`) are left alone here.
  """
  with_path, treedef, per_leaf = _flatten(tree, *rest)
  results, flags = [], []
  for (path, node), others in zip(with_path, per_leaf):
    if is_adapter(node):
      a, b = _pair(node)
      results.append(adapter_fn(path, a, b, *(_pair(o) for o in others)))
      flags.append(True)
    else:
      results.append(dense_fn(path, node, *others))
      flags.append(False)
  return results, treedef, flags


def map_adapters(fn: Callable, tree: PyTree, *rest: PyTree) -> PyTree:
  """New tree with every adapter `(a, b) <- fn(a, b, *rest_pairs)`; other leaves unchanged.

  fn gets `a: [d_in, r]`, `b: [r, d_out]` and, for each tree in `rest`, that tree's `(a, b)` pair at the
  same position; it returns the new `(a, b)`. Structure is static, so this is jit/vmap friendly.
  """
  with_path, treedef, per_leaf = _flatten(tree, *rest)
  out = []
  for (_, node), others in zip(with_path, per_leaf):
    if is_adapter(node):
      a, b = fn(*_pair(node), *(_pair(o) for o in others))
      out.append(_replace_ab(node, a, b))
    else:
      out.append(node)
  return treedef.unflatten(out)


def map_dense(fn: Callable, tree: PyTree, *rest: PyTree) -> PyTree:
  """New tree with every non-adapter leaf `x <- fn(x, *rest_x)`; adapter nodes unchanged."""
  with_path, treedef, per_leaf = _flatten(tree, *rest)
  out = [node if is_adapter(node) else fn(node, *others)
         for (_, node), others in zip(with_path, per_leaf)]
  return treedef.unflatten(out)


def adapter_pairs(tree: PyTree) -> list[tuple[str, jax.Array, jax.Array]]:
  """`[(path, lora_a, lora_b)]` of every adapter, in flattening order."""
  with_path, _, _ = _flatten(tree)
  return [(path_str(p), *_pair(n)) for p, n in with_path if is_adapter(n)]


def dense_leaves(tree: PyTree) -> list[tuple[str, jax.Array]]:
  """`[(path, leaf)]` of every non-adapter leaf, in flattening order."""
  with_path, _, _ = _flatten(tree)
  return [(path_str(p), n) for p, n in with_path if not is_adapter(n)]


# ----------------------------------------------------------------------------------------------------
# Masks over fixed shapes with a traced count
# ----------------------------------------------------------------------------------------------------

_F32_EPS = float(jnp.finfo(jnp.float32).eps)


def num_keep(ratio: jax.Array, n: int) -> jax.Array:
  """`clip(ceil(ratio·n), 1, n)` as int32, for a traced `ratio`.

  The product is taken in float32 and shrunk by 4 ulps before the ceil, so that a decimal ratio whose
  exact product is an integer (ρ=0.3, n=10 -> 3) is not bumped up by float32 rounding.
  """
  x = jnp.asarray(ratio, jnp.float32) * jnp.float32(n)
  m = jnp.ceil(x - 4.0 * _F32_EPS * jnp.abs(x))
  return jnp.clip(m, 1, n).astype(jnp.int32)


def top_mask(scores: jax.Array, k: jax.Array) -> jax.Array:
  """Bool mask (shape of `scores`) of the `k` largest entries; ties go to the lower flat index.

  `k` may be traced: one stable argsort of `-scores` and a scatter, no k-dependent shapes.
  """
  flat = scores.reshape(-1)
  n = flat.shape[0]
  order = jnp.argsort(-flat, stable=True)
  mask = jnp.zeros((n,), bool).at[order].set(jnp.arange(n) < k)
  return mask.reshape(scores.shape)


# ----------------------------------------------------------------------------------------------------
# Values on the wire
# ----------------------------------------------------------------------------------------------------

VALUE_BITS = (16, 32)


def quantize(x: jax.Array, bits_per_value: int, simulate: bool) -> jax.Array:
  """Round `x` to what `bits_per_value` bits carry: bf16 round-to-nearest for 16, identity for 32."""
  if simulate and bits_per_value == 16:
    return x.astype(jnp.bfloat16).astype(x.dtype)
  return x


def index_bits(n: int) -> int:
  """Bits of one flat index into n entries: ceil(log2 n) (0 for n = 1)."""
  return int(math.ceil(math.log2(n))) if n > 1 else 0


def numel(x) -> int:
  return int(math.prod(x.shape))


def dense_bits(tree: PyTree, bits_per_value: int) -> float:
  """Bits of sending every leaf of `tree` dense (static Python number)."""
  return float(sum(numel(x) for x in jax.tree_util.tree_leaves(tree)) * bits_per_value)


# ----------------------------------------------------------------------------------------------------
# Building a compressor from a per-leaf rule (+ optional error feedback)
# ----------------------------------------------------------------------------------------------------

def build_compressor(compress_tree: Callable, error_feedback: bool,
                     payload: Callable | None = None) -> Compressor:
  """Wrap `compress_tree(target, ratio, key, ref, delta) -> (sent, bits, kept, profile)` as a
  Compressor with payload model `payload(trainable) -> (c0, c1)`.

  Error feedback (EF): the state is a residual tree (zeros at init, shaped like the trainable tree);
  `target = delta + residual`, `sent = C(target)`, `new residual = target - sent`, so that
  `sent + new residual == delta + old residual` exactly. Without EF the state is `()`.
  `delta` (the raw update, without residual) is passed along for rules that look at the local model
  `ref + delta` (SOFT's score_on='updated', the SVD baseline).
  """
  def init(trainable: PyTree):
    if error_feedback:
      return jax.tree_util.tree_map(jnp.zeros_like, trainable)
    return ()

  def update(state, delta: PyTree, ratio, key=None, ref: PyTree = None) -> CompressOut:
    ratio = jnp.asarray(ratio, jnp.float32)
    target = jax.tree_util.tree_map(jnp.add, delta, state) if error_feedback else delta
    sent, bits, kept, profile = compress_tree(target, ratio, key, ref, delta)
    new_state = jax.tree_util.tree_map(jnp.subtract, target, sent) if error_feedback else ()
    return CompressOut(sent, jnp.asarray(bits, jnp.float32), new_state, kept, profile)

  return Compressor(init, update, payload)


def compress_by_parts(target: PyTree, adapter_rule: Callable, dense_rule: Callable, *rest: PyTree):
  """Run per-leaf rules and reassemble. An adapter rule gets `(path, a, b, *rest_pairs)` and returns
  `((a, b), bits, kept_mask_or_None, mass [r])` (`mass`: unnormalised importance masses in keep
  order, module docstring); a dense rule gets `(path, x, *rest_x)` and returns `(x, bits, None)`.
  Returns `(sent_tree, total_bits, kept_tree, profile [r])`: `kept_tree` has the adapter rule's
  third output at adapter nodes (None elsewhere), `profile` the masses summed over adapters and
  normalised (`pool_profile`).
  """
  results, treedef, flags = map_parts(adapter_rule, dense_rule, target, *rest)
  with_path, _, _ = _flatten(target)
  sent, kept, masses, total = [], [], [], jnp.float32(0.0)
  for (_, node), res, is_ad in zip(with_path, results, flags):
    if is_ad:
      new, bits, k, mass = res
      masses.append(mass)
    else:
      new, bits, k = res
    sent.append(_replace_ab(node, *new) if is_ad else new)
    kept.append(k)
    total = total + jnp.asarray(bits, jnp.float32)
  kept_tree = None if all(k is None for k in kept) else treedef.unflatten(kept)
  return treedef.unflatten(sent), total, kept_tree, pool_profile(masses)


def kept_mass(rho: jax.Array, profile: jax.Array) -> jax.Array:
  """Kept importance mass at ratio ρ of a planning profile (TSFA's sparsification error is
  Σp − kept_mass, fedlora/tsfa/bound.py): cum[⌊x⌋] + (x − ⌊x⌋)·p_(⌊x⌋+1), x = ρ·r clipped to [0, r].

  `rho [...]`, `profile [..., r]` (sorted descending, normalised) -> `[...]`.
  """
  p = jnp.asarray(profile, jnp.float32)
  r = p.shape[-1]
  cum = jnp.concatenate([jnp.zeros(p.shape[:-1] + (1,), p.dtype), jnp.cumsum(p, axis=-1)], axis=-1)
  x = jnp.clip(jnp.asarray(rho, jnp.float32) * r, 0.0, float(r))
  j = jnp.clip(jnp.floor(x), 0, r - 1).astype(jnp.int32)
  take = lambda a, i: jnp.take_along_axis(a, jnp.broadcast_to(i, a.shape[:-1])[..., None], -1)[..., 0]
  return take(cum, j) + (x - j) * take(p, j)


def pool_profile(masses: Sequence[jax.Array]) -> jax.Array:
  """`[r]` normalised sum of per-adapter mass vectors `[r]` (each already in keep order).

  Adapters of a smaller rank r_l < R = max rank are first resampled onto R: their interpolated kept
  mass K_l(ρ) (`kept_mass`) is evaluated at ρ = j/R and differenced, so the pooled
  profile's kept mass at ρ is Σ_l K_l(ρ) for every adapter's own grid. All-zero masses give all
  zeros (nothing to drop: E(ρ) = 0). No adapter: a `[1]` zero profile.
  """
  if not masses:
    return jnp.zeros((1,), jnp.float32)
  big = max(int(m.shape[-1]) for m in masses)
  grid = jnp.arange(big + 1, dtype=jnp.float32) / big

  def on_grid(m):
    m = jnp.asarray(m, jnp.float32)
    if m.shape[-1] == big:
      return m
    return jnp.diff(kept_mass(grid, jnp.broadcast_to(m, (big + 1,) + m.shape)))
  e = sum(on_grid(m) for m in masses)
  tot = e.sum()
  return jnp.where(tot > 0, e / jnp.where(tot > 0, tot, 1.0), 0.0)


def sorted_mass(s: jax.Array) -> jax.Array:
  """`[r]` squared scores `s²` sorted descending: the keep order of a top-m-by-score rule."""
  return jnp.sort(jnp.square(jnp.asarray(s, jnp.float32)))[::-1]


def binned_mass(x: jax.Array, r: int) -> jax.Array:
  """`[r]` the squared entries of `x` sorted descending, summed in r equal-count bins.

  Keeping the top k = m·n/r entries by magnitude keeps exactly the first m bins (element-wise top-k
  at ρ = m/r). Requires numel(x) divisible by r (true for `lora_a [d_in, r]`, `lora_b [r, d_out]`).
  """
  n = numel(x)
  if n % r:
    raise ValueError(f"binned_mass: {n} entries do not split into r={r} equal bins")
  e = jnp.sort(jnp.square(jnp.asarray(x, jnp.float32)).reshape(-1))[::-1]
  return e.reshape(r, n // r).sum(-1)


def adapter_rank(tree: PyTree) -> int:
  """The rank r of the tree's first adapter (1 when there is none)."""
  pairs = adapter_pairs(tree)
  return int(pairs[0][1].shape[1]) if pairs else 1


def dense_bits_of(tree: PyTree, bits_per_value: int) -> float:
  """Bits of the non-adapter leaves sent dense (static)."""
  return float(sum(numel(x) for _, x in dense_leaves(tree)) * bits_per_value)


def dense_rule(bits_per_value: int, simulate_quantization: bool) -> Callable:
  """Dense leaves: sent in full, `numel · q` bits."""
  def rule(path, x, *rest):
    return quantize(x, bits_per_value, simulate_quantization), float(numel(x) * bits_per_value), None
  return rule


def require_ref(ref: PyTree, who: str) -> None:
  if ref is None:
    raise ValueError(f"{who} needs ref_tree (the round's global trainable tree); got None")

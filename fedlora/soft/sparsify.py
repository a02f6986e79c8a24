"""SOFT compressor: keep the m = ceil(ρ·r) most important rank components of each adapter's update.

Per adapter (`da = Δlora_a: [d_in, r]`, `db = Δlora_b: [r, d_out]`):
  1. scores `s_i = ‖x_a[:, i]‖·‖x_b[i, :]‖` where (x_a, x_b) is the update itself (`score_on='delta'`,
     default, ours) or the client's updated factors `ref + delta` (`score_on='updated'`);
  2. `m = clip(ceil(ρ·r), 1, r)` (traced), mask = top-m scores, ties to the lower index;
  3. send columns `da[:, mask]` and rows `db[mask, :]` (others exactly 0) plus an r-bit mask.
Payload per adapter: `m·(d_in + d_out)·q + r` bits; non-adapter leaves dense: `numel·q`.
No SVD and no `a @ b` product anywhere: O((d_in + d_out)·r + r log r) per adapter.

Config keys (section `compress`, defaults in code):
  bits_per_value        = 32        # q: 32 or 16
  simulate_quantization = True      # q = 16: sent values are rounded through bfloat16
  error_feedback        = False     # ours, off by default: the dropped part is carried to the next upload
  score_on              = 'delta'   # 'delta' | 'updated' (score ref + delta; needs ref_tree)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedlora.compress.base import (Compressor, build_compressor, compress_by_parts, dense_rule,
                                   num_keep, quantize, require_ref, top_mask)
from fedlora.soft.importance import rank_scores

SCORE_ON = ("delta", "updated")


def soft_mask(a: jax.Array, b: jax.Array, ratio: jax.Array) -> jax.Array:
  """Bool `[r]`: the top `clip(ceil(ρ·r), 1, r)` components of `(a [d_in, r], b [r, d_out])` by s_i."""
  r = a.shape[1]
  return top_mask(rank_scores(a, b), num_keep(ratio, r))


def sparsify_adapter(da: jax.Array, db: jax.Array, ratio: jax.Array,
                     score_a: jax.Array | None = None, score_b: jax.Array | None = None):
  """`(da_sent [d_in, r], db_sent [r, d_out], mask [r])`: kept columns/rows of the update, rest 0.

  Scores are computed on `(score_a, score_b)` when given (e.g. the updated factors), else on (da, db).
  """
  sa = da if score_a is None else score_a
  sb = db if score_b is None else score_b
  mask = soft_mask(sa, sb, ratio)
  return jnp.where(mask[None, :], da, 0.0), jnp.where(mask[:, None], db, 0.0), mask


def adapter_bits(d_in: int, d_out: int, r: int, m: jax.Array, bits_per_value: int) -> jax.Array:
  """SOFT payload of one adapter: `m·(d_in + d_out)·q + r` (float32)."""
  return m.astype(jnp.float32) * float((d_in + d_out) * bits_per_value) + float(r)


def soft_compressor(bits_per_value: int = 32, error_feedback: bool = False, score_on: str = "delta",
                    simulate_quantization: bool = True) -> Compressor:
  """The SOFT uplink compressor (see module docstring). `kept`: bool mask `[r]` at adapter nodes."""
  if score_on not in SCORE_ON:
    raise ValueError(f"score_on={score_on!r}: allowed values are {SCORE_ON}")
  q = bits_per_value

  def compress_tree(target, ratio, key, ref, delta):
    def adapter_rule(path, da, db, *rest):
      if score_on == "updated":
        (a0, b0), (ua, ub) = rest
        sa, sb = a0 + ua, b0 + ub      # the client's local factors ref + delta
      else:
        sa, sb = da, db
      d_in, r = da.shape
      d_out = db.shape[1]
      mask = soft_mask(sa, sb, ratio)
      m = mask.sum()
      sa_, sb_ = quantize(da, q, simulate_quantization), quantize(db, q, simulate_quantization)
      sent = (jnp.where(mask[None, :], sa_, 0.0), jnp.where(mask[:, None], sb_, 0.0))
      return sent, adapter_bits(d_in, d_out, r, m, q), mask

    if score_on == "updated":
      require_ref(ref, "soft compressor with score_on='updated'")
      rest = (ref, delta)
    else:
      rest = ()
    dense = dense_rule(q, simulate_quantization)
    return compress_by_parts(target, adapter_rule, lambda p, x, *r: dense(p, x), *rest)

  return build_compressor(compress_tree, error_feedback)

"""SOFT compressor: keep the m = ceil(ρ·r) most important rank components of each adapter's update.

Per adapter (`da = Δlora_a: [d_in, r]`, `db = Δlora_b: [r, d_out]`, round's global `(a0, b0)`):
  1. per-rank scores s_i, chosen by `score_on` (all ours; the paper says "per-rank, norm-based"):
       'delta'   : ‖da[:, i]‖·‖db[i, :]‖, the update's own factors;
       'updated' : ‖(a0+da)[:, i]‖·‖(b0+db)[i, :]‖, the client's updated factors (the paper's
                   ‖b_i‖·‖a_i‖ on the local model; with near-orthogonal factors these are the
                   singular values of the local product);
       'product' : ‖(a0+da)_i ⊗ (b0+db)_i − a0_i ⊗ b0_i‖_F, the update's contribution to the
                   product per component (`importance.product_scores`: Gram/dot-product formula,
                   no d_in×d_out matrix);
     with error feedback, 'delta' and 'product' score the update plus the carried residual (what is
     sent), 'updated' scores ref + the raw update (the local model);
  2. `m = clip(ceil(ρ·r), 1, r)` (traced), mask = top-m scores, ties to the lower index;
  3. send columns `da[:, mask]` and rows `db[mask, :]` (others exactly 0) plus an r-bit mask.
Payload per adapter: `m·(d_in + d_out)·q + r` bits; non-adapter leaves dense: `numel·q`.
Payload model: c1 = r·Σ(d_in + d_out)·q, c0 = r·#adapters + dense bits; exact where ρ·r is an integer.
Profile: the sorted s_i² of the scores above, pooled over adapters.
No SVD and no `a @ b` product anywhere: O((d_in + d_out)·r + r log r) per adapter.

Config keys: `Options` below (section `compress`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedlora.compress.base import (Compressor, adapter_pairs, build_compressor, compress_by_parts,
                                   dense_bits_of, dense_rule, num_keep, quantize, require_ref,
                                   sorted_mass, top_mask)
from fedlora.soft.importance import product_scores, rank_scores

SCORE_ON = ("delta", "updated", "product")


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
        s = rank_scores(a0 + ua, b0 + ub)      # the client's local factors ref + delta
      elif score_on == "product":
        (a0, b0), _ = rest
        s = product_scores(a0, b0, da, db)
      else:
        s = rank_scores(da, db)
      d_in, r = da.shape
      d_out = db.shape[1]
      mask = top_mask(s, num_keep(ratio, r))
      m = mask.sum()
      sa_, sb_ = quantize(da, q, simulate_quantization), quantize(db, q, simulate_quantization)
      sent = (jnp.where(mask[None, :], sa_, 0.0), jnp.where(mask[:, None], sb_, 0.0))
      return sent, adapter_bits(d_in, d_out, r, m, q), mask, sorted_mass(s)

    if score_on in ("updated", "product"):
      require_ref(ref, f"soft compressor with score_on={score_on!r}")
      rest = (ref, delta)
    else:
      rest = ()
    dense = dense_rule(q, simulate_quantization)
    return compress_by_parts(target, adapter_rule, lambda p, x, *r: dense(p, x), *rest)

  def payload(trainable):
    pairs = adapter_pairs(trainable)
    c1 = float(sum(a.shape[1] * (a.shape[0] + b.shape[1]) for _, a, b in pairs) * q)
    c0 = float(sum(a.shape[1] for _, a, b in pairs))
    return dense_bits_of(trainable, q) + c0, c1

  return build_compressor(compress_tree, error_feedback, payload)

"""'topk': unstructured magnitude top-k of `lora_a` and `lora_b` separately.

Per adapter matrix X of n entries: k = clip(ceil(ρ·n), 1, n) (traced), keep the k entries of largest
|X| (ties to the lower flat index), the rest exactly 0. Non-adapter leaves dense.

Bits per matrix (ours): values k·q plus the index coding chosen by `index_coding`:
  'indices': k·ceil(log2 n)  (explicit flat indices)
  'bitmap' : n               (one bit per entry)
  'min'    : min(k·ceil(log2 n), n)   (default: the sender picks the cheaper; the 1-bit flag saying which
                                       is ignored)
so the default is `bits = k·q + min(k·ceil(log2 n), n)`. Dense leaves: numel·q.

Payload model (TSFA plans with it): per matrix c1 += n·q and
  'indices': c1 += n·ceil(log2 n);  'bitmap': c0 += n;  'min': the bitmap model (c0 += n), which is
  exact wherever the bitmap is the cheaper coding, i.e. for ρ ≥ 1/ceil(log2 n), and an over-estimate
  below (the realised payload is then smaller than planned).
Exact on the grid where ρ·n is an integer for every matrix (within the 'min' range above).
Profile: per matrix the sorted squared entries in r equal-count bins (`binned_mass`): top-k at ρ = m/r
keeps exactly the first m bins, so E(m/r) is the fraction of squared magnitude top-k drops.

Config keys: `Options` below (section `compress`).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from fedlora.compress import COMPRESSORS
from fedlora.compress.base import (Compressor, adapter_pairs, binned_mass, build_compressor,
                                   compress_by_parts, dense_bits_of, dense_rule, index_bits,
                                   num_keep, numel, quantize, top_mask)
from fedlora.section import Section

INDEX_CODINGS = ("min", "indices", "bitmap")


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'topk' (section `compress`).

  index_coding: 'min' (the cheaper of both) | 'indices' | 'bitmap'
  """
  SECTION = "compress"
  index_coding: str = "min"

  def check(self) -> None:
    self.need(self.index_coding in INDEX_CODINGS, "index_coding", f"one of {INDEX_CODINGS}")


def topk_index_bits(k, n: int, index_coding: str = "min"):
  """Index payload of k kept entries out of n (k may be traced)."""
  k = jnp.asarray(k, jnp.float32)
  idx, bitmap = k * float(index_bits(n)), jnp.float32(n)
  if index_coding == "indices":
    return idx
  if index_coding == "bitmap":
    return bitmap
  return jnp.minimum(idx, bitmap)


def topk_matrix(x, ratio, bits_per_value: int = 32, index_coding: str = "min",
                simulate_quantization: bool = True):
  """`(x_sent, bits, k)` for one matrix: its k = ceil(ρ·numel) largest-magnitude entries."""
  n = numel(x)
  k = num_keep(ratio, n)
  mask = top_mask(jnp.abs(x), k)
  sent = jnp.where(mask, quantize(x, bits_per_value, simulate_quantization), 0.0)
  bits = k.astype(jnp.float32) * float(bits_per_value) + topk_index_bits(k, n, index_coding)
  return sent, bits, k


def topk_payload(trainable, bits_per_value: int = 32, index_coding: str = "min"):
  """`(c0, c1)` of the module docstring's payload model (static floats)."""
  c0, c1 = dense_bits_of(trainable, bits_per_value), 0.0
  for _, a, b in adapter_pairs(trainable):
    for x in (a, b):
      n = numel(x)
      c1 += n * bits_per_value
      if index_coding == "indices":
        c1 += n * index_bits(n)
      else:
        c0 += n
  return c0, c1


def topk_compressor(bits_per_value: int = 32, error_feedback: bool = False,
                    index_coding: str = "min", simulate_quantization: bool = True) -> Compressor:
  """Magnitude top-k per adapter matrix (see module docstring). `kept` is None."""
  if index_coding not in INDEX_CODINGS:
    raise ValueError(f"index_coding={index_coding!r}: allowed values are {INDEX_CODINGS}")

  def compress_tree(target, ratio, key, ref, delta):
    def adapter_rule(path, a, b):
      r = a.shape[1]
      sa, ba, _ = topk_matrix(a, ratio, bits_per_value, index_coding, simulate_quantization)
      sb, bb, _ = topk_matrix(b, ratio, bits_per_value, index_coding, simulate_quantization)
      return (sa, sb), ba + bb, None, binned_mass(a, r) + binned_mass(b, r)
    return compress_by_parts(target, adapter_rule, dense_rule(bits_per_value, simulate_quantization))

  return build_compressor(compress_tree, error_feedback,
                          lambda t: topk_payload(t, bits_per_value, index_coding))


@COMPRESSORS.register("topk", options=Options)
def build(section):
  return topk_compressor(section.bits_per_value, section.error_feedback, section.index_coding,
                         section.simulate_quantization)

"""Uplink compressors for client updates, found by name: `get_compressor(name, section) -> Compressor`.

A compressor is ONE file that registers `build(section) -> Compressor` with `COMPRESSORS`: its own
config keys are an options section beside it (they live flat in the `compress` section), and its
docstring gives the rule, payload bits, payload model and importance profile. Built-in:

| name  | file                      | keys of its own (besides the common ones of `CompressConfig`) |
|-------|---------------------------|---------------------------------------------------------------|
| none  | fedlora/compress/dense.py | -                                                             |
| soft  | fedlora/compress/soft.py  | score_on ('delta' | 'updated' | 'product')                     |
| topk  | fedlora/compress/topk.py  | index_coding ('min' | 'indices' | 'bitmap')                     |
| randk | fedlora/compress/randk.py | unbiased (bool), seed_bits (int >= 0)                          |
| svd   | fedlora/compress/svd.py   | rcond (float in [0, 1))                                        |

A method names its compressor (fedlora/methods/); the common keys (`bits_per_value`,
`simulate_quantization`, `error_feedback`, `downlink_bits_per_value`) are `CompressConfig`'s.
"""
from __future__ import annotations

import dataclasses

from fedlora.compress.base import (VALUE_BITS, CompressOut, Compressor, adapter_pairs, dense_leaves,
                                   is_adapter, map_adapters, map_dense, num_keep, top_mask)
from fedlora.registry import Registry
from fedlora.section import Section, as_section, is_int

COMPRESSORS = Registry("compressor", "fedlora.compress", "compress")


@dataclasses.dataclass(frozen=True)
class CompressConfig(Section):
  """Section `compress` (plus the keys each compressor declares).

  bits_per_value:          bits per uploaded value (32 = fp32, 16 = bf16 accounting)
  error_feedback:          carry the dropped part of an update into the next upload
  simulate_quantization:   with 16 bits, round sent values through bfloat16
  downlink_bits_per_value: bits per broadcast value on the downlink (0 = bits_per_value; 16 | 32)
  """
  SECTION = "compress"
  COMPONENTS = staticmethod(lambda: COMPRESSORS)
  bits_per_value: int = 32
  error_feedback: bool = False
  simulate_quantization: bool = True
  downlink_bits_per_value: int = 0

  def check(self) -> None:
    self.need(is_int(self.bits_per_value) and self.bits_per_value in VALUE_BITS, "bits_per_value",
              f"one of {VALUE_BITS}")
    for k in ("error_feedback", "simulate_quantization"):
      self.need(isinstance(getattr(self, k), bool), k, "True or False")
    self.need(is_int(self.downlink_bits_per_value) and self.downlink_bits_per_value in (0, 16, 32),
              "downlink_bits_per_value", "0 (= bits_per_value), 16 or 32")


def get_compressor(name: str, section=None) -> Compressor:
  """The compressor called `name`, configured from the `compress` section (a CompressConfig, a
  mapping of its keys, or None: the defaults)."""
  entry = COMPRESSORS.get(name)
  return entry.obj(as_section(CompressConfig, section))


def names() -> tuple:
  return COMPRESSORS.names()


__all__ = ["COMPRESSORS", "CompressConfig", "CompressOut", "Compressor", "adapter_pairs",
           "dense_leaves", "get_compressor", "is_adapter", "map_adapters", "map_dense", "names",
           "num_keep", "top_mask"]

"""Uplink compressors for client updates: `get_compressor(name, cfg) -> Compressor`.

Names: 'none' (ideal, dense), 'soft' (SOFT rank sparsification), 'topk' (magnitude top-k per
matrix), 'randk' (random-k per matrix), 'svd' (SVD-basis rank sparsification; the costly reference).

Config (an `ml_collections.ConfigDict` section, a dict, or None for all defaults). Keys a compressor
does not use are ignored (the section may be shared, e.g. with `ortho_weight`); the keys it uses are
validated here with a ValueError naming the bad value and what is allowed.

| key                   | default  | used by                    | allowed                         |
|-----------------------|----------|----------------------------|---------------------------------|
| bits_per_value        | 32       | all                        | 32, 16                          |
| simulate_quantization | True     | soft, topk, randk, svd     | bool (q=16: round via bfloat16) |
| error_feedback        | False    | soft, topk, randk, svd     | bool                            |
| score_on              | 'delta'  | soft                       | 'delta', 'updated'              |
| index_coding          | 'min'    | topk                       | 'min', 'indices', 'bitmap'      |
| unbiased              | False    | randk                      | bool                            |
| seed_bits             | 32       | randk                      | int >= 0                        |
| rcond                 | 1e-6     | svd                        | float in [0, 1)                 |

Bits per upload (q = bits_per_value; dense leaves always add numel·q):
  none : Σ numel·q
  soft : Σ_adapters m·(d_in + d_out)·q + r,               m = clip(ceil(ρ·r), 1, r)
  topk : Σ_matrices k·q + min(k·ceil(log2 n), n)          k = clip(ceil(ρ·n), 1, n) ('min' coding)
  randk: Σ_matrices k·q + seed_bits (indices from a shared seed are free)
  svd  : Σ_adapters m·(d_in + d_out)·q + r²·q + r
"""
from __future__ import annotations

from fedlora.compress.base import (CompressOut, Compressor, adapter_pairs, check_bits_per_value,
                                   check_bool, check_choice, cfg_get, dense_leaves, is_adapter,
                                   map_adapters, map_dense, num_keep, top_mask)

NAMES = ("none", "soft", "topk", "randk", "svd")

DEFAULTS = {
    "bits_per_value": 32,
    "simulate_quantization": True,
    "error_feedback": False,
    "score_on": "delta",
    "index_coding": "min",
    "unbiased": False,
    "seed_bits": 32,
    "rcond": 1e-6,
}


def get_compressor(name: str, cfg=None, section: str = "compress") -> Compressor:
  """The compressor called `name`, configured from `cfg` (see the module docstring for keys).

  `section` only names the config section in error messages.
  """
  if name not in NAMES:
    raise ValueError(f"{section}.name={name!r}: allowed values are {NAMES}")

  def get(key):
    return cfg_get(cfg, key, DEFAULTS[key])

  q = check_bits_per_value(section, get("bits_per_value"))
  if name == "none":
    from fedlora.compress.dense import dense_compressor
    return dense_compressor(q)

  sim = check_bool(section, "simulate_quantization", get("simulate_quantization"))
  ef = check_bool(section, "error_feedback", get("error_feedback"))
  if name == "soft":
    from fedlora.soft.sparsify import SCORE_ON, soft_compressor
    score_on = check_choice(section, "score_on", get("score_on"), SCORE_ON)
    return soft_compressor(q, ef, score_on, sim)
  if name == "topk":
    from fedlora.compress.topk import INDEX_CODINGS, topk_compressor
    coding = check_choice(section, "index_coding", get("index_coding"), INDEX_CODINGS)
    return topk_compressor(q, ef, coding, sim)
  if name == "randk":
    from fedlora.compress.randk import randk_compressor
    unbiased = check_bool(section, "unbiased", get("unbiased"))
    seed_bits = get("seed_bits")
    if isinstance(seed_bits, bool) or not isinstance(seed_bits, int) or seed_bits < 0:
      raise ValueError(f"{section}.seed_bits={seed_bits!r}: must be an integer >= 0")
    return randk_compressor(q, ef, unbiased, seed_bits, sim)
  # svd
  from fedlora.compress.svd import svd_compressor
  rcond = get("rcond")
  if isinstance(rcond, bool) or not isinstance(rcond, (int, float)) or not 0.0 <= rcond < 1.0:
    raise ValueError(f"{section}.rcond={rcond!r}: must be a float in [0, 1)")
  return svd_compressor(q, ef, float(rcond), sim)


__all__ = ["CompressOut", "Compressor", "DEFAULTS", "NAMES", "adapter_pairs", "dense_leaves",
           "get_compressor", "is_adapter", "map_adapters", "map_dense", "num_keep", "top_mask"]

"""'graded' (ours): the orthogonal init with column i scaled by `lora.init_decay`**i.

From B = 0, AdamW gives every b_i about the same update norm, so component i's share of the
product's change, ‖Δb_i‖·‖a_i‖, falls geometrically with i: a round's update concentrates in the
leading components, where SOFT scoring the product ('product') finds it and SVD truncation keeps it
too (benchmarks/bench_update_capture.py). SOFT at a fixed ratio then keeps picking the same leading
components, and the others are never trained (docs/method.md).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from fedlora.lora.inits import LORA_INITS
from fedlora.lora.inits import orthogonal
from fedlora.section import Section, is_num


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'graded' (section `lora`).

  init_decay: A's orthonormal column i scaled by init_decay**i, in (0, 1]
  """
  SECTION = "lora"
  init_decay: float = 0.5

  def check(self) -> None:
    self.need(is_num(self.init_decay) and 0.0 < self.init_decay <= 1.0, "init_decay",
              "a number in (0, 1] (lora.init='graded')")


@LORA_INITS.register("graded", options=Options)
def init(key, d_in: int, r: int, cfg):
  scale = jnp.asarray(cfg.init_decay, jnp.float32) ** jnp.arange(r, dtype=jnp.float32)
  return orthogonal.init(key, d_in, r) * scale[None, :]

"""'soft': SOFT's rank sparsification (fedlora/soft/sparsify.py) as a registered compressor."""
from __future__ import annotations

import dataclasses

from fedlora.compress import COMPRESSORS
from fedlora.section import Section
from fedlora.soft.sparsify import SCORE_ON, soft_compressor


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'soft' (section `compress`).

  score_on: the per-rank score's operands: the update 'delta', the 'updated' factors, or the update's
            contribution to the 'product' per component (docs/method.md)
  """
  SECTION = "compress"
  score_on: str = "delta"

  def check(self) -> None:
    self.need(self.score_on in SCORE_ON, "score_on", f"one of {SCORE_ON}")


@COMPRESSORS.register("soft", options=Options)
def build(section):
  return soft_compressor(section.bits_per_value, section.error_feedback, section.score_on,
                         section.simulate_quantization)

"""Config section `lora`: which layers get adapters, their rank, scale and initialisation."""
from __future__ import annotations

import dataclasses
import re

from fedlora.section import Section, is_int, is_num


def _inits():
  from fedlora.lora.inits import LORA_INITS
  return LORA_INITS


@dataclasses.dataclass(frozen=True)
class LoraConfig(Section):
  """Section `lora` (plus the keys of the LoRA inits, fedlora/lora/inits/).

  targets: regexes over '/'-joined Linear paths, e.g. 'attention/(query|value)'; () = the model
           family's default targets
  rank:    structural LoRA rank r
  alpha:   scaling numerator: W = W0 + (alpha / r) * A @ B
  dropout: dropout on the LoRA branch input, in [0, 1)
  init:    A's initialisation, a registered name (fedlora/lora/inits/: 'kaiming' (PEFT), 'orthogonal'
           (SOFT), 'gaussian', 'graded'); B = 0
  """
  SECTION = "lora"
  COMPONENTS = _inits
  targets: tuple = ("query", "value")
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  init: str = "kaiming"

  def check(self) -> None:
    self.need(is_int(self.rank) and self.rank >= 1, "rank", "an integer >= 1")
    self.need(is_num(self.alpha) and self.alpha > 0, "alpha", "a number > 0")
    self.need(is_num(self.dropout) and 0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)")
    _inits().get(self.init)
    targets = (self.targets,) if isinstance(self.targets, str) else self.targets
    self.need(isinstance(targets, tuple) and all(isinstance(t, str) for t in targets), "targets",
              "a tuple of regexes over layer paths (() = the model family's default)")
    for t in targets:
      try:
        re.compile(t)
      except re.error as e:
        self.need(False, "targets", f"regexes; {t!r} is not one ({e})")

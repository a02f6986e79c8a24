"""'adamw': optax.adamw at `optim.lr`."""
from __future__ import annotations

import dataclasses

import optax

from fedlora.optim import OPTIMIZERS
from fedlora.section import Section, is_num


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'adamw' (section `optim`).

  weight_decay: AdamW weight decay (>= 0)
  """
  SECTION = "optim"
  weight_decay: float = 0.0

  def check(self) -> None:
    self.need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", ">= 0")


@OPTIMIZERS.register("adamw", options=Options)
def build(section) -> optax.GradientTransformation:
  return optax.adamw(section.lr, weight_decay=section.weight_decay)

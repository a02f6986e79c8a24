"""'sgd': optax.sgd at `optim.lr`, with heavy-ball momentum when `optim.momentum` > 0."""
from __future__ import annotations

import dataclasses

import optax

from fedlora.optim import OPTIMIZERS
from fedlora.section import Section, is_num


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'sgd' (section `optim`).

  momentum: SGD momentum in [0, 1) (0 = none)
  """
  SECTION = "optim"
  momentum: float = 0.0

  def check(self) -> None:
    self.need(is_num(self.momentum) and 0 <= self.momentum < 1, "momentum", "a number in [0, 1)")


@OPTIMIZERS.register("sgd", options=Options)
def build(section) -> optax.GradientTransformation:
  return optax.sgd(section.lr, momentum=section.momentum or None)

"""'fedavgm': server momentum (Hsu et al. 2019, "Measuring the effects of non-identical data
distribution"): v <- β·v + Δ̄, global <- global + lr·v (heavy ball on the pseudo-gradient -Δ̄;
with `nesterov`, global <- global + lr·(β·v + Δ̄)). optax.trace; state: the momentum tree v.
"""
from __future__ import annotations

import dataclasses

import optax

from fedlora.section import Section, is_num
from fedlora.server.base import SERVERS


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'fedavgm' (section `server`).

  momentum: momentum β in [0, 1)
  nesterov: Nesterov momentum
  """
  SECTION = "server"
  momentum: float = 0.9
  nesterov: bool = False

  def check(self) -> None:
    self.need(is_num(self.momentum) and 0.0 <= self.momentum < 1.0, "momentum", "a number >= 0.0 and < 1.0")
    self.need(isinstance(self.nesterov, bool), "nesterov", "True or False")


@SERVERS.register("fedavgm", options=Options)
def build(section) -> optax.GradientTransformation:
  return optax.trace(decay=float(section.momentum), nesterov=section.nesterov)

"""Config section `tsfa`: the online stage (`tsfa.online`, `OnlineConfig` in online.py) and the
offline stage (`tsfa.offline`, below)."""
from __future__ import annotations

import dataclasses

from fedlora.section import Section, is_int, is_num, section_field
from fedlora.tsfa.online import OnlineConfig


@dataclasses.dataclass(frozen=True)
class OfflineConfig(Section):
  """Section `tsfa.offline` (fedlora/tsfa/pilot.py, offline.py).

  enabled:        run TSFA's offline stage: a pilot at r_max, then choose rank, V, ρ_min (needs
                  wireless.enabled)
  pilot_rounds:   rounds of the pilot run (dense uploads at rank r_max)
  r_max:          largest candidate rank; candidates 1, 2, 4, ..., r_max
  horizon_rounds: T of the V rule (0 = fed.rounds)
  violation_tol:  ε of the V rule: time-average latency within (1+ε)·τ̄ (> 0)
  max_drop:       ρ_min rule: largest importance fraction dropped at ρ_min, in [0, 1]
  """
  SECTION = "tsfa.offline"
  enabled: bool = False
  pilot_rounds: int = 3
  r_max: int = 32
  horizon_rounds: int = 0
  violation_tol: float = 0.05
  max_drop: float = 0.5

  def check(self) -> None:
    self.need(isinstance(self.enabled, bool), "enabled", "True or False")
    for key, lo in (("pilot_rounds", 1), ("r_max", 1), ("horizon_rounds", 0)):
      self.need(is_int(getattr(self, key)) and getattr(self, key) >= lo, key, f"an integer >= {lo}")
    self.need(is_num(self.violation_tol) and self.violation_tol > 0, "violation_tol", "> 0")
    self.need(is_num(self.max_drop) and 0 <= self.max_drop <= 1, "max_drop", "in [0, 1]")


@dataclasses.dataclass(frozen=True)
class TSFAConfig(Section):
  """Section `tsfa`: `online` (OnlineConfig) and `offline` (OfflineConfig)."""
  SECTION = "tsfa"
  online: OnlineConfig = section_field(OnlineConfig)
  offline: OfflineConfig = section_field(OfflineConfig)

"""Config section `wireless`: whether the uplink is simulated, its deadline, and its channel."""
from __future__ import annotations

import dataclasses

from fedlora.section import Section, is_num_or_inf, section_field
from fedlora.wireless.channel import ChannelConfig


@dataclasses.dataclass(frozen=True)
class WirelessConfig(Section):
  """Section `wireless` (the channel's constants: `ChannelConfig`, section `wireless.channel`).

  enabled:         simulate the uplink (channel, latency, deadline drops)
  deadline_factor: uploads later than factor * tsfa.online.latency_budget are dropped (> 0; inf = none)
  """
  SECTION = "wireless"
  enabled: bool = False
  deadline_factor: float = 2.0
  channel: ChannelConfig = section_field(ChannelConfig)

  def check(self) -> None:
    self.need(isinstance(self.enabled, bool), "enabled", "True or False")
    self.need(is_num_or_inf(self.deadline_factor) and self.deadline_factor > 0, "deadline_factor",
              "> 0 (math.inf = no deadline)")

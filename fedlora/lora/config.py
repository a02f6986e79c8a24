"""Config section `lora`: which layers get adapters, their rank, scale and initialisation."""
from __future__ import annotations

import dataclasses
import re

from fedlora.section import Section, is_int, is_num


RANKS_BY = ("client", "speed")  # how lora.client_ranks maps to clients (fedlora/lora/hetrank.py)


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
  client_ranks:    heterogeneous client ranks (fedlora/lora/hetrank.py): () = every client has `rank`;
                   else a tuple of integers in [1, rank], read as `client_ranks_by` says. `rank` is the
                   global adapter's rank and must be >= every client rank; a client of rank r_k trains
                   the first r_k rank components of the global factors (scale alpha / rank for all)
  client_ranks_by: how `client_ranks` maps to clients: 'client' = one rank per client (length
                   data.num_clients, client i gets client_ranks[i]); 'speed' = the ranks, sorted
                   ascending, go to equal-size quantiles of the clients' compute speed (the speeds
                   wireless.channel draws, also without the uplink): slowest quantile -> smallest rank
  """
  SECTION = "lora"
  COMPONENTS = _inits
  targets: tuple = ("query", "value")
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  init: str = "kaiming"
  client_ranks: tuple = ()
  client_ranks_by: str = "client"

  def check(self) -> None:
    self.need(is_int(self.rank) and self.rank >= 1, "rank", "an integer >= 1")
    self.need(is_num(self.alpha) and self.alpha > 0, "alpha", "a number > 0")
    self.need(is_num(self.dropout) and 0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)")
    _inits().get(self.init)
    self.need(self.client_ranks_by in RANKS_BY, "client_ranks_by", f"one of {RANKS_BY}")
    ranks = self.client_ranks
    self.need(isinstance(ranks, tuple) and all(is_int(r) for r in ranks), "client_ranks",
              "() (every client has lora.rank) or a tuple of integers")
    bad = [r for r in ranks if not 1 <= r <= self.rank] if is_int(self.rank) else []
    self.need(not bad, "client_ranks", f"ranks in [1, lora.rank={self.rank}] (the global adapter's "
              f"rank must be >= every client rank); {bad} are not")
    targets = (self.targets,) if isinstance(self.targets, str) else self.targets
    self.need(isinstance(targets, tuple) and all(isinstance(t, str) for t in targets), "targets",
              "a tuple of regexes over layer paths (() = the model family's default)")
    for t in targets:
      try:
        re.compile(t)
      except re.error as e:
        self.need(False, "targets", f"regexes; {t!r} is not one ({e})")

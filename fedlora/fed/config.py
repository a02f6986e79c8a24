"""Config sections `fed` (the rounds and how the clients run) and `client` (what a client adds to its
local steps: drift corrections, its lr schedule, a label-skew loss)."""
from __future__ import annotations

import dataclasses

from fedlora.section import Section, is_int, is_num

NONFINITE_MODES = ("stop", "skip")  # semantics: fedlora/fed/algorithm.py


@dataclasses.dataclass(frozen=True)
class FedConfig(Section):
  """Section `fed`.

  rounds:            communication rounds T
  clients_per_round: K clients sampled uniformly without replacement per round (<= data.num_clients)
  local_steps:       E optimizer steps per client per round
  batch_size:        examples per local step
  client_chunk:      C clients vmapped at once, the K sampled run as ceil(K/C) chunks (0 = automatic)
  memory_budget_gb:  budget the automatic chunk is sized for (0 = device limit or 70% of RAM)
  cpu_chunk_tokens:  CPU only: the automatic chunk also keeps C * batch * length <= this (0 = no cap)
  nonfinite:         NaN/Inf client loss or update: 'stop' the run | 'skip' the client (weight 0, counted)
  """
  SECTION = "fed"
  rounds: int = 20
  clients_per_round: int = 10
  local_steps: int = 5
  batch_size: int = 8
  client_chunk: int = 0
  memory_budget_gb: float = 0.0
  cpu_chunk_tokens: int = 1024
  nonfinite: str = "stop"

  def check(self) -> None:
    for k in ("rounds", "clients_per_round", "local_steps", "batch_size"):
      self.need(is_int(getattr(self, k)) and getattr(self, k) >= 1, k, "an integer >= 1")
    for k in ("client_chunk", "cpu_chunk_tokens"):
      self.need(is_int(getattr(self, k)) and getattr(self, k) >= 0, k, "an integer >= 0")
    self.need(is_num(self.memory_budget_gb) and self.memory_budget_gb >= 0, "memory_budget_gb",
              "a number of GiB >= 0 (0 = automatic)")
    self.need(self.nonfinite in NONFINITE_MODES, "nonfinite", f"one of {NONFINITE_MODES}")


def _drifts():
  from fedlora.drift import DRIFTS
  return DRIFTS


@dataclasses.dataclass(frozen=True)
class ClientConfig(Section):
  """Section `client` (plus the keys of the drift corrections, fedlora/drift/: `prox_mu`, `scaffold`).

  lr_schedule:       registered round schedule of the client lr (fedlora/schedules/): 'constant' |
                     'warmup' | 'cosine' (a traced scalar: no recompiles)
  lr_warmup_rounds:  linear warm-up rounds of the client lr
  lr_final_fraction: cosine: client lr at the last round, as a fraction of optim.lr
  logit_adjust:      label-skew loss (classification): 'none' | 'fedlc' (calibration) | 'fedrs'
                     (restricted softmax), fedlora/tasks/label_skew.py
  fedlc_tau:         FedLC calibration strength τ >= 0 (logits − τ·n_c^{-1/4})
  fedrs_alpha:       FedRS scale α in [0, 1] of the logits of classes a client does not hold
  """
  SECTION = "client"
  COMPONENTS = _drifts
  lr_schedule: str = "constant"
  lr_warmup_rounds: int = 0
  lr_final_fraction: float = 0.0
  logit_adjust: str = "none"
  fedlc_tau: float = 1.0
  fedrs_alpha: float = 0.5

  def check(self) -> None:
    from fedlora.schedules import check_schedule
    from fedlora.tasks.label_skew import KINDS
    check_schedule(self)
    self.need(self.logit_adjust in KINDS, "logit_adjust", f"one of {KINDS}")
    self.need(is_num(self.fedlc_tau) and self.fedlc_tau >= 0, "fedlc_tau", "a number >= 0")
    self.need(is_num(self.fedrs_alpha) and 0.0 <= self.fedrs_alpha <= 1.0, "fedrs_alpha",
              "a number in [0, 1]")

"""The server optimiser interface: an optax transformation applied to the aggregated update.

The server treats the (data-size weighted) mean client update as a pseudo-gradient (Reddi et al.
2021, "Adaptive Federated Optimization"): `grad = -mean_delta`, `direction, opt = tx.update(grad,
opt)`, `global <- global - lr_t * direction` with `lr_t = server.lr * schedule(t)` for the 1-based
round t. Each optimiser file provides `tx` (an `optax.GradientTransformation` WITHOUT the learning
rate, so the round-level schedule is applied here as a traced scalar); FedAvg is the identity, so
`fedavg` at lr 1 is plain FedAvg and at lr η is FedAvg with a server step size η.

A round in which no upload arrives (every weight 0) leaves the global model AND the optimiser state
unchanged (no server step; the schedule still follows the round number).

Config section `server`: `ServerConfig` below (keys shared by all optimisers; each optimiser file
declares its own).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedlora.aggregation import AGGREGATIONS
from fedlora.server.aggregate import MEANS, weighted_mean
from fedlora.registry import Registry
from fedlora.schedules import check_schedule, round_schedule
from fedlora.section import Section, as_section, is_num

SERVERS = Registry("server optimiser", "fedlora.server", "server.name")


@dataclasses.dataclass(frozen=True)
class ServerConfig(Section):
  """Section `server` (plus the keys each server optimiser declares, fedlora/server/<name>.py).

  name:              registered server optimiser: 'fedavg' | 'fedavgm' | 'fedadagrad' | 'fedadam' | 'fedyogi'
  lr:                server learning rate η (> 0; fedavg 1.0 = plain FedAvg; adaptive ones ~1e-2..1e-1)
  lr_schedule:       registered round schedule of the server lr (fedlora/schedules/): 'constant' |
                     'warmup' | 'cosine'
  lr_warmup_rounds:  linear warm-up rounds of the server lr
  lr_final_fraction: cosine: server lr at the last round, as a fraction of lr
  mean:              how the client updates are averaged (fedlora/server/aggregate.py): 'all' = FedAvg,
                     Σ w_c Δ_c / Σ w_c over the delivered uploads; 'senders' = per coordinate over
                     the uploads that carry it (a sparsified entry is not shrunk by the clients that
                     dropped it; ours)
  aggregation:       registered rule for the LoRA factors (fedlora/aggregation/): 'fedavg' (`mean` of
                     ΔA and of ΔB) | 'hetlora' (per rank component over the clients holding it) |
                     'flora' (stacking, merged into the frozen base; needs name='fedavg')
  """
  SECTION = "server"
  COMPONENTS = staticmethod(lambda: SERVERS)
  name: str = "fedavg"
  lr: float = 1.0
  lr_schedule: str = "constant"
  lr_warmup_rounds: int = 0
  lr_final_fraction: float = 0.0
  mean: str = "all"
  aggregation: str = "fedavg"

  def check(self) -> None:
    SERVERS.get(self.name)
    self.need(is_num(self.lr) and self.lr > 0, "lr", "a number > 0")
    check_schedule(self)
    self.need(self.mean in MEANS, "mean", f"one of {tuple(MEANS)}")
    rule = AGGREGATIONS.get(self.aggregation).obj
    if rule.requires is not None:
      rule.requires(self)


class ServerOptimizer(NamedTuple):
  init: Callable    # (trainable) -> opt state (a PyTree of arrays; part of the run state/checkpoint)
  update: Callable  # (opt_state, global, mean_delta, t, active) -> (new global, new opt_state)
  lr: Callable      # t -> float32 learning rate of round t
  mean: Callable = weighted_mean  # (deltas [K, ...], weights [K]) -> the aggregated update


def build_server(section, total_rounds: int) -> ServerOptimizer:
  """The server optimiser `section.name` (a ServerConfig, a mapping of its keys, or None: plain FedAvg)."""
  section = as_section(ServerConfig, section)
  tx = SERVERS.get(section.name).obj(section)
  return make_server_optimizer(tx, section, total_rounds)


def make_server_optimizer(tx: optax.GradientTransformation, section: ServerConfig,
                          total_rounds: int) -> ServerOptimizer:
  """Wraps the direction transformation `tx` with the server lr and its round schedule."""
  lr0 = float(section.lr)
  sched = round_schedule(section.lr_schedule, section.lr_warmup_rounds, total_rounds,
                         section.lr_final_fraction)

  def lr(t):
    return lr0 * sched(t)

  def update(opt_state, params, mean_delta, t, active):
    grad = jax.tree_util.tree_map(jnp.negative, mean_delta)
    direction, new_state = tx.update(grad, opt_state, params)
    step = lr(t)
    new_params = jax.tree_util.tree_map(lambda p, d: (p - step * d).astype(p.dtype), params, direction)
    keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
    return (jax.tree_util.tree_map(keep, new_params, params),
            jax.tree_util.tree_map(keep, new_state, opt_state))

  return ServerOptimizer(tx.init, update, lr, MEANS[section.mean])

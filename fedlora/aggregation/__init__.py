"""Aggregation rules of the clients' LoRA updates, found by name (`server.aggregation`).

A rule is ONE file here that registers a `Rule(build, requires)` with `AGGREGATIONS`:
`build(server section, scale) -> Aggregation` (`scale` = the LoRA scaling alpha / lora.rank) and
`requires(server section)`, which raises a ConfigError through `section.need` when the rule cannot
run with the section's other keys. Built-in:

| name    | adapters (A, B; ranks r_k <= R, zero-padded)                          | server state          |
|---------|-----------------------------------------------------------------------|-----------------------|
| fedavg  | `server.mean` of ΔA and of ΔB, separately (today's FedAvg of LoRA)     | none                  |
| hetlora | per rank component i, the weighted mean over the clients with r_k > i | none                  |
| flora   | stack p_k·A_k and B_k along the rank axis, merge s·A_st·B_st into W0   | merged ΔW per layer   |

The dense leaves (the head) are aggregated by `server.mean` in every rule. The server optimiser
(fedlora/server) then steps on the aggregate as it does today.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from fedlora.registry import Registry

AGGREGATIONS = Registry("aggregation rule", "fedlora.aggregation", "server.aggregation")


class Aggregation(NamedTuple):
  """What the server phase calls (all pure and jittable).

  init:   (trainable) -> state: a PyTree of arrays kept in the server state under 'aggregation'
          (checkpointed), or {} for none (the server state then has no such key).
  mean:   (global, state, deltas [K, ...], weights [K], masks [K, R] or None, base_mean, lr)
          -> (update, state): the aggregated update the server optimiser steps on; `masks` are the
          sampled clients' rank masks (None: every client has rank R), `base_mean(deltas, weights)`
          the `server.mean` of fedlora/server/aggregate.py, `lr` the round's server lr.
  finish: (new global, state) -> new global, after the server step (None = as it is).
  base:   (frozen, state) -> the frozen base the clients train on and the evaluation reads
          (None = the loaded base, unchanged).
  """
  init: Callable
  mean: Callable
  finish: Callable | None = None
  base: Callable | None = None


class Rule(NamedTuple):
  build: Callable                   # (server section, scale) -> Aggregation
  requires: Callable | None = None  # (server section) -> None, raising through section.need


def is_adapter_leaf(path) -> str:
  """'lora_a' / 'lora_b' when the leaf at `path` is an adapter factor, else ''."""
  name = str(getattr(path[-1], "key", getattr(path[-1], "idx", path[-1]))) if path else ""
  return name if name in ("lora_a", "lora_b") else ""


def build_aggregation(section, scale: float) -> Aggregation:
  """The rule `section.aggregation` of a ServerConfig."""
  return AGGREGATIONS.get(section.aggregation).obj.build(section, float(scale))


__all__ = ["AGGREGATIONS", "Aggregation", "Rule", "build_aggregation", "is_adapter_leaf"]

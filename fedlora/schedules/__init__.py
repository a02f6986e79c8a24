"""Round-level learning-rate schedules, found by name (`server.lr_schedule`, `client.lr_schedule`).

Each file registers `make(warmup_rounds, total_rounds, final_fraction) -> scale(t)` with `SCHEDULES`:
a pure jnp function of the 1-based round t (a traced scalar is fine, so a schedule never recompiles
anything) returning float32; the learning rate of round t is `lr * scale(t)`.
"""
from __future__ import annotations

import jax.numpy as jnp

from fedlora.registry import Registry
from fedlora.section import is_int, is_num

SCHEDULES = Registry("lr schedule", "fedlora.schedules", "lr_schedule")


def warmup(t, warmup_rounds: float):
  """min(1, t / warmup_rounds) (1 when warmup_rounds = 0), float32."""
  if warmup_rounds > 0:
    return jnp.minimum(1.0, jnp.asarray(t, jnp.float32) / float(warmup_rounds))
  return jnp.ones((), jnp.float32)


def round_schedule(kind: str, warmup_rounds: int, total_rounds: int, final_fraction: float = 0.0):
  """`scale(t) -> float32 []` of the registered schedule `kind`."""
  return SCHEDULES.get(kind).obj(warmup_rounds, total_rounds, final_fraction)


def check_schedule(section) -> None:
  """The round-schedule keys `lr_schedule`, `lr_warmup_rounds`, `lr_final_fraction` of a section."""
  if section.lr_schedule not in SCHEDULES:
    section.need(False, "lr_schedule", f"one of {SCHEDULES.names()}")
  section.need(is_int(section.lr_warmup_rounds) and section.lr_warmup_rounds >= 0,
               "lr_warmup_rounds", "an integer >= 0")
  section.need(is_num(section.lr_final_fraction) and 0.0 <= section.lr_final_fraction <= 1.0,
               "lr_final_fraction", "a fraction in [0, 1]")

"""Round-level learning-rate schedules, shared by the server optimiser and the client optimiser.

`round_schedule(kind, warmup_rounds, total_rounds, final_fraction)` returns a pure jnp function
`scale(t) -> float32` of the 1-based round t (a traced scalar is fine, so a schedule never
recompiles anything); the learning rate of round t is `lr * scale(t)`:

  constant : 1
  warmup   : min(1, t / warmup_rounds)  (linear warm-up, then constant; warmup_rounds = 0 -> constant)
  cosine   : the warm-up above, then cosine decay from 1 at round warmup_rounds to final_fraction at
             round total_rounds: final + (1 - final) * (1 + cos(pi * progress)) / 2
"""
from __future__ import annotations

import math

import jax.numpy as jnp

KINDS = ("constant", "warmup", "cosine")


def validate_schedule(section: str, kind, warmup_rounds, final_fraction) -> None:
  """ValueError naming `<section>.<key>` for a bad schedule setting."""
  if kind not in KINDS:
    raise ValueError(f"config.{section}.lr_schedule={kind!r} is not allowed: one of {KINDS}")
  if isinstance(warmup_rounds, bool) or not isinstance(warmup_rounds, int) or warmup_rounds < 0:
    raise ValueError(f"config.{section}.lr_warmup_rounds={warmup_rounds!r} is not allowed: an "
                     "integer >= 0")
  if isinstance(final_fraction, bool) or not isinstance(final_fraction, (int, float)) or not (
      0.0 <= final_fraction <= 1.0):
    raise ValueError(f"config.{section}.lr_final_fraction={final_fraction!r} is not allowed: a "
                     "fraction in [0, 1]")


def round_schedule(kind: str, warmup_rounds: int, total_rounds: int, final_fraction: float = 0.0):
  """`scale(t) -> float32 []` for 1-based round t; see the module doc."""
  if kind not in KINDS:
    raise ValueError(f"lr_schedule={kind!r} is not allowed: one of {KINDS}")
  w = float(warmup_rounds)
  span = float(max(total_rounds - warmup_rounds, 1))
  final = float(final_fraction)

  def scale(t):
    t = jnp.asarray(t, jnp.float32)
    if kind == "constant":
      return jnp.ones((), jnp.float32)
    warm = jnp.minimum(1.0, t / w) if w > 0 else jnp.ones((), jnp.float32)
    if kind == "warmup":
      return warm
    progress = jnp.clip((t - w) / span, 0.0, 1.0)
    cos = final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    return jnp.where(t <= w, warm, cos).astype(jnp.float32)
  return scale

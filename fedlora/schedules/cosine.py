"""'cosine': the linear warm-up, then cosine decay from 1 at round warmup_rounds to final_fraction at
round total_rounds: final + (1 - final) * (1 + cos(pi * progress)) / 2."""
import math

import jax.numpy as jnp

from fedlora.schedules import SCHEDULES, warmup


@SCHEDULES.register("cosine")
def make(warmup_rounds: int, total_rounds: int, final_fraction: float):
  w = float(warmup_rounds)
  span = float(max(total_rounds - warmup_rounds, 1))
  final = float(final_fraction)

  def scale(t):
    t = jnp.asarray(t, jnp.float32)
    progress = jnp.clip((t - w) / span, 0.0, 1.0)
    cos = final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    return jnp.where(t <= w, warmup(t, warmup_rounds), cos).astype(jnp.float32)
  return scale

"""Which clients take part in a round."""
from __future__ import annotations

import jax


def sample_clients(key, num_clients: int, per_round: int) -> jax.Array:
  """`[per_round]` distinct client ids drawn uniformly without replacement, sorted."""
  ids = jax.random.choice(key, num_clients, (per_round,), replace=False)
  return jax.numpy.sort(ids)

"""The non-finite guard of one client, computed inside the jitted (vmapped) client phase.

`finite` is one boolean per client: its local loss and its update (before and after compression) are
all finite. A non-finite client's sent delta is zeroed and its compressor state kept as it was, so
whatever the trainer decides (`fed.nonfinite`: stop the run, or skip the client with weight 0) no NaN
reaches the global model, the error-feedback memory or the importance profile.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

def all_finite(tree) -> jax.Array:
  """Scalar bool: every element of every leaf is finite (True for an empty tree)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def guard(finite, sent, new_state, old_state, profile):
  """`(sent, comp_state, profile)` of one client with the non-finite case neutralised."""
  sent = jax.tree_util.tree_map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), sent)
  state = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new_state, old_state)
  profile = jnp.where(finite, profile, jnp.full_like(profile, 1.0 / profile.shape[-1]))
  return sent, state, profile

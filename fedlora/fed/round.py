"""One federated round as two jitted pure functions: the vmapped client phase and the server phase.

Between them the trainer may decide which uploads arrive (wireless deadline misses). The per-client
function `one_client` is the single source of the client arithmetic: `client_phase` vmaps it over the
sampled clients (their frozen base weights broadcast, never copied), and the test-only reference
loops over it in Python.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from fedlora.data.clients import gather_batches, sample_batches
from fedlora.fed.aggregate import fedavg
from fedlora.fed.guard import all_finite, guard
from fedlora.fed.local import make_local_update
from fedlora.fed.sharding import constrain_clients


class ClientOut(NamedTuple):
  """Per sampled client (leading axis `[K]` after vmap)."""
  delta: Any          # sparsified update the server receives (trainable-tree structure)
  bits: jax.Array     # uplink payload in bits
  metrics: dict       # local 'loss', 'first_loss', 'ce', 'acc', 'finite' (see fedlora.fed.guard)
  kept: Any           # compressor diagnostics (e.g. kept-rank masks) or None
  profile: jax.Array  # [r] the compressor's planning profile (CompressOut.profile): sorted normalised
                      # mass of the scores it selects by, pooled over adapters


class RoundFns(NamedTuple):
  one_client: Callable    # (global, frozen, batches, key, ratio, comp_state) -> (ClientOut, comp_state)
  sample: Callable        # (key, client_data, ids) -> (batches [K, E, B, ...], client keys [K])
  client_phase: Callable  # jitted, see make_round
  server_phase: Callable  # jitted (global, deltas [K,...], weights [K]) -> global


def tree_sub(a, b):
  return jax.tree_util.tree_map(jnp.subtract, a, b)


def make_round(loss_fn: Callable, optimizer, compressor, *, local_steps: int, batch_size: int,
               server_lr: float = 1.0, mesh=None) -> RoundFns:
  """Builds the round functions.

  client_phase(global_tr, frozen, client_data, ids [K], key, ratios [K], comp_states [N, ...])
    -> (ClientOut with leaves [K, ...], comp_states [N, ...]); the compressor states of the sampled
    clients are gathered, updated and scattered back (error feedback stays with its client).
  """
  local = make_local_update(loss_fn, optimizer)

  def one_client(global_tr, frozen, batches, key, ratio, comp_state):
    k_train, k_comp = jax.random.split(key)
    new_tr, metrics = local(global_tr, frozen, batches, k_train)
    delta = tree_sub(new_tr, global_tr)
    out = compressor.update(comp_state, delta, ratio, k_comp, global_tr)
    finite = jnp.isfinite(metrics["loss"]) & all_finite(delta) & all_finite(out.delta)
    sent, state, profile = guard(finite, out.delta, out.state, comp_state, out.profile)
    return ClientOut(sent, out.bits, dict(metrics, finite=finite), out.kept, profile), state

  def sample(key, client_data, ids):
    k_batch, k_clients = jax.random.split(key)
    sel = jax.tree_util.tree_map(lambda x: x[ids], client_data)
    idx = sample_batches(k_batch, sel.num_examples, sel.n_max, batch_size, local_steps)
    return gather_batches(sel, idx), jax.random.split(k_clients, ids.shape[0])

  @jax.jit
  def client_phase(global_tr, frozen, client_data, ids, key, ratios, comp_states):
    batches, keys = sample(key, client_data, ids)
    batches = constrain_clients(batches, mesh)
    states = jax.tree_util.tree_map(lambda x: x[ids], comp_states)
    out, new_states = jax.vmap(one_client, in_axes=(None, None, 0, 0, 0, 0))(
        global_tr, frozen, batches, keys, ratios, states)
    comp_states = jax.tree_util.tree_map(lambda a, n: a.at[ids].set(n), comp_states, new_states)
    return out, comp_states

  @jax.jit
  def server_phase(global_tr, deltas, weights):
    return fedavg(global_tr, deltas, weights, server_lr)

  return RoundFns(one_client, sample, client_phase, server_phase)

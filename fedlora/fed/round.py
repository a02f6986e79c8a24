"""One federated round as two jitted pure functions: the chunked, vmapped client phase and the server phase.

Between them the trainer may decide which uploads arrive (wireless deadline misses). The per-client
function `one_client` is the single source of the client arithmetic: `client_phase` vmaps it over a
chunk of sampled clients (their frozen base weights broadcast, never copied) and runs the chunks one
after the other (`lax.scan`), and the test-only reference loops over it in Python.

Per-client state (kept across rounds, one row per client of the federation) is ONE PyTree
`client_states` whose leaves are `[N, ...]`, e.g. `{'comp': error-feedback residuals}`; the client
phase gathers the rows of a chunk's clients, `one_client` maps a client's row to its new row, and the
phase scatters them back. Adding a kind of per-client state (a new key) needs no change here.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from fedlora.data.clients import gather_batches, sample_batches
from fedlora.fed.aggregate import fedavg
from fedlora.fed.guard import all_finite, guard
from fedlora.fed.local import make_local_update
from fedlora.fed.sharding import clients_size, constrain_clients
from fedlora.soft.importance import score_tree
from fedlora.tsfa.bound import normalise_profile


class ClientOut(NamedTuple):
  """Per sampled client (leading axis `[K]` after vmap)."""
  delta: Any          # sparsified update the server receives (trainable-tree structure)
  bits: jax.Array     # uplink payload in bits
  metrics: dict       # local 'loss', 'first_loss', 'ce', 'acc', 'finite' (see fedlora.fed.guard)
  kept: Any           # compressor diagnostics (e.g. kept-rank masks) or None
  profile: jax.Array  # [r] sorted normalised importance mass of the full update, pooled over adapters


class RoundFns(NamedTuple):
  one_client: Callable    # (global, frozen, batches, key, ratio, client_state) -> (ClientOut, client_state)
  sample: Callable        # (key, client_data, ids) -> (batches [K, E, B, ...], client keys [K])
  client_phase: Callable  # jitted, see make_round
  server_phase: Callable  # jitted (global, deltas [K,...], weights [K]) -> global
  init_client_states: Callable  # (trainable, num_clients) -> client_states, leaves [N, ...]
  client_chunk: int       # C: clients vmapped at once (0 = all K sampled clients in one chunk)


def pooled_profile(delta) -> jax.Array:
  """`[r]`: the adapters' sorted normalised importance mass (SOFT's s_i²), mass-weighted over adapters,
  i.e. what fraction of the update's importance the top-j components carry (TSFA's E_k input)."""
  scores = [s for s in jax.tree_util.tree_leaves(score_tree(delta)) if s is not None]
  e = jnp.sort(jnp.square(jnp.stack(scores)), axis=-1)[:, ::-1].sum(0)
  return jnp.where(e.sum() > 0, normalise_profile(e), 1.0 / e.shape[0])


def tree_sub(a, b):
  return jax.tree_util.tree_map(jnp.subtract, a, b)


def chunking(k: int, chunk: int, devices: int = 1) -> tuple[int, int]:
  """(C, number of chunks) for K sampled clients and `chunk` (0 or >= K: one chunk of K); C is
  rounded up to a multiple of the `devices` on the mesh's 'clients' axis (the padding is masked)."""
  c = k if chunk <= 0 or chunk >= k else chunk
  c = -(-c // devices) * devices
  return c, -(-k // c)


def make_round(loss_fn: Callable, optimizer, compressor, *, local_steps: int, batch_size: int,
               server_lr: float = 1.0, mesh=None, client_chunk: int = 0,
               donate: bool = False) -> RoundFns:
  """Builds the round functions.

  client_phase(global_tr, frozen, client_data, ids [K], key, ratios [K], client_states [N, ...])
    -> (ClientOut with leaves [K, ...], client_states [N, ...]). The K clients run as
    ceil(K / C) chunks of C = `client_chunk` (0: one chunk of K): a `lax.scan` over chunks, `vmap`
    inside a chunk. The last chunk is padded with dummy clients (id N, out of range: their state
    rows are read clipped and their writes dropped; their outputs are sliced off), so padding has
    no effect. Batches and keys are drawn for the K real clients before chunking, so the result
    does not depend on C. With a mesh, C is padded up to a multiple of the 'clients' axis size.
  donate: donate `client_states` (the trainer replaces it; callers that reuse it must not donate).
  """
  local = make_local_update(loss_fn, optimizer)

  def one_client(global_tr, frozen, batches, key, ratio, client_state):
    k_train, k_comp = jax.random.split(key)
    new_tr, metrics = local(global_tr, frozen, batches, k_train)
    delta = tree_sub(new_tr, global_tr)
    out = compressor.update(client_state["comp"], delta, ratio, k_comp, global_tr)
    new_state = dict(client_state, comp=out.state)
    finite = jnp.isfinite(metrics["loss"]) & all_finite(delta) & all_finite(out.delta)
    # a non-finite client: upload zeroed, its whole per-client state (every key) left as it was
    sent, new_state, profile = guard(finite, out.delta, new_state, client_state, pooled_profile(delta))
    return ClientOut(sent, out.bits, dict(metrics, finite=finite), out.kept, profile), new_state

  def init_client_states(trainable, num_clients: int):
    one = {"comp": compressor.init(trainable)}
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num_clients,) + x.shape), one)

  def draw(key, client_data, ids):
    """Row indices `[K, E, B]` and per-client keys `[K]` of the sampled clients."""
    k_batch, k_clients = jax.random.split(key)
    idx = sample_batches(k_batch, client_data.num_examples[ids], client_data.n_max, batch_size,
                         local_steps)
    return idx, jax.random.split(k_clients, ids.shape[0])

  def sample(key, client_data, ids):
    idx, keys = draw(key, client_data, ids)
    sel = jax.tree_util.tree_map(lambda x: x[ids], client_data)
    return gather_batches(sel, idx), keys

  vclient = jax.vmap(one_client, in_axes=(None, None, 0, 0, 0, 0))

  def run_chunk(global_tr, frozen, client_data, states, ids_c, idx_c, keys_c, ratios_c):
    """One chunk: ids_c `[C]` (N = padding), idx_c `[C, E, B]` -> (ClientOut [C, ...], states)."""
    rows = ids_c[:, None, None]
    batches = {k: a.at[rows, idx_c].get(mode="clip") for k, a in client_data.arrays.items()}
    batches = constrain_clients(batches, mesh)
    st = jax.tree_util.tree_map(lambda x: x.at[ids_c].get(mode="clip"), states)
    out, new_st = vclient(global_tr, frozen, batches, keys_c, ratios_c, st)
    states = jax.tree_util.tree_map(lambda a, n: a.at[ids_c].set(n, mode="drop"), states, new_st)
    return out, states

  def client_phase(global_tr, frozen, client_data, ids, key, ratios, client_states):
    k = ids.shape[0]
    c, n = chunking(k, client_chunk, clients_size(mesh))
    idx, keys = draw(key, client_data, ids)
    if n * c == k and n == 1:
      return run_chunk(global_tr, frozen, client_data, client_states, ids, idx, keys, ratios)
    pad = n * c - k
    padded = lambda x, v: jnp.concatenate([x, jnp.broadcast_to(v, (pad,) + x.shape[1:]).astype(x.dtype)])  # noqa: E731
    xs = (padded(ids, client_data.num_clients), padded(idx, 0), padded(keys, keys[0]),
          padded(ratios, 1.0))
    xs = jax.tree_util.tree_map(lambda x: x.reshape((n, c) + x.shape[1:]), xs)

    def body(states, x):
      out, states = run_chunk(global_tr, frozen, client_data, states, *x)
      return states, out
    client_states, outs = jax.lax.scan(body, client_states, xs)
    outs = jax.tree_util.tree_map(lambda x: x.reshape((n * c,) + x.shape[2:])[:k], outs)
    return outs, client_states

  def server_phase(global_tr, deltas, weights):
    return fedavg(global_tr, deltas, weights, server_lr)

  phase = jax.jit(client_phase, donate_argnums=(6,) if donate else ())
  return RoundFns(one_client, sample, phase, jax.jit(server_phase), init_client_states,
                  client_chunk)


"""One federated round as two jitted pure functions: the chunked, vmapped client phase and the server phase.

Between them the trainer may decide which uploads arrive (wireless deadline misses). The per-client
function `one_client` is the single source of the client arithmetic: `client_phase` vmaps it over a
chunk of sampled clients (their frozen base weights broadcast, never copied) and runs the chunks one
after the other (`lax.scan`), and the test-only reference loops over it in Python.

Per-client state (kept across rounds, one row per client of the federation) is ONE PyTree
`client_states` whose leaves are `[N, ...]`, e.g. `{'compressor': error-feedback residuals, 'scaffold': c_i}`; the client
phase gathers the rows of a chunk's clients, `one_client` maps a client's row to its new row, and the
phase scatters them back. Adding a kind of per-client state (a new key) needs no change here.
Drift corrections (FedProx / SCAFFOLD, fedlora/drift/) enter the local steps as a gradient
correction chained before the client optimiser; the server step is a server optimiser (fedlora/server/).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedlora.aggregation import AGGREGATIONS, Aggregation
from fedlora.data.clients import gather_batches, sample_batches
from fedlora.drift import Drift
from fedlora.fed.guard import all_finite, guard
from fedlora.fed.local import make_local_update
from fedlora.fed.sharding import clients_size, constrain_clients
from fedlora.lora.hetrank import apply_mask, mask_tree, own_rank_profile, rank_mask, slice_rank
from fedlora.server import ServerOptimizer, build_server
from fedlora.tasks.label_skew import client_label_counts


# how `one_client`'s arguments map over the clients of a chunk (global, frozen, batches, key, ratio,
# client state, round context): per-client batches, keys, ratios and state rows, the rest shared
CLIENT_IN_AXES = (None, None, 0, 0, 0, 0, None)


class ClientOut(NamedTuple):
  """Per sampled client (leading axis `[K]` after vmap)."""
  delta: Any          # sparsified update the server receives (trainable-tree structure)
  bits: jax.Array     # uplink payload in bits (compressed update + the drift corrections' uploads)
  metrics: dict       # local 'loss', 'first_loss', 'ce', 'acc', 'finite' (see fedlora.fed.guard)
  kept: Any           # compressor diagnostics (e.g. kept-rank masks) or None
  profile: jax.Array  # [r] the compressor's planning profile (CompressOut.profile): sorted normalised
                      # mass of the scores it selects by, pooled over adapters
  control_delta: Any = None  # the drift corrections' uploads {name: tree} (SCAFFOLD's Δc_i) or None


class RoundFns(NamedTuple):
  one_client: Callable    # (global, frozen, batches, key, ratio, client_state, ctx)
                          #   -> (ClientOut, client_state)
  sample: Callable        # (key, client_data, ids) -> (batches [K, E, B, ...], client keys [K])
  client_phase: Callable  # jitted, see make_round
  server_phase: Callable  # jitted (global, server_state, deltas [K,...], weights [K], t,
                          #   control_deltas) -> (global, server_state)
  init_client: Callable   # trainable -> ONE client's state {'compressor': ..., ['scaffold': c_i]}
  init_server: Callable   # trainable -> server state {'opt': optax state, ['control': c]}
  context: Callable       # (server_state, t) -> round-wide client inputs {'lr_scale', 'drift'}
  drift: Drift            # the chained drift corrections (their bits, downlink size)
  init_client_states: Callable  # (trainable, num_clients) -> client_states, leaves [N, ...]
  client_chunk: int       # C: clients vmapped at once (0 = all K sampled clients in one chunk)
  base: Callable = None   # (frozen, server_state) -> the frozen base the clients train on (the
                          #   aggregation rule's, e.g. FLoRA's merged base; else frozen itself)
  client_ranks: Any = None  # [N] int32 client ranks (heterogeneous ranks) or None (all lora.rank)


def tree_sub(a, b):
  return jax.tree_util.tree_map(jnp.subtract, a, b)


def chunking(k: int, chunk: int, devices: int = 1) -> tuple[int, int]:
  """(C, number of chunks) for K sampled clients and `chunk` (0 or >= K: one chunk of K); C is
  rounded up to a multiple of the `devices` on the mesh's 'clients' axis (the padding is masked)."""
  c = k if chunk <= 0 or chunk >= k else chunk
  c = -(-c // devices) * devices
  return c, -(-k // c)


def check_reparam(round_fns: "RoundFns", trainable, who: str) -> None:
  """Refuses a reparametrisation of the global factors (`who`: what switched it on) when state kept
  across rounds lives in the factors' coordinates and would no longer match them: a client state
  (error-feedback residual, SCAFFOLD c_i) or a server state leaf shaped like a trainable leaf
  (momentum / Adam moments, SCAFFOLD's c). Scalars (step counts) are fine."""
  shapes = {tuple(x.shape) for x in jax.tree_util.tree_leaves(trainable) if x.ndim >= 1}
  client = jax.eval_shape(round_fns.init_client, trainable)
  server = jax.eval_shape(round_fns.init_server, trainable)
  found = [f"client state '{k}'" for k, v in client.items()
           if k != "rank" and jax.tree_util.tree_leaves(v)]
  found += [f"server state '{k}'" for k, v in server.items()
            if any(tuple(x.shape) in shapes for x in jax.tree_util.tree_leaves(v))]
  if found:
    raise ValueError(f"{who} rewrites the global factors every round, which would leave "
                     f"{', '.join(found)} in stale coordinates; it needs compress.error_feedback="
                     "False, client.scaffold=False and a server optimiser without per-parameter "
                     "state (server.name='fedavg')")


def make_round(loss_fn: Callable, optimizer, compressor, *, local_steps: int, batch_size: int,
               server: ServerOptimizer | None = None, drift: Drift | None = None,
               client_lr_scale: Callable | None = None, num_classes: int = 0, mesh=None,
               client_chunk: int = 0, donate: bool = False,
               reparam: Callable | None = None, aggregation: Aggregation | None = None,
               client_ranks=None, rank: int = 0) -> RoundFns:
  """Builds the round functions.

  client_phase(global_tr, frozen, client_data, ids [K], key, ratios [K], client_states [N, ...], ctx)
    -> (ClientOut with leaves [K, ...], client_states [N, ...]); the per-client states (ONE PyTree,
    a dict: 'compressor' = error-feedback residual, 'scaffold' = c_i; adding a key needs no change
    here) of the sampled clients are gathered, updated and scattered back (they stay with their
    client). `ctx` (from `context`) holds the round's client lr scale and SCAFFOLD's server variate,
    broadcast to all clients. The K clients run as ceil(K / C) chunks of C = `client_chunk` (0: one
    chunk of K): a `lax.scan` over chunks, `vmap` inside a chunk. The last chunk is padded with dummy
    clients (id N, out of range: their state rows are read clipped and their writes dropped; their
    outputs are sliced off), so padding has no effect. Batches and keys are drawn for the K real
    clients before chunking, so the result does not depend on C. With a mesh, C is padded up to a
    multiple of the 'clients' axis size.
  server_phase: the server's mean of the deltas (`server.mean`) -> server optimiser step
    (fedlora/server); the drift corrections' server state from the delivered uploads (weight > 0).
  server: default fedavg at lr 1; drift: default none (fedlora.drift.build_drift); client_lr_scale: `t -> scale` (default 1);
  num_classes > 0 adds each client's label histogram to its batches as `label_counts [K, E, C]`
  (the label-skew losses read it).
  donate: donate `client_states` (the trainer replaces it; callers that reuse it must not donate).
  reparam: `global trainable -> global trainable`, applied after the server step (the method's
    `Method.reparam`, e.g. SOFT's `method.reorth`); see `check_reparam`.
  aggregation: the rule for the LoRA factors (fedlora/aggregation; default 'fedavg': `server.mean`).
  client_ranks: `[N]` int ranks <= `rank` (= lora.rank, the global adapter's) for heterogeneous
    ranks (fedlora/lora/hetrank.py), or None: every client has `rank` and nothing below runs. With
    ranks, each client's state row holds its `rank` (int32, constant); the client trains from the
    global factors truncated to its rank under its rank mask (masked components stay exactly 0), its
    compressor runs on the zero-padded update at ratio ρ·r_k/R (ρ is relative to the client's own
    rank: a rank compressor keeps ceil(ρ·r_k) of its r_k components), its bits are the compressor's
    bits for the update sliced to its own rank (exact: a rank-2 client pays for 2 components, not R),
    and its profile is re-expressed for ratios of its own rank (`own_rank_profile`). The server
    phase gets the sampled clients' ranks (`ranks [K]`) and passes their masks to the aggregation.
  """
  drift = drift if drift is not None else Drift()
  agg = aggregation if aggregation is not None else AGGREGATIONS.get("fedavg").obj.build(None, 1.0)
  hetero = client_ranks is not None
  big_r = int(rank)
  if hetero:
    client_ranks = np.asarray(client_ranks, np.int32)
    if big_r < 1 or client_ranks.min() < 1 or client_ranks.max() > big_r:
      raise ValueError(f"make_round: client ranks {sorted(set(client_ranks.tolist()))} must lie in "
                       f"[1, rank={big_r}]")
  distinct = sorted(set(client_ranks.tolist())) if hetero else []

  def own_bits(delta, ratio, key, ref, rk):
    """The compressor's bits for the update at the client's own rank (static ranks, traced rk)."""
    total = jnp.float32(0.0)
    for r in distinct:
      d_r, ref_r = slice_rank(delta, r), slice_rank(ref, r)
      b = compressor.update(compressor.init(ref_r), d_r, ratio, key, ref_r).bits
      total = total + jnp.where(rk == r, jnp.asarray(b, jnp.float32), 0.0)
    return total
  local = make_local_update(loss_fn, optimizer, drift.correct if drift.active else None,
                            track_grads=drift.needs_grads)

  def one_client(global_tr, frozen, batches, key, ratio, cstate, ctx):
    k_train, k_comp = jax.random.split(key)
    if hetero:  # the client's truncation of the global factors, trained under its rank mask
      rk = cstate["rank"]
      mask = mask_tree(global_tr, rk, big_r)
      ref = apply_mask(global_tr, mask)
      new_tr, metrics, gmean = local(ref, frozen, batches, k_train, ctx["lr_scale"],
                                     drift.anchor(ref, ctx["drift"], cstate), mask)
      delta = tree_sub(new_tr, ref)
      out = compressor.update(cstate["compressor"], delta,
                              ratio * rk.astype(jnp.float32) / big_r, k_comp, ref)
      out = out._replace(bits=own_bits(delta, ratio, k_comp, ref, rk),
                         profile=own_rank_profile(out.profile, rk, big_r)
                         if out.profile.shape[-1] == big_r else out.profile)
    else:
      new_tr, metrics, gmean = local(global_tr, frozen, batches, k_train, ctx["lr_scale"],
                                     drift.anchor(global_tr, ctx["drift"], cstate))
      delta = tree_sub(new_tr, global_tr)
      out = compressor.update(cstate["compressor"], delta, ratio, k_comp, global_tr)
    dstate, dc, dbits = drift.finish(cstate, gmean)
    new_cstate = dict(cstate, compressor=out.state, **dstate)
    finite = (jnp.isfinite(metrics["loss"]) & all_finite(delta) & all_finite(out.delta)
              & all_finite(dc))
    sent, new_cstate, profile = guard(finite, out.delta, new_cstate, cstate, out.profile)
    if dc is not None:  # a non-finite client's drift uploads are never applied either
      dc = jax.tree_util.tree_map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), dc)
    return ClientOut(sent, out.bits + dbits, dict(metrics, finite=finite), out.kept, profile,
                     dc), new_cstate

  def draw(key, client_data, ids):
    """Row indices `[K, E, B]` and per-client keys `[K]` of the sampled clients."""
    k_batch, k_clients = jax.random.split(key)
    idx = sample_batches(k_batch, client_data.num_examples[ids], client_data.n_max, batch_size,
                         local_steps)
    return idx, jax.random.split(k_clients, ids.shape[0])

  def sample(key, client_data, ids):
    idx, keys = draw(key, client_data, ids)
    sel = jax.tree_util.tree_map(lambda x: x[ids], client_data)
    return add_label_counts(gather_batches(sel, idx), sel.labels if num_classes else None,
                            sel.num_examples), keys

  def add_label_counts(batches, labels, num_examples):
    """num_classes > 0: each client's label histogram as `label_counts [K, E, C]`."""
    if num_classes:
      counts = client_label_counts(labels, num_examples, num_classes)
      batches["label_counts"] = jnp.broadcast_to(counts[:, None, :],
                                                 (counts.shape[0], local_steps, num_classes))
    return batches

  vclient = jax.vmap(one_client, in_axes=CLIENT_IN_AXES)

  def run_chunk(global_tr, frozen, client_data, states, ctx, ids_c, idx_c, keys_c, ratios_c):
    """One chunk: ids_c `[C]` (N = padding), idx_c `[C, E, B]` -> (ClientOut [C, ...], states)."""
    rows = ids_c[:, None, None]
    batches = {k: a.at[rows, idx_c].get(mode="clip") for k, a in client_data.arrays.items()}
    sel = lambda x: x.at[ids_c].get(mode="clip")  # noqa: E731
    batches = add_label_counts(batches, sel(client_data.labels) if num_classes else None,
                               sel(client_data.num_examples))
    batches = constrain_clients(batches, mesh)
    st = jax.tree_util.tree_map(sel, states)
    out, new_st = vclient(global_tr, frozen, batches, keys_c, ratios_c, st, ctx)
    states = jax.tree_util.tree_map(lambda a, n: a.at[ids_c].set(n, mode="drop"), states, new_st)
    return out, states

  def client_phase(global_tr, frozen, client_data, ids, key, ratios, client_states, ctx):
    k = ids.shape[0]
    c, n = chunking(k, client_chunk, clients_size(mesh))
    idx, keys = draw(key, client_data, ids)
    if n * c == k and n == 1:
      return run_chunk(global_tr, frozen, client_data, client_states, ctx, ids, idx, keys, ratios)
    pad = n * c - k
    padded = lambda x, v: jnp.concatenate([x, jnp.broadcast_to(v, (pad,) + x.shape[1:]).astype(x.dtype)])  # noqa: E731
    xs = (padded(ids, client_data.num_clients), padded(idx, 0), padded(keys, keys[0]),
          padded(ratios, 1.0))
    xs = jax.tree_util.tree_map(lambda x: x.reshape((n, c) + x.shape[1:]), xs)

    def body(states, x):
      out, states = run_chunk(global_tr, frozen, client_data, states, ctx, *x)
      return states, out
    client_states, outs = jax.lax.scan(body, client_states, xs)
    outs = jax.tree_util.tree_map(lambda x: x.reshape((n * c,) + x.shape[2:])[:k], outs)
    return outs, client_states

  def init_client(trainable):
    one = {"compressor": compressor.init(trainable), **drift.init_client(trainable)}
    return dict(one, rank=jnp.int32(big_r)) if hetero else one

  def init_client_states(trainable, num_clients: int):
    """Every client's state, leaves `[N, ...]` (`init_client` broadcast; heterogeneous ranks: each
    row's own `rank`, rows past the listed clients (mesh padding, never sampled) at `rank`)."""
    one = init_client(trainable)
    states = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num_clients,) + x.shape), one)
    if hetero:
      rows = np.full((num_clients,), big_r, np.int32)
      rows[:min(num_clients, client_ranks.shape[0])] = client_ranks[:num_clients]
      states["rank"] = jnp.asarray(rows)
    return states

  server_opt = server if server is not None else build_server(None, 1)

  def init_server(trainable):
    agg_state = agg.init(trainable)  # {} for a rule without state: no 'aggregation' key
    return {"opt": server_opt.init(trainable), **drift.init_server(trainable),
            **({"aggregation": agg_state} if agg_state else {})}

  def context(server_state, t):
    scale = client_lr_scale(t) if client_lr_scale is not None else jnp.float32(1.0)
    return {"lr_scale": jnp.asarray(scale, jnp.float32), "drift": drift.context(server_state)}

  @jax.jit
  def server_phase(global_tr, server_state, deltas, weights, t, control_deltas=None, ranks=None):
    masks = rank_mask(ranks, big_r) if hetero and ranks is not None else None  # [K, R]
    mean, agg_state = agg.mean(global_tr, server_state.get("aggregation", {}), deltas, weights,
                               masks, server_opt.mean, server_opt.lr(t))
    new_tr, opt = server_opt.update(server_state["opt"], global_tr, mean, t, weights.sum() > 0)
    if agg.finish is not None:
      new_tr = agg.finish(new_tr, agg_state)
    if reparam is not None:
      new_tr = reparam(new_tr)
    server_state = dict(server_state, opt=opt)
    if agg_state:
      server_state["aggregation"] = agg_state
    if control_deltas is not None:
      server_state = drift.update_server(server_state, control_deltas,
                                         (weights > 0).astype(jnp.float32))
    return new_tr, server_state

  phase = jax.jit(client_phase, donate_argnums=(6,) if donate else ())
  if agg.base is not None:
    base = jax.jit(lambda frozen, server_state: agg.base(frozen, server_state["aggregation"]))
  else:
    def base(frozen, server_state):
      return frozen
  return RoundFns(one_client, sample, phase, server_phase, init_client, init_server, context,
                  drift, init_client_states, client_chunk, base,
                  jnp.asarray(client_ranks) if hetero else None)

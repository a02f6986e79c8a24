"""Memory: the budget, XLA's estimate of one client's step, the automatic client chunk, the peak.

`choose_chunk` sizes the client phase's chunk C so that C clients' activations fit the budget:
  per-client bytes = XLA's `memory_analysis()` of the jitted client step vmapped over 2 clients minus
                     that over 1 (`one_client_bytes`): one more client's temporaries + outputs + own
                     arguments (batches, state row);
  fixed bytes      = the frozen base + the stacked client data + the per-client state rows [N, ...]
                     + the K outputs of the round (counted once, shared by all chunks) + the step's
                     shared temporaries (1-client bytes minus per-client bytes);
  C_max = floor((budget - fixed) / per-client), rounded down to a multiple of the devices on the
      'clients' axis (each device runs C / D clients of a chunk), clipped to [D, K]; then the
      chunks are balanced: n = ceil(K / C_max) chunks of C = ceil(K / n) (rounded up to the
      devices), so the last chunk carries as little padding as possible.
"""
from __future__ import annotations

import os
import resource
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedlora.lora.count import tree_bytes


class ChunkChoice(NamedTuple):
  chunk: int                # C
  per_client_bytes: int     # XLA estimate of one more client in the step (frozen excluded)
  fixed_bytes: int          # frozen + client data + state rows + outputs + the step's shared bytes
  budget_bytes: int
  budget_source: str        # 'config' | 'device' | '70% of RAM'
  reason: str               # the one line the trainer prints


def ram_bytes() -> int:
  return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def memory_budget(budget_gb: float, device=None) -> tuple[int, str]:
  """(bytes, source): `budget_gb` when > 0; else the device's `bytes_limit` (accelerators report it
  in `memory_stats()`); else 70 % of the host's RAM (CPU)."""
  if budget_gb and budget_gb > 0:
    return int(budget_gb * 2**30), "fed.memory_budget_gb"
  device = device or jax.local_devices()[0]
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001  (CPU devices may not implement it)
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), "device memory_stats bytes_limit"
  return int(0.7 * ram_bytes()), "70% of RAM"


def abstract(tree):
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def _step_bytes(one_client, global_tr, frozen, batches, client_state, ctx, n: int) -> dict:
  """XLA's memory analysis of `n` clients' step vmapped as in the client phase (shapes only)."""
  from fedlora.fed.round import CLIENT_IN_AXES
  rows = lambda t: jax.tree_util.tree_map(  # noqa: E731
      lambda x: jax.ShapeDtypeStruct((n,) + tuple(np.shape(x)), x.dtype), t)
  args = (abstract(global_tr), abstract(frozen), rows(batches),
          jax.ShapeDtypeStruct((n, 2), jnp.uint32), jax.ShapeDtypeStruct((n,), jnp.float32),
          rows(client_state), abstract(ctx))
  ma = jax.jit(jax.vmap(one_client, in_axes=CLIENT_IN_AXES)).lower(*args).compile().memory_analysis()
  temp = int(getattr(ma, "temp_size_in_bytes", 0) or 0)
  out = int(getattr(ma, "output_size_in_bytes", 0) or 0)
  arg = int(getattr(ma, "argument_size_in_bytes", 0) or 0)
  own_args = max(0, arg - tree_bytes(frozen) - tree_bytes(global_tr))
  return {"temp": temp, "output": out, "own_args": own_args, "total": temp + out + own_args}


def one_client_bytes(one_client, global_tr, frozen, batches, client_state, ctx=None) -> dict:
  """Per-client and shared bytes of the client step, from XLA's memory analysis of the step vmapped
  over 1 and over 2 clients (shapes only; nothing runs): per client = the second client's extra
  bytes (temporaries + outputs + its own arguments: batches, state row), shared = what one client
  needs beyond that (e.g. remat's stacked block weights, `layers.run_blocks`: not batched, one copy
  per chunk). Frozen base and global trainable arguments are excluded (counted as fixed).

  batches: one client's `[E, B, ...]` (arrays or ShapeDtypeStructs); client_state: one row;
  ctx: the round-wide client inputs (`RoundFns.context`).
  """
  one = _step_bytes(one_client, global_tr, frozen, batches, client_state, ctx, 1)
  two = _step_bytes(one_client, global_tr, frozen, batches, client_state, ctx, 2)
  # a second client that XLA fits in for free would make C unbounded: then count all of one client's
  # bytes per client (no shared part)
  per = two["total"] - one["total"] if two["total"] > one["total"] else max(1, one["total"])
  return {"one": one, "two": two, "per_client": per, "shared": max(0, one["total"] - per)}


def choose_chunk(k: int, per_client: int, fixed: int, budget: int, source: str,
                 devices: int = 1, cap: int = 0, cap_why: str = "") -> ChunkChoice:
  """C for K clients: as many as the budget fits (a multiple of `devices`), at most `cap` (> 0;
  rounded up to a multiple of `devices`; `cap_why` says where it comes from), then balanced so the
  chunks are as even as possible."""
  avail = budget - fixed
  fit = max(0, avail) // max(1, per_client)
  cmax = min(k, max(devices, (fit // devices) * devices))
  cap = -(-cap // devices) * devices  # a multiple of the devices (0 stays 0: no cap)
  capped = 0 < cap < cmax
  if capped:
    cmax = cap
  n = -(-k // cmax)
  c = -(-k // n)  # balanced: the same number of chunks, as little padding as possible
  c = -(-c // devices) * devices
  mb = lambda b: f"{b / 2**20:.0f} MB"  # noqa: E731
  why = (f"client_chunk={c} of K={k} ({-(-k // c)} chunk(s)): each client in the step needs "
         f"{mb(per_client)} (XLA memory_analysis), budget {budget / 2**30:.2f} GB ({source}) minus "
         f"{mb(fixed)} fixed (frozen base, client data, per-client states, round outputs, the "
         f"step's shared temporaries) fits {fit}")
  if fit < devices:
    why += f"; below the minimum, using {c} (may not fit)"
  elif capped:
    why += f"; capped at {cmax} by {cap_why}"
  return ChunkChoice(c, per_client, fixed, budget, source, why)


def peak_memory_bytes() -> dict:
  """Peak memory so far: the device's `peak_bytes_in_use` on an accelerator, and the process's peak
  resident set size (getrusage; monotonic over the process) on the host."""
  out = {}
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # noqa: BLE001
    stats = None
  if stats and "peak_bytes_in_use" in stats:
    out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
  ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  out["host_peak_rss_bytes"] = int(ru if sys.platform == "darwin" else ru * 1024)
  return out


def abstract_client_states(round_fns, trainable, num_clients: int):
  """Shapes of every client's state row `[N, ...]` (nothing is allocated)."""
  return jax.eval_shape(lambda tr: round_fns.init_client_states(tr, int(num_clients)), trainable)


def client_step_bytes(round_fns, trainable, frozen, clients, states=None) -> dict:
  """XLA's estimate of the client step (`one_client_bytes`: per client and shared), on the task's
  own batch keys and shapes (one client's arrays `[E, B, ...]`) and client state row;
  states: `abstract_client_states` when the caller already has it."""
  one = jax.eval_shape(lambda d: round_fns.sample(jax.random.PRNGKey(0), d, jnp.zeros((1,), jnp.int32))[0],
                       clients)  # one client's batches: every key the loss reads, [1, E, B, ...]
  batches = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), one)
  states = abstract_client_states(round_fns, trainable, clients.num_clients) if states is None else states
  row = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), states)
  ctx = jax.eval_shape(lambda tr: round_fns.context(round_fns.init_server(tr), 1), trainable)
  return one_client_bytes(round_fns.one_client, trainable, frozen, batches, row, ctx)


def auto_chunk(fed, max_length: int, round_fns, trainable, frozen, clients, mesh,
               est: dict | None = None) -> ChunkChoice:
  """`fed.client_chunk=0`: C from the memory budget and XLA's estimate of the client step (`fed`:
  the `fed` section; max_length: tokens per example; est: `client_step_bytes` of these round
  functions when the caller already has it, e.g. to size several K without recompiling)."""
  k = fed.clients_per_round
  states = abstract_client_states(round_fns, trainable, clients.num_clients)
  if est is None:
    est = client_step_bytes(round_fns, trainable, frozen, clients, states)
  out_bytes = k * (tree_bytes(trainable) + 4096)
  fixed = tree_bytes(frozen) + tree_bytes(clients) + tree_bytes(states) + out_bytes + est["shared"]
  budget, source = memory_budget(fed.memory_budget_gb)
  devices = mesh.shape["clients"] if mesh is not None else 1
  cap, why = 0, ""
  tokens = fed.batch_size * max_length  # one client's tokens per local step
  if fed.cpu_chunk_tokens and jax.default_backend() == "cpu":
    cap = max(1, fed.cpu_chunk_tokens // tokens)
    why = (f"fed.cpu_chunk_tokens={fed.cpu_chunk_tokens} ({tokens} tokens per client step; "
           "on CPU bigger chunks ran slower, benchmarks/bench_cpu_step.py)")
  return choose_chunk(k, est["per_client"], fixed, budget * devices, source, devices, cap, why)

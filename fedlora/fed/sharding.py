"""Devices and hosts: a 2-D mesh `clients × model`, the client axis sharded, the frozen base replicated
or sharded (FSDP-style), and the multi-process start.

The vmapped client computation is partitioned by XLA's SPMD partitioner: each chunk's per-client
batches carry a `NamedSharding(mesh, P('clients'))` constraint on their leading axis (replicated
over 'model'); the frozen base is replicated (`mesh.shard_frozen=False`) or each leaf's largest axis
divisible by the 'model' size is split over 'model' (XLA gathers a layer's weights where it is
used). A chunk of C clients is padded up to a multiple of the 'clients' size (padding has no effect).

Client data across processes: with one process it is replicated (`place`). When the 'clients' axis
spans several processes, each client array `[N, n_max, ...]` is padded to `[N_pad, n_max, ...]`
(N_pad = N rounded up to a multiple of the 'clients' size; padded rows are zeros and are never
sampled: `num_examples` stays `[N]`, the true clients) and sharded over 'clients'; a process hosts
the client rows of its own devices' shards (`hosted_clients`) and builds only those
(`place_hosted_clients`).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fedlora.section import Section, is_int

AXES = ("clients", "model")


@dataclasses.dataclass(frozen=True)
class MeshConfig(Section):
  """Section `mesh`: the devices and processes the clients are mapped over.

  num_devices:         devices of the mesh (0 = all visible, all processes)
  model:               devices on the 'model' axis; the 'clients' axis gets num_devices / model
  shard_frozen:        split the frozen base over 'model' (FSDP-style) instead of replicating it
  coordinator_address: multi-host: 'host:port' of process 0, 'auto' (SLURM/TPU), '' = one process
  num_processes:       multi-host: number of processes (0 = from FEDLORA_NUM_PROCESSES or 1)
  process_id:          multi-host: this process's id (-1 = from FEDLORA_PROCESS_ID)
  """
  SECTION = "mesh"
  num_devices: int = 0
  model: int = 1
  shard_frozen: bool = False
  coordinator_address: str = ""
  num_processes: int = 0
  process_id: int = -1

  def check(self) -> None:
    for k, lo in (("num_devices", 0), ("model", 1), ("num_processes", 0), ("process_id", -1)):
      self.need(is_int(getattr(self, k)) and getattr(self, k) >= lo, k, f"an integer >= {lo}")
    self.need(isinstance(self.shard_frozen, bool), "shard_frozen", "True or False")
    self.need(isinstance(self.coordinator_address, str), "coordinator_address",
              "'host:port', 'auto' or ''")


def init_distributed(mesh_cfg) -> None:
  """Multi-process start (`jax.distributed.initialize`) when `mesh.num_processes > 1` or the
  environment names a coordinator (`FEDLORA_COORDINATOR`, `FEDLORA_NUM_PROCESSES`,
  `FEDLORA_PROCESS_ID`; on SLURM/TPU pods `mesh.coordinator_address='auto'` lets JAX detect them).
  Must run before any other JAX call; a no-op for a single process or when already initialised."""
  addr = mesh_cfg.coordinator_address or os.environ.get("FEDLORA_COORDINATOR", "")
  nproc = mesh_cfg.num_processes or int(os.environ.get("FEDLORA_NUM_PROCESSES", "0") or 0)
  pid = mesh_cfg.process_id if mesh_cfg.process_id >= 0 else int(os.environ.get("FEDLORA_PROCESS_ID", "-1"))
  if not addr and nproc <= 1:
    return
  if jax.distributed.is_initialized():
    return
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if addr == "auto":
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=addr, num_processes=nproc, process_id=pid)


def client_mesh(num_devices: int | None = None, model: int = 1) -> Mesh | None:
  """A 2-D mesh ('clients', 'model') over the first `num_devices` devices (all by default, all
  processes' devices) with `model` devices on the model axis; None for a single device."""
  devices = jax.devices()
  n = len(devices) if not num_devices else num_devices
  if n > len(devices):
    raise ValueError(f"mesh.num_devices={n}: only {len(devices)} device(s) are visible")
  if model < 1 or n % model:
    raise ValueError(f"mesh.model={model}: must be >= 1 and divide the {n} devices of the mesh")
  if n <= 1:
    return None
  return Mesh(np.array(devices[:n]).reshape(n // model, model), AXES)


def clients_size(mesh: Mesh | None) -> int:
  return 1 if mesh is None else mesh.shape["clients"]


def check_divisible(clients_per_round: int, mesh: Mesh | None) -> None:
  """Kept for callers of the 1-D era: any K works now (chunks are padded to the client axis)."""
  del clients_per_round, mesh


def constrain_clients(tree, mesh: Mesh | None):
  """Shard every leaf's leading (client) axis over 'clients'; identity without a mesh."""
  if mesh is None:
    return tree
  spec = NamedSharding(mesh, P("clients"))
  return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, spec), tree)


def frozen_shardings(frozen, mesh: Mesh, shard: bool):
  """NamedShardings for the frozen base: replicated, or (shard=True) each leaf's largest axis that
  the 'model' size divides split over 'model' (leaves with no such axis stay replicated)."""
  m = mesh.shape["model"]

  def spec(x):
    if not shard or m == 1 or np.ndim(x) == 0:
      return NamedSharding(mesh, P())
    axes = sorted(range(np.ndim(x)), key=lambda i: -np.shape(x)[i])
    for i in axes:
      if np.shape(x)[i] % m == 0:
        parts = [None] * np.ndim(x)
        parts[i] = "model"
        return NamedSharding(mesh, P(*parts))
    return NamedSharding(mesh, P())
  return jax.tree_util.tree_map(spec, frozen)


def hosted_clients(num_clients: int, mesh: Mesh | None) -> np.ndarray | None:
  """The sorted ids `[H]` (< N) of the clients whose rows land on this process's devices when the
  client arrays `[N_pad, ...]` are sharded over 'clients' (H may be 0: a process outside the mesh).
  None (the replicated path) when every process holds every 'clients' row: one process, no mesh, or
  a 'clients' axis whose every row spans the same processes. Decided from the mesh alone, so every
  process takes the same path."""
  if mesh is None or jax.process_count() == 1:
    return None
  rows = [{d.process_index for d in np.ravel(r)} for r in mesh.devices]  # processes per 'clients' row
  if all(r == rows[0] for r in rows):
    return None
  n_pad = padded_clients(num_clients, mesh)
  mine = set()
  for idx in NamedSharding(mesh, P("clients")).addressable_devices_indices_map((n_pad,)).values():
    mine.update(range(*idx[0].indices(n_pad)))
  return np.array(sorted(r for r in mine if r < num_clients), np.int64)


def padded_clients(num_clients: int, mesh: Mesh | None) -> int:
  """N rounded up to a multiple of the mesh's 'clients' size (the rows of sharded client arrays)."""
  s = clients_size(mesh)
  return -(-int(num_clients) // s) * s


def place_hosted_clients(local, hosted: np.ndarray, num_examples: np.ndarray, mesh: Mesh):
  """ClientData on the mesh from this process's rows only.

  local: ClientData of the hosted clients, arrays `[H, n_max, ...]` in the order of `hosted` (n_max
    the GLOBAL largest client); hosted: `[H]` client ids; num_examples: `[N]` every client's size.
  Returns arrays `[N_pad, n_max, ...]` sharded over 'clients' (each device's shard filled from
  `local`, padded rows >= N zeros) and `num_examples [N]` replicated. A shard row this process does
  not host is an error (the hosted set comes from `hosted_clients` on the same mesh)."""
  n = int(np.shape(num_examples)[0])
  n_pad = padded_clients(n, mesh)
  spec = NamedSharding(mesh, P("clients"))
  pos = {int(c): i for i, c in enumerate(hosted)}

  def put(x):
    x = np.asarray(x)

    def shard(idx):
      rows = range(*idx[0].indices(n_pad))
      out = np.zeros((len(rows),) + x.shape[1:], x.dtype)
      for j, r in enumerate(rows):
        if r < n:
          if r not in pos:
            raise ValueError(f"client {r} lands on this process's devices but was not built here "
                             f"(hosted: {sorted(pos)[:10]}...)")
          out[j] = x[pos[r]]
      return out[(slice(None),) + tuple(idx[1:])]
    return jax.make_array_from_callback((n_pad,) + x.shape[1:], spec, shard)
  arrays = {k: put(v) for k, v in local.arrays.items()}
  return type(local)(arrays=arrays, num_examples=place(np.asarray(num_examples, np.int32), mesh))


def assemble_hosted(data, hosted: np.ndarray, num_clients: int, mesh: Mesh):
  """The task's data of this process's hosted clients -> the run's sharded client data.

  data: fedlora.tasks.TaskData from `prepare_data(..., hosted=ids)`: `clients` arrays `[H', n_h, ...]`
    and `num_examples [H']` of `ids` (= `hosted`, or client 0 alone when this process hosts no real
    client: only its shapes are used); `info['client_stats']` (optional) `{key: [H']}` counts.
  Collective (every process calls it): the sizes of all clients are gathered from the processes that
  host them (`num_examples [N]`, n_max = their max, so the rows are those of a single-process run),
  the local rows are padded to n_max and placed (`place_hosted_clients`), and each client_stats key
  is summed over all N clients into `info['stats'][key]`. `info['hosted_clients']` = `hosted`."""
  from fedlora.data.clients import repad_clients
  from fedlora.run.processes import gather_rows
  n, h = int(num_clients), int(hosted.size)
  local = data.clients
  if int(local.num_examples.shape[0]) != max(h, 1):
    raise ValueError(f"the task built {local.num_examples.shape[0]} clients for the {h} hosted ones")

  def spread(v):  # [H] values of the hosted clients -> [N] over all clients (max over processes)
    out = np.zeros((n,), np.int64)
    out[hosted] = np.asarray(v, np.int64)[:h]
    return gather_rows(out.astype(np.int32)).max(0).astype(np.int64)
  num_examples = spread(local.num_examples)
  if (num_examples < 1).any():
    raise ValueError(f"client(s) {np.flatnonzero(num_examples < 1)[:10].tolist()} were built by no "
                     "process (or are empty)")
  local = repad_clients(local, int(num_examples.max()))
  clients = place_hosted_clients(local, hosted, num_examples.astype(np.int32), mesh)
  info = dict(data.info, hosted_clients=hosted.tolist())
  if h == 0:
    info["hosted_examples"] = 0
  per_client = info.pop("client_stats", None)
  if per_client:
    info["stats"] = dict(info.get("stats", {}))
    for k, v in per_client.items():
      info["stats"][k] = int(info["stats"].get(k, 0)) + int(spread(v).sum())
  return data._replace(clients=clients, info=info)


def place(tree, mesh: Mesh | None, shardings=None):
  """Put a host tree on the mesh (replicated unless `shardings` says otherwise); works across
  processes (every process holds the full host tree here)."""
  if mesh is None:
    return tree
  if shardings is None:
    shardings = jax.tree_util.tree_map(lambda _: NamedSharding(mesh, P()), tree)

  def put(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  return jax.tree_util.tree_map(put, tree, shardings)

"""Devices and hosts: a 2-D mesh `clients × model`, the client axis sharded, the frozen base replicated
or sharded (FSDP-style), and the multi-process start.

The vmapped client computation is partitioned by XLA's SPMD partitioner: each chunk's per-client
batches carry a `NamedSharding(mesh, P('clients'))` constraint on their leading axis (replicated
over 'model'); the frozen base is replicated (`mesh.shard_frozen=False`) or each leaf's largest axis
divisible by the 'model' size is split over 'model' (XLA gathers a layer's weights where it is
used). A chunk of C clients is padded up to a multiple of the 'clients' size (padding has no effect).
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("clients", "model")


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

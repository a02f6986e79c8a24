"""Sharding the client axis over devices (a no-op on one device).

The vmapped client computation is partitioned by XLA's SPMD partitioner: the per-client batches carry
a `NamedSharding(mesh, P('clients'))` constraint on their leading axis while the frozen base weights
stay replicated. With K sampled clients and D devices, K must be a multiple of D.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def client_mesh(num_devices: int | None = None) -> Mesh | None:
  """A 1-D mesh named 'clients' over the first `num_devices` devices (all by default);
  None when there is a single device (nothing to shard)."""
  devices = jax.devices()
  n = len(devices) if not num_devices else num_devices
  if n > len(devices):
    raise ValueError(f"mesh.num_devices={n}: only {len(devices)} device(s) are visible")
  if n <= 1:
    return None
  return Mesh(np.array(devices[:n]), ("clients",))


def check_divisible(clients_per_round: int, mesh: Mesh | None) -> None:
  if mesh is not None and clients_per_round % mesh.size:
    raise ValueError(f"fed.clients_per_round={clients_per_round} must be a multiple of the "
                     f"{mesh.size} devices the client axis is sharded over")


def constrain_clients(tree, mesh: Mesh | None):
  """Shard every leaf's leading (client) axis over the mesh; identity without a mesh."""
  if mesh is None:
    return tree
  spec = NamedSharding(mesh, P("clients"))
  return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, spec), tree)

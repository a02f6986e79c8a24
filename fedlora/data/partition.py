"""Partitioning a (training) label array across simulated clients.

`partition(labels, num_clients, method, seed=..., min_per_client=..., **keys)` checks its arguments,
draws with one `np.random.default_rng(seed)` through the partition registered as `method`
(fedlora/data/partitions/, one file each: 'iid', 'dirichlet', 'quantity', 'client_dirichlet'; their
rules are in their docstrings) and returns `num_clients` sorted int64 index arrays that are disjoint
and cover `range(n)`; every client gets at least `min_per_client` examples. `keys` are the
partition's own config keys (e.g. `dirichlet_alpha`), missing ones at the partition's defaults.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np


def _validate(labels, num_clients, min_per_client) -> tuple[np.ndarray, int, int]:
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
  if labels.size and labels.min() < 0:
    raise ValueError(f"labels must be >= 0, got min {labels.min()}")
  if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
    raise ValueError(f"num_clients must be an integer, got {num_clients!r}")
  if isinstance(min_per_client, bool) or not isinstance(min_per_client, (int, np.integer)):
    raise ValueError(f"min_per_client must be an integer, got {min_per_client!r}")
  num_clients, min_per_client = int(num_clients), int(min_per_client)
  n = labels.shape[0]
  if num_clients < 1:
    raise ValueError(f"num_clients must be >= 1, got {num_clients}")
  if num_clients > n:
    raise ValueError(f"num_clients={num_clients} exceeds the number of examples n={n}")
  if min_per_client < 1:
    raise ValueError(f"min_per_client must be >= 1, got {min_per_client}")
  if num_clients * min_per_client > n:
    raise ValueError(
        f"num_clients={num_clients} x min_per_client={min_per_client} = "
        f"{num_clients * min_per_client} exceeds the number of examples n={n}"
    )
  return labels, num_clients, min_per_client


def partition(labels, num_clients: int, method: str = "iid", *, seed: int = 0,
              min_per_client: int = 1, max_retries: int | None = None, groups=None,
              **keys) -> list[np.ndarray]:
  """Split ``range(len(labels))`` into ``num_clients`` index arrays; see the module doc.
  ``max_retries``: 'dirichlet''s redraw budget (its default when None); ``groups`` ``[n]``: each
  example's category (data.category_column), for the partitions that group by it ('column')."""
  from fedlora.data.partitions import PARTITIONS
  entry = PARTITIONS.get(method)
  labels, num_clients, min_per_client = _validate(labels, num_clients, min_per_client)
  opts = entry.options.from_dict(keys) if entry.options is not None else None
  if opts is None and keys:
    raise ValueError(f"partition {method!r} takes no options, got {sorted(keys)}")
  extra = {} if max_retries is None else {"max_retries": max_retries}
  if groups is not None:
    extra["groups"] = np.asarray(groups)
  parts = entry.obj(labels, num_clients, np.random.default_rng(seed), min_per_client, opts, **extra)
  return [np.sort(p).astype(np.int64) for p in parts]


def partition_from_config(labels, data_cfg: Any, groups=None) -> list[np.ndarray]:
  """``partition`` with the arguments of the ``data`` section (fedlora.data.config.DataConfig)."""
  from fedlora.data.partitions import PARTITIONS
  entry = PARTITIONS.get(data_cfg.partition)
  seed = data_cfg.split_seed if data_cfg.partition_seed < 0 else data_cfg.partition_seed
  keys = entry.options.defaults() if entry.options is not None else {}
  groups = groups if groups is not None and "groups" in inspect.signature(entry.obj).parameters else None
  return partition(labels, data_cfg.num_clients, data_cfg.partition, seed=seed,
                   min_per_client=data_cfg.min_examples_per_client, groups=groups,
                   **{k: getattr(data_cfg, k) for k in keys})


def describe(parts: Sequence[np.ndarray], labels, num_classes: int) -> np.ndarray:
  """Per-client label histograms: an int64 array [num_clients, num_classes]."""
  labels = np.asarray(labels)
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  if labels.size and labels.max() >= num_classes:
    raise ValueError(f"labels go up to {labels.max()} but num_classes={num_classes}")
  return np.stack(
      [np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=num_classes) for p in parts]
  ).astype(np.int64)


def label_skew(hist: np.ndarray) -> float:
  """Mean over clients of the total-variation distance between the client's label distribution
  and the global one (0 = IID-like, up to 1 - min_c p_c for single-class clients)."""
  hist = np.asarray(hist, dtype=np.float64)
  glob = hist.sum(0) / hist.sum()
  local = hist / np.maximum(hist.sum(1, keepdims=True), 1)
  return float(0.5 * np.abs(local - glob).sum(1).mean())

"""Client partitions of the training split, found by name (`data.partition`).

Each file registers `fn(labels [n] int, num_clients, rng, min_per_client, data_section, **extra) ->
list of num_clients index arrays` with `PARTITIONS` (its own keys, if any, as an options section
beside it: they live in the `data` section). `fedlora.data.partition.partition` checks the arguments,
calls it and sorts the parts; every part must hold at least `min_per_client` examples, the parts
disjoint and covering range(n) (tests/test_partition.py checks each registered partition).
"""
from __future__ import annotations

import numpy as np

from fedlora.registry import Registry

PARTITIONS = Registry("partition", "fedlora.data.partitions", "data.partition")


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
  """Integer sizes summing to `total`, proportional to `weights` (largest-remainder rounding)."""
  exact = total * weights / weights.sum()
  sizes = np.floor(exact).astype(np.int64)
  rest = total - int(sizes.sum())
  if rest > 0:
    sizes[np.argsort(-(exact - sizes), kind="stable")[:rest]] += 1
  return sizes

"""Deterministic, stratified train/test split.

Implemented with numpy on the label array only, so a split is a pure function of
(labels, test_fraction, seed) and exactly reproducible (``np.random.default_rng(seed)``, PCG64).

Allocation: the test set has ``round(test_fraction * n)`` examples (at least 1, at most n-1).
Class c gets ``floor(test_fraction * n_c)`` test examples, and the remaining slots go one each to the
classes with the largest fractional parts (ties: lower class id first) -- the largest-remainder
method. So each class's test count is ``floor`` or ``ceil`` of ``test_fraction * n_c`` (within one
example of the exact target) and the total is exact. Which examples of a class go to test is a
seeded random permutation of that class's indices. Returned index arrays are sorted ascending, so
both splits keep the original order of the dataset.
"""
from __future__ import annotations

import numpy as np


def _check_fraction(test_fraction: float) -> float:
  f = float(test_fraction)
  if not 0.0 < f < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
  return f


def split_indices(labels, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train_idx, test_idx): sorted int64 index arrays, disjoint, covering range(n)."""
  f = _check_fraction(test_fraction)
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
  n = labels.shape[0]
  if n < 2:
    raise ValueError(f"need at least 2 examples to split, got {n}")
  n_test = int(np.clip(np.round(f * n), 1, n - 1))

  classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
  exact = f * counts
  alloc = np.floor(exact).astype(np.int64)
  remainder = n_test - int(alloc.sum())
  if remainder > 0:
    order = np.argsort(-(exact - alloc), kind="stable")
    alloc[order[:remainder]] += 1
  elif remainder < 0:  # only via the clip to n-1 / 1 on tiny data
    order = np.argsort(exact - alloc, kind="stable")
    order = order[alloc[order] > 0]
    alloc[order[:-remainder]] -= 1

  rng = np.random.default_rng(seed)
  test_parts = []
  for ci in range(classes.shape[0]):
    idx = np.flatnonzero(inverse == ci)
    test_parts.append(idx[rng.permutation(idx.shape[0])[: alloc[ci]]])
  test_idx = np.sort(np.concatenate(test_parts)).astype(np.int64)
  mask = np.ones(n, dtype=bool)
  mask[test_idx] = False
  train_idx = np.flatnonzero(mask).astype(np.int64)
  return train_idx, test_idx


def train_test_split(ds, test_fraction: float, seed: int):
  """Split a ``datasets.Dataset`` with a ``label`` column into (train_ds, test_ds); see module doc."""
  if "label" not in ds.column_names:
    raise ValueError(f"dataset has no 'label' column; columns: {ds.column_names}")
  train_idx, test_idx = split_indices(np.asarray(ds["label"]), test_fraction, seed)
  return ds.select(train_idx), ds.select(test_idx)

"""'column': a natural non-IID split, clients made from the groups of a data column (e.g. MultiEmo's
domain). The column is `data.category_column` (every example's group); selecting 'column' without it
is refused with the config.

Rule (``partition_by_column``):

1. Groups are the distinct values of ``groups`` (``[n]``), in sorted order; ``G`` of them, sizes ``n_g``.
2. Clients per group (``clients_per_group``): proportional to the group size with a floor of one.
   The quota of a group is ``num_clients * n_g / n``; every group whose quota is below 1 gets exactly
   one client and leaves the pool, the quotas of the groups left are recomputed over the clients
   left, until every quota left is >= 1; those groups then share the clients left by largest
   remainder (floors, then one more client to the largest fractional parts; ties go to the earlier
   group). So every group gets at least one client and the counts sum to ``num_clients``.
   Errors: ``num_clients < G``; a group with fewer than ``clients * min_per_client`` examples.
3. Each group's examples are shuffled (``numpy.random.default_rng(seed)``, groups in sorted order)
   and cut into that many near-equal parts (sizes differ by at most one).

Clients are numbered group by group (sorted), so a client holds the examples of one group only.
The result: ``num_clients`` sorted int64 index arrays, disjoint, covering ``range(n)``, and the group
value of each client (``[num_clients]``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fedlora.data.partitions import PARTITIONS
from fedlora.section import Section


def clients_per_group(sizes, num_clients: int) -> np.ndarray:
  """Clients of each group (int64 ``[G]``, each >= 1, summing to ``num_clients``) for group sizes
  ``sizes`` (``[G]``, each >= 1): proportional with a floor of one, see the module doc."""
  sizes = np.asarray(sizes, dtype=np.int64)
  if sizes.ndim != 1 or sizes.size == 0 or (sizes < 1).any():
    raise ValueError(f"group sizes must be a non-empty 1-D array of counts >= 1, got {sizes.tolist()}")
  if num_clients < sizes.size:
    raise ValueError(f"num_clients={num_clients} is fewer than the {sizes.size} groups: every group "
                     f"needs at least one client")
  counts = np.zeros(sizes.size, np.int64)
  free = np.ones(sizes.size, bool)  # groups still sharing the pool
  left = num_clients
  while True:
    quota = left * sizes / sizes[free].sum()
    small = free & (quota < 1)
    if not small.any():
      break
    counts[small] = 1
    left -= int(small.sum())
    free &= ~small
  exact = left * sizes[free] / sizes[free].sum()
  share = np.floor(exact).astype(np.int64)
  rest = left - int(share.sum())
  share[np.argsort(-(exact - share), kind="stable")[:rest]] += 1
  counts[free] = share
  return counts


def partition_by_column(groups, num_clients: int, seed: int = 0, min_per_client: int = 1):
  """Clients made from the groups of a column; see the module doc for the rule.

  Args:
    groups: ``[n]`` group value of each example (strings or integers; no missing values).
    num_clients: number of clients, >= the number of distinct groups.
    seed: seed of the shuffle inside each group.
    min_per_client: every client gets at least this many examples.

  Returns:
    ``(parts, client_groups)``: ``parts`` a list of ``num_clients`` sorted int64 index arrays,
    disjoint and covering ``range(n)``; ``client_groups`` (``[num_clients]``) the group of each client.
  """
  groups = np.asarray(groups)
  if groups.ndim != 1 or groups.size == 0:
    raise ValueError(f"groups must be a non-empty 1-D array, got shape {groups.shape}")
  if groups.dtype == object:
    bad = [i for i, g in enumerate(groups.tolist()) if g is None or (isinstance(g, float) and g != g)]
    if bad:
      raise ValueError(f"groups has {len(bad)} missing value(s) (None/NaN) at index(es) {bad[:5]}; "
                       "every example needs a group")
  if isinstance(num_clients, bool) or int(num_clients) != num_clients or num_clients < 1:
    raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")
  if isinstance(min_per_client, bool) or int(min_per_client) != min_per_client or min_per_client < 1:
    raise ValueError(f"min_per_client must be an integer >= 1, got {min_per_client!r}")
  num_clients, min_per_client = int(num_clients), int(min_per_client)
  names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
  if num_clients < names.size:
    raise ValueError(f"num_clients={num_clients} is fewer than the {names.size} groups "
                     f"{names.tolist()}: every group needs at least one client")
  counts = clients_per_group(sizes, num_clients)
  short = np.flatnonzero(sizes < counts * min_per_client)
  if short.size:
    g = int(short[0])
    raise ValueError(
        f"group {names[g].item()!r} has {sizes[g]} examples, fewer than its {counts[g]} clients x "
        f"min_per_client={min_per_client} = {counts[g] * min_per_client}; reduce num_clients or "
        f"min_per_client (clients per group: {dict(zip(names.tolist(), counts.tolist()))})")
  rng = np.random.default_rng(seed)
  order = np.argsort(inverse, kind="stable")         # examples grouped by group, in index order
  starts = np.concatenate([[0], np.cumsum(sizes)])
  parts = []
  for g in range(names.size):  # a loop over the (few) groups; the clients of a group are one split
    members = rng.permutation(order[starts[g]:starts[g + 1]])
    parts.extend(np.sort(p).astype(np.int64) for p in np.array_split(members, counts[g]))
  return parts, np.repeat(names, counts)


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """'column' has no keys of its own: it reads data.category_column, which it needs set."""
  SECTION = "data"

  def check_selected(self, data) -> None:
    if not data.category_column:
      data.need(False, "partition", "'column' needs data.category_column (the column whose groups "
                "make the clients, e.g. 'domain')")


@PARTITIONS.register("column", options=Options)
def split(labels, num_clients, rng, min_per_client, cfg, groups=None):
  """The clients of `partition_by_column` over `groups` (`[n]`, the category column's values; the
  causal-LM pipeline passes its categories as `labels`)."""
  g = labels if groups is None else groups
  parts, _ = partition_by_column(np.asarray(g), num_clients, int(rng.integers(2**31)), min_per_client)
  return parts

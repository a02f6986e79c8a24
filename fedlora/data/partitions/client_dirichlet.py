"""'client_dirichlet' (label skew at equal client sizes, the per-client form of Hsu et al. 2019): every
client k draws its own label distribution q_k ~ Dir(alpha * C * p), p = the global class frequencies
(Hsu et al.'s prior, scaled by the number of classes C so that balanced classes give the symmetric
Dir(alpha * 1_C); large alpha approaches IID), and a size of n // C_clients (+1 for the first
n % C_clients); clients (in random order) draw their examples class by class from multinomial(size,
q_k) over the classes that still have unassigned examples; a class that runs out hands its excess to
the client's other classes in proportion to q_k (uniformly if q_k puts no mass on them). Unlike
'dirichlet' it works for small alpha with many clients (every client gets exactly its size), e.g.
alpha = 0.05 over 100 clients: most clients hold one class. Key: `data.dirichlet_alpha` (declared by
'dirichlet')."""
from __future__ import annotations

import numpy as np

from fedlora.data.partitions import PARTITIONS, largest_remainder
from fedlora.data.partitions.dirichlet import Options


@PARTITIONS.register("client_dirichlet", options=Options)
def split(labels, num_clients, rng, min_per_client, cfg):
  alpha = float(cfg.dirichlet_alpha)
  n = labels.shape[0]
  classes = np.unique(labels)
  pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
  prior = np.array([len(p) for p in pools], np.float64) / n
  sizes = np.full(num_clients, n // num_clients, np.int64)
  sizes[: n % num_clients] += 1
  parts = [None] * num_clients
  for k in rng.permutation(num_clients):
    q = rng.dirichlet(alpha * classes.size * prior)
    left = np.array([len(p) for p in pools], np.int64)
    want = rng.multinomial(sizes[k], q)
    take = np.minimum(want, left)
    short = int(sizes[k] - take.sum())
    while short > 0:  # exhausted classes: give the excess to the client's other classes
      room = left - take
      w = np.where(room > 0, q, 0.0)
      w = w if w.sum() > 0 else (room > 0).astype(np.float64)
      extra = np.minimum(largest_remainder(short, w), room)
      take += extra
      short -= int(extra.sum())
    chunks = []
    for c in range(classes.size):
      chunks.append(np.asarray(pools[c][: take[c]], np.int64))
      del pools[c][: take[c]]
    parts[k] = np.concatenate(chunks)
  return parts

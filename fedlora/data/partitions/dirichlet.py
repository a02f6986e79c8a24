"""'dirichlet' (label skew, Hsu et al. 2019, "Measuring the effects of non-identical data
distribution"): for every class c draw proportions p_c ~ Dir(alpha * 1_C) over the clients, shuffle
the class's indices and cut them at floor(cumsum(p_c) * n_c). Smaller alpha -> more skew (alpha ->
inf approaches IID per class). The whole draw is repeated until every client has at least
`min_per_client` examples; after `max_retries` failed draws a ValueError suggests larger alpha, fewer
clients or a smaller minimum."""
from __future__ import annotations

import dataclasses

import numpy as np

from fedlora.data.partitions import PARTITIONS
from fedlora.section import Section, is_num


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'dirichlet' and 'client_dirichlet' (section `data`).

  dirichlet_alpha: Dirichlet concentration (> 0); smaller = more skewed labels
  """
  SECTION = "data"
  dirichlet_alpha: float = 0.5

  def check(self) -> None:
    self.need(is_num(self.dirichlet_alpha) and self.dirichlet_alpha > 0, "dirichlet_alpha",
              "a finite number > 0")


@PARTITIONS.register("dirichlet", options=Options)
def split(labels, num_clients, rng, min_per_client, cfg, max_retries: int = 1000):
  alpha = float(cfg.dirichlet_alpha)
  if max_retries < 1:
    raise ValueError(f"max_retries must be >= 1, got {max_retries}")
  n = labels.shape[0]
  classes = np.unique(labels)
  class_idx = [np.flatnonzero(labels == c) for c in classes]
  smallest = -1
  for _ in range(int(max_retries)):
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for idx in class_idx:
      idx = idx[rng.permutation(idx.shape[0])]
      p = rng.dirichlet(np.full(num_clients, alpha))
      cuts = (np.cumsum(p) * idx.shape[0]).astype(np.int64)[:-1]
      for k, chunk in enumerate(np.split(idx, cuts)):
        buckets[k].append(chunk)
    parts = [np.concatenate(b) for b in buckets]
    sizes = np.array([p.shape[0] for p in parts])
    smallest = max(smallest, int(sizes.min()))
    if sizes.min() >= min_per_client:
      return parts
  raise ValueError(
      f"dirichlet partition: no draw in max_retries={max_retries} gave every one of "
      f"num_clients={num_clients} clients >= min_per_client={min_per_client} examples "
      f"(n={n}, alpha={alpha}, best smallest client: {smallest}); increase dirichlet_alpha, "
      "or reduce num_clients / min_examples_per_client")

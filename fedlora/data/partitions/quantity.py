"""'quantity' (quantity skew, labels IID): client weights w_k ~ LogNormal(0, sigma); every client first
gets `min_per_client` examples and the remaining n - C * min_per_client are allocated proportionally
to w (largest-remainder rounding), then a random permutation of all indices is cut into those sizes.
sigma = 0 gives equal sizes (+-1); larger sigma, more skew."""
from __future__ import annotations

import dataclasses

import numpy as np

from fedlora.data.partitions import PARTITIONS, largest_remainder
from fedlora.section import Section, is_num


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'quantity' (section `data`).

  quantity_sigma: log-normal sigma of the client sizes (>= 0; 0 = equal sizes)
  """
  SECTION = "data"
  quantity_sigma: float = 1.0

  def check(self) -> None:
    self.need(is_num(self.quantity_sigma) and self.quantity_sigma >= 0, "quantity_sigma",
              "a finite number >= 0")


@PARTITIONS.register("quantity", options=Options)
def split(labels, num_clients, rng, min_per_client, cfg):
  n = labels.shape[0]
  weights = rng.lognormal(mean=0.0, sigma=float(cfg.quantity_sigma), size=num_clients)
  sizes = min_per_client + largest_remainder(n - num_clients * min_per_client, weights)
  return np.split(rng.permutation(n), np.cumsum(sizes)[:-1])

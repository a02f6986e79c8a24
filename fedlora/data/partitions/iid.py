"""'iid': a random permutation of all indices cut into `num_clients` nearly equal parts
(`np.array_split`: sizes differ by at most 1)."""
import numpy as np

from fedlora.data.partitions import PARTITIONS


@PARTITIONS.register("iid")
def split(labels, num_clients, rng, min_per_client, cfg=None):
  return np.array_split(rng.permutation(labels.shape[0]), num_clients)

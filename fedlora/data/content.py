"""The content of the data a run uses, for the run's fingerprint (fedlora.run.fingerprint)."""
from __future__ import annotations

import jax

from fedlora.data.readers import READERS
from fedlora.data.readers.files import data_files
from fedlora.run.fingerprint import data_fingerprint


def data_content(data_cfg, clients, test: dict, label_names) -> dict:
  """`data_fingerprint` of the files the source read and the prepared arrays: the clients' arrays
  `[N, n_max, ...]` when this process holds them all (multi-process: the test split and label names
  only), the test split, the label names."""
  reader = READERS.get(data_cfg.source).obj
  arrays = {f"test/{k}": v for k, v in test.items()}
  arrays["label_names"] = list(label_names or [])
  if all(getattr(x, "is_fully_addressable", True) for x in jax.tree_util.tree_leaves(clients)):
    arrays.update({f"clients/{k}": v for k, v in clients.arrays.items()})
    arrays["clients/num_examples"] = clients.num_examples
  return data_fingerprint((reader.paths or data_files)(data_cfg), arrays)

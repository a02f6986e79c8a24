"""Input checks at setup: what the model can take, before any training (a token id beyond the
vocabulary or a row longer than the position table gives NaN or garbage, not an error)."""
from __future__ import annotations

import numpy as np

from fedlora.section import ConfigError

ID_KEYS = ("input_ids", "prompt_ids")  # token-id arrays a task prepares (padding is >= 0 too)


def check_positions(hf_config: dict, family, max_length: int, model_path: str) -> None:
  """ConfigError naming the value when `data.max_length` exceeds the model's position table."""
  positions = family.max_positions(hf_config)
  if positions is not None and max_length > positions:
    raise ConfigError(f"config.data.max_length={max_length} is not allowed for {model_path!r}: its "
                      f"position table holds {positions} positions; use --config.data.max_length={positions} "
                      "or less")


def check_token_ids(data, hf_config: dict, model_path: str) -> None:
  """ValueError when a prepared token id is >= the model's vocabulary (the tokenizer does not
  belong to the model)."""
  vocab = hf_config.get("vocab_size")
  if not isinstance(vocab, int):
    return
  arrays = [(f"test {k}", np.asarray(v)) for k, v in data.test.items() if k in ID_KEYS]
  arrays += [(f"client {k}", np.asarray(v)) for k, v in data.clients.arrays.items() if k in ID_KEYS]
  for where, a in arrays:
    if a.size and int(a.max()) >= vocab:
      raise ValueError(f"the {where} hold token id {int(a.max())}, but the model in {model_path!r} has "
                       f"a vocabulary of {vocab}: the tokenizer does not belong to this model (check "
                       "model.path / model.package and the tokenizer files beside the weights)")

"""Config section `data`: where the examples come from, how they are split and partitioned."""
from __future__ import annotations

import codecs
import dataclasses

from fedlora.section import Section, is_int, is_num


def _components():
  from fedlora.data.partitions import PARTITIONS
  from fedlora.data.readers import READERS
  return (PARTITIONS, READERS)


def _is_codec(name) -> bool:
  try:
    codecs.lookup(name)
    return True
  except (LookupError, TypeError):
    return False


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
  """Section `data` (plus the keys of the partitions, fedlora/data/partitions/).

  source:                  registered source (fedlora/data/readers/): 'bbcnews' | 'csv' | 'json' |
                           'parquet' | 'disk' (a save_to_disk folder)
  path:                    file, glob or folder for the sources that read a user's files
  text_column:             column holding the text (classification)
  label_column:            column holding the label, int or string (classification); string labels
                           are stripped of surrounding spaces
  label_case_fold:         also merge string labels that differ only in case ('Sport' = 'sport');
                           False keeps them apart and warns, naming them
  encoding:                text encoding of csv/json files (e.g. 'latin-1', 'cp1252', 'utf-16')
  max_length:              tokens kept per example (classification: the text's start; causal LM: the
                           prompt is cut from the left, then the response on the right)
  max_examples:            keep a stratified subset of this many examples (0 = all)
  test_fraction:           held-out fraction, stratified by label (or category)
  split_seed:              seed of the deterministic train/test split
  partition:               registered client partition (fedlora/data/partitions/): 'iid' |
                           'dirichlet' | 'client_dirichlet' (label skew) | 'quantity'
  partition_seed:          seed of the client partition (-1 = split_seed)
  num_clients:             N clients the training split is partitioned over
  min_examples_per_client: every client gets at least this many examples
  cache_dir:               cache folder of the `datasets` builders ('' = their default)
  prompt_column:           causal LM: column holding the prompt (ignored with messages_column)
  response_column:         causal LM: column holding the response that is learned
  messages_column:         causal LM: column of chat turns [{'role', 'content'}, ...] (last = response); '' = off
  category_column:         column with a category per example, e.g. a domain ('' = none): causal LM's
                           label-skew partitions draw over it, partition 'column' makes clients of it
  packing:                 causal LM: pack several examples per row (segment-masked) instead of padding each
  """
  SECTION = "data"
  COMPONENTS = _components
  source: str = "bbcnews"
  path: str = ""
  text_column: str = "text"
  label_column: str = "label"
  label_case_fold: bool = False
  encoding: str = "utf-8"
  max_length: int = 128
  max_examples: int = 0
  test_fraction: float = 0.2
  split_seed: int = 0
  partition: str = "dirichlet"
  partition_seed: int = -1
  num_clients: int = 20
  min_examples_per_client: int = 8
  cache_dir: str = ""
  prompt_column: str = "instruction"
  response_column: str = "output"
  messages_column: str = ""
  category_column: str = ""
  packing: bool = False

  def check(self) -> None:
    import os
    from fedlora.data.partitions import PARTITIONS
    from fedlora.data.readers import READERS
    reader = READERS.get(self.source).obj
    if PARTITIONS.get(self.partition).options is not None:
      self.options(self.partition).check_selected(self)
    if reader.files:
      self.need(isinstance(self.path, str) and bool(self.path) and (
          os.path.exists(self.path) or any(ch in self.path for ch in "*?[")), "path",
          f"an existing file or folder for data.source={self.source!r}")
    self.need(_is_codec(self.encoding), "encoding",
              "a Python codec name such as 'utf-8', 'latin-1', 'cp1252', 'utf-16'")
    self.need(is_int(self.max_length) and 8 <= self.max_length <= 4096, "max_length",
              "an integer >= 8 and <= 4096")
    self.need(is_int(self.max_examples) and self.max_examples >= 0, "max_examples", "an integer >= 0")
    self.need(is_num(self.test_fraction) and 0.0 < self.test_fraction < 1.0, "test_fraction",
              "a fraction in (0, 1)")
    for k in ("split_seed", "num_clients", "min_examples_per_client"):
      lo = 0 if k == "split_seed" else 1
      self.need(is_int(getattr(self, k)) and getattr(self, k) >= lo, k, f"an integer >= {lo}")
    self.need(is_int(self.partition_seed) and self.partition_seed >= -1, "partition_seed",
              "an integer >= 0, or -1 (= split_seed)")
    for k in ("path", "text_column", "label_column", "cache_dir", "prompt_column", "response_column",
              "messages_column", "category_column"):
      self.need(isinstance(getattr(self, k), str), k, "a string")
    self.need(isinstance(self.packing, bool), "packing", "True or False")
    self.need(isinstance(self.label_case_fold, bool), "label_case_fold", "True or False")

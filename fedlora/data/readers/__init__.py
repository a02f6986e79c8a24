"""Data sources, found by name (`data.source`): each file registers a `Reader`.

A reader turns the `data` section into a `datasets.Dataset` as the source holds it (every column);
`fedlora.data.sources` then checks and maps the columns a task reads. `files=True`: the source reads
the user's `data.path` (csv/json/parquet/disk), False: a packaged corpus with fixed columns.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

from fedlora.registry import Registry

READERS = Registry("data source", "fedlora.data.readers", "data.source")


class Reader(NamedTuple):
  read: Callable        # (data section) -> datasets.Dataset
  files: bool = True    # reads data.path (a user's file or folder)
  paths: Callable | None = None  # (data section) -> the files it reads (the run fingerprints their
                                 # content); None: data.path's files


def labelled_dataset(texts: list, label_ids: list, names: Sequence[str], where: str, categories=None):
    """A Dataset(text, label: ClassLabel(names)[, category]); ValueError when empty or with fewer
    than 2 classes."""
    import datasets
    if len(texts) == 0:
        raise ValueError(f"dataset from {where!r} is empty (0 examples)")
    present = len(set(int(i) for i in label_ids))
    if len(names) < 2 or present < 2:
        raise ValueError(
            f"dataset from {where!r} has fewer than 2 classes (label names {list(names)}, "
            f"{present} present); classification needs at least 2"
        )
    cols = {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=[str(n) for n in names])}
    rows = {"text": list(texts), "label": [int(i) for i in label_ids]}
    if categories is not None:
      cols["category"], rows["category"] = datasets.Value("string"), list(categories)
    return datasets.Dataset.from_dict(rows, features=datasets.Features(cols))

"""Reading a user's files (csv / json / parquet, or a save_to_disk folder) with the packaged
``datasets`` builders: the encoding checked up front, a malformed file named with its innermost
cause. Shared by the file readers ('csv', 'json', 'parquet', 'disk')."""
from __future__ import annotations

import os

import datasets


def read_files(source: str, data_cfg) -> datasets.Dataset:
  """The Dataset in ``data_cfg.path`` (a path, glob or list of paths; 'disk': one folder) read as
  ``source``, every column. ValueError naming the path for a missing, empty, undecodable or
  malformed file."""
  path, encoding = data_cfg.path, data_cfg.encoding
  cache_dir = data_cfg.cache_dir or None
  if path is None or (isinstance(path, str) and not path):
    raise ValueError(f"data.path is required for source {source!r}")
  paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
  paths = [os.fspath(p) for p in paths]
  for p in paths:
    if not any(ch in p for ch in "*?[") and not os.path.exists(p):
      raise ValueError(f"data path for source {source!r} does not exist: {p!r}")
  where = paths[0] if len(paths) == 1 else str(paths)
  if source in ("csv", "json"):
    for f in _expand(paths):
      check_encoding(f, encoding)
  if source == "csv":
    for f in _expand(paths):
      check_header(f, encoding)
  try:
    return _read(source, paths, cache_dir, encoding)
  except (StopIteration, IndexError) as e:  # what datasets raises on empty json / empty saved data
    raise ValueError(f"dataset from {where!r} is empty (0 examples) or unreadable: {e!r}") from e
  except ValueError as e:
    if "corresponds to no data" in str(e):  # empty csv / parquet
      raise ValueError(f"dataset from {where!r} is empty (0 examples)") from e
    if source not in ("csv", "json"):
      raise
    raise _malformed(source, where, e) from None
  except Exception as e:  # noqa: BLE001 - DatasetGenerationError, pandas/arrow parser errors
    raise _malformed(source, where, e) from None


def data_files(data_cfg) -> list[str]:
  """The files a file source reads for `data.path` (globs expanded; a folder: every file in it)."""
  path = data_cfg.path
  paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
  out = []
  for p in map(os.fspath, paths):
    if os.path.isdir(p):
      out.extend(os.path.join(dp, f) for dp, _, fs in sorted(os.walk(p)) for f in sorted(fs))
    else:
      out.extend(_expand([p]))
  return out


def check_header(filename: str, encoding: str) -> None:
  """A CSV header naming a column twice is an error naming it (pandas would rename the second one)."""
  import csv
  with open(filename, newline="", encoding=encoding) as fh:
    header = next(csv.reader(fh), [])
  dup = sorted({c for c in header if header.count(c) > 1})
  if dup:
    raise ValueError(f"{filename!r} has duplicate column name(s) {dup} in its header {header}: rename "
                     "them so data.text_column / data.label_column name one column each")


def _expand(paths: list[str]) -> list[str]:
  import glob
  out = []
  for p in paths:
    out.extend(sorted(glob.glob(p)) if any(ch in p for ch in "*?[") else [p])
  return [p for p in out if os.path.isfile(p)]


def check_encoding(filename: str, encoding: str, chunk: int = 1 << 20) -> None:
  """Raises ValueError naming the file and the byte offset of the first byte `encoding` cannot
  decode (streamed in chunks, so memory stays small)."""
  import codecs

  decoder = codecs.getincrementaldecoder(encoding)()
  offset = 0
  with open(filename, "rb") as fh:
    while True:
      data = fh.read(chunk)
      pending = len(decoder.getstate()[0])
      try:
        decoder.decode(data, final=not data)
      except UnicodeDecodeError as e:
        at = offset - pending + e.start
        raise ValueError(
            f"{filename!r} is not valid {encoding} text: the byte at offset {at} cannot be "
            f"decoded ({e.reason}); set --config.data.encoding to the file's encoding (e.g. "
            f"'latin-1' or 'cp1252'), or re-save the file as {encoding}") from None
      if not data:
        return
      offset += len(data)


def _malformed(source: str, where: str, e: BaseException) -> ValueError:
  """A one-paragraph error for a file `datasets` could not parse, naming the innermost cause."""
  root = e
  while root.__cause__ is not None or root.__context__ is not None:
    root = root.__cause__ or root.__context__
  msg = " ".join(str(root).split())[:300]
  return ValueError(f"could not parse {where!r} as {source} ({type(root).__name__}: {msg}); check the "
                    "file's format (one header line, the same number of fields on every line, "
                    "quoted fields containing the delimiter) or its data.encoding")


def _read(source: str, paths: list[str], cache_dir, encoding: str = "utf-8"):
  if source == "disk":
    if len(paths) != 1:
      raise ValueError(f"source 'disk' takes one save_to_disk folder, got {paths!r}")
    ds = datasets.load_from_disk(paths[0])
    if isinstance(ds, datasets.DatasetDict):
      if "train" not in ds:
        raise ValueError(
            f"{paths[0]!r} holds a DatasetDict without a 'train' split (splits: {list(ds)}); "
            "point data.path at one split's folder"
        )
      ds = ds["train"]
    return ds
  data_files = paths[0] if len(paths) == 1 else paths
  kwargs = {"encoding": encoding} if source in ("csv", "json") else {}
  return datasets.load_dataset(source, data_files=data_files, split="train", cache_dir=cache_dir, **kwargs)

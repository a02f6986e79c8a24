import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fedlora.data.config import DataConfig  # noqa: E402

from fedlora.data import (  # noqa: E402
    gather_batches,
    load_bbcnews,
    load_dataset_from_config,
    load_tokenizer,
    partition,
    prepare_federated_data,
    sample_batches,
    sample_client_batches,
    split_indices,
    stack_clients,
    tokenize,
    train_test_split,
)

BBC_COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


@pytest.fixture(scope="module")
def bbc():
    return load_bbcnews()


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _cfg(**kw):
    return DataConfig.from_dict(kw)


# ----------------------------------------------------------------------------- sources


def test_bbc_counts_and_determinism(bbc):
    assert len(bbc) == 2225
    names = bbc.features["label"].names
    assert names == sorted(BBC_COUNTS)
    counts = np.bincount(np.asarray(bbc["label"]), minlength=5)
    assert dict(zip(names, counts.tolist())) == BBC_COUNTS
    assert bbc.column_names == ["text", "label"]
    assert all(isinstance(t, str) and t for t in bbc["text"][:50])
    # the one latin-1 file decodes to a pound sign, not a replacement char
    assert any("\u00a315.8m" in t for t in bbc["text"])
    assert not any("\ufffd" in t for t in bbc["text"])
    again = load_dataset_from_config(_cfg(source="bbcnews"))
    assert again["text"] == bbc["text"] and again["label"] == bbc["label"]


def _toy(n=30):
    cats = ["sport", "tech", "arts"]
    return {
        "body": [f"document number {i} about {cats[i % 3]}" for i in range(n)],
        "category": [cats[i % 3] for i in range(n)],
        "extra": list(range(n)),
    }


@pytest.mark.parametrize("source", ["csv", "json", "parquet", "disk"])
def test_generic_sources_custom_columns(tmp_path, source):
    raw = _toy()
    ds = datasets.Dataset.from_dict(raw)
    path = tmp_path / f"data.{source}"
    if source == "csv":
        ds.to_csv(str(path), index=False)
    elif source == "json":
        ds.to_json(str(path))
    elif source == "parquet":
        ds.to_parquet(str(path))
    else:
        ds.save_to_disk(str(path))
    cfg = _cfg(source=source, path=str(path), text_column="body", label_column="category",
               cache_dir=str(tmp_path / "cache"))
    out = load_dataset_from_config(cfg)
    assert out.column_names == ["text", "label"]
    assert out.features["label"].names == ["arts", "sport", "tech"]  # sorted label names
    assert out["text"] == raw["body"]
    expected = [["arts", "sport", "tech"].index(c) for c in raw["category"]]
    assert out["label"] == expected


def test_integer_and_classlabel_labels(tmp_path):
    # non-contiguous integer labels are mapped to 0..K-1 in sorted order
    ds = datasets.Dataset.from_dict({"t": ["a", "b", "c", "d"], "y": [7, 3, 7, 5]})
    ds.save_to_disk(str(tmp_path / "ints"))
    out = load_dataset_from_config(_cfg(source="disk", path=str(tmp_path / "ints"), text_column="t", label_column="y"))
    assert out["label"] == [2, 0, 2, 1] and out.features["label"].names == ["3", "5", "7"]
    # an existing ClassLabel keeps its names and ids
    feats = datasets.Features({"t": datasets.Value("string"), "y": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"t": ["a", "b", "c"], "y": [1, 0, 1]}, features=feats)
    ds.save_to_disk(str(tmp_path / "cl"))
    out = load_dataset_from_config(_cfg(source="disk", path=str(tmp_path / "cl"), text_column="t", label_column="y"))
    assert out["label"] == [1, 0, 1] and out.features["label"].names == ["neg", "pos"]


def test_source_errors(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="nope.csv"):
        load_dataset_from_config(_cfg(source="csv", path=missing))
    with pytest.raises(ValueError, match="data.source='xml' is not allowed: one of .*bbcnews"):
        load_dataset_from_config(_cfg(source="xml"))
    with pytest.raises(ValueError, match="data.path='' is not allowed: an existing file or folder for data.source='parquet'"):
        load_dataset_from_config(_cfg(source="parquet"))

    datasets.Dataset.from_dict(_toy()).to_parquet(str(tmp_path / "d.parquet"))
    with pytest.raises(ValueError) as err:
        load_dataset_from_config(_cfg(source="parquet", path=str(tmp_path / "d.parquet"), text_column="body",
                                      label_column="topic", cache_dir=str(tmp_path / "c")))
    msg = str(err.value)
    assert "'topic'" in msg and "body" in msg and "category" in msg and "extra" in msg

    (tmp_path / "empty.csv").write_text("text,label\n")  # header only
    with pytest.raises(ValueError, match="empty"):
        load_dataset_from_config(_cfg(source="csv", path=str(tmp_path / "empty.csv"), cache_dir=str(tmp_path / "c")))
    datasets.Dataset.from_dict({"text": [], "label": []}).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="empty"):
        load_dataset_from_config(_cfg(source="disk", path=str(tmp_path / "empty")))
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "x"]}).save_to_disk(str(tmp_path / "one"))
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        load_dataset_from_config(_cfg(source="disk", path=str(tmp_path / "one")))


def test_plain_configdict_and_dict():
    cfg = ml_collections.ConfigDict({"source": "bbcnews"})  # other keys fall back to defaults
    assert len(load_dataset_from_config(cfg)) == 2225


# ----------------------------------------------------------------------------- split


def test_split_deterministic_disjoint_complete_stratified(bbc):
    labels = np.asarray(bbc["label"])
    tr, te = split_indices(labels, 0.2, seed=3)
    tr2, te2 = split_indices(labels, 0.2, seed=3)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, split_indices(labels, 0.2, seed=4)[1])
    assert np.intersect1d(tr, te).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(labels.size))
    assert te.size == round(0.2 * labels.size)
    target = 0.2 * np.bincount(labels)
    got = np.bincount(labels[te], minlength=5)
    assert np.all(np.abs(got - target) < 1.0), (got, target)

    train_ds, test_ds = train_test_split(bbc, 0.2, seed=3)
    assert len(train_ds) == tr.size and len(test_ds) == te.size
    assert test_ds["text"][0] == bbc["text"][int(te[0])]
    with pytest.raises(ValueError, match="test_fraction"):
        split_indices(labels, 1.0, 0)


def test_split_small_uneven_classes():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 1)
    for seed in range(5):
        tr, te = split_indices(labels, 0.3, seed)
        assert te.size == round(0.3 * 11)
        got = np.bincount(labels[te], minlength=3)
        assert np.all(np.abs(got - 0.3 * np.bincount(labels)) < 1.0)


# ----------------------------------------------------------------------------- tokenize


def test_tokenize_known_ids(tok):
    ds = {"text": ["A man is eating food.", "Hello world!"], "label": [1, 0]}
    out = tokenize(ds, tok, max_length=10)
    assert out["input_ids"].dtype == np.int32 and out["attention_mask"].dtype == np.int32
    assert out["input_ids"].shape == (2, 10) and out["labels"].tolist() == [1, 0]
    np.testing.assert_array_equal(out["input_ids"][0], [101, 1037, 2158, 2003, 5983, 2833, 1012, 102, 0, 0])
    np.testing.assert_array_equal(out["input_ids"][1], [101, 7592, 2088, 999, 102, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["attention_mask"].sum(1), [8, 5])
    # truncation keeps the first tokens and still ends with [SEP]
    short = tokenize(ds, tok, max_length=4)
    np.testing.assert_array_equal(short["input_ids"][0], [101, 1037, 2158, 102])
    with pytest.raises(ValueError, match="max_length"):
        tokenize(ds, tok, max_length=1)
    with pytest.raises(ValueError, match="model_max_length"):
        tokenize(ds, tok, max_length=10_000)


def test_tokenize_bbc_batches_consistent(bbc, tok):
    sub = bbc.select(range(40))
    a = tokenize(sub, tok, 64, batch_size=7)
    b = tokenize(sub, tok, 64)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert np.all(a["input_ids"][:, 0] == 101)
    full = a["attention_mask"].sum(1) == 64  # long articles are truncated to exactly max_length
    assert full.mean() > 0.9 and np.all(a["input_ids"][full, -1] == 102)


def test_load_tokenizer_missing(tmp_path):
    with pytest.raises(ValueError, match="does-not-exist"):
        load_tokenizer(str(tmp_path / "does-not-exist"))
    with pytest.raises(ValueError, match="no tokenizer files"):
        load_tokenizer(str(tmp_path))


# ----------------------------------------------------------------------------- clients


def _fake_arrays(n=50, L=6):
    ids = np.arange(n * L, dtype=np.int32).reshape(n, L)
    return {"input_ids": ids, "attention_mask": (ids % 2).astype(np.int32), "labels": (np.arange(n) % 3).astype(np.int32)}


def test_stack_clients_padding():
    arr = _fake_arrays()
    parts = [np.array([4]), np.array([0, 9, 7]), np.arange(10, 50)]
    cd = stack_clients(arr, parts)
    assert cd.input_ids.shape == (3, 40, 6) and cd.labels.shape == (3, 40)
    assert cd.num_examples.tolist() == [1, 3, 40] and cd.num_examples.dtype == np.int32
    for c, p in enumerate(parts):
        for j in range(40):
            src = p[j % p.size]
            np.testing.assert_array_equal(cd.input_ids[c, j], arr["input_ids"][src])
            assert cd.labels[c, j] == arr["labels"][src]
    assert stack_clients(arr, parts, n_max=64).input_ids.shape == (3, 64, 6)
    with pytest.raises(ValueError, match="n_max=10"):
        stack_clients(arr, parts, n_max=10)
    with pytest.raises(ValueError, match="no examples"):
        stack_clients(arr, [np.array([], dtype=int), np.arange(5)])


def test_sample_batches_epoch_property_and_bounds():
    num = jnp.array([1, 3, 7, 20, 5])
    n_max, B, steps = 20, 4, 13
    idx = np.asarray(sample_batches(jax.random.PRNGKey(0), num, n_max, B, steps))
    assert idx.shape == (5, steps, B) and idx.dtype == np.int32
    for c, n_k in enumerate(num.tolist()):
        draws = idx[c].reshape(-1)
        assert draws.min() >= 0 and draws.max() < n_k
        n_full = draws.size // n_k
        for e in range(n_full):  # each aligned block of n_k draws is a permutation of range(n_k)
            np.testing.assert_array_equal(np.sort(draws[e * n_k:(e + 1) * n_k]), np.arange(n_k))
        tail = draws[n_full * n_k:]
        assert np.unique(tail).size == tail.size  # partial epoch: still without replacement
        # so every example appears within the first ceil(n_k / B) steps
        assert set(idx[c, : -(-n_k // B)].reshape(-1).tolist()) >= set(range(n_k))
    # different epochs use different permutations (client with n_k=20: 2 full epochs of 20)
    d = idx[3].reshape(-1)
    assert not np.array_equal(d[:20], d[20:40])


def test_sample_batches_vmapped_equals_per_client_and_uniform():
    num = jnp.array([2, 9, 16])
    key = jax.random.PRNGKey(7)
    got = sample_batches(key, num, 16, 3, 5)
    keys = jax.random.split(key, 3)
    for c in range(3):
        np.testing.assert_array_equal(got[c], sample_client_batches(keys[c], num[c], 16, 3, 5))
    # vmappable over an outer axis (e.g. rounds)
    outer = jax.random.split(jax.random.PRNGKey(1), 4)
    vm = jax.vmap(lambda k: sample_batches(k, num, 16, 3, 5))(outer)
    for r in range(4):
        np.testing.assert_array_equal(vm[r], sample_batches(outer[r], num, 16, 3, 5))
    # first draw is uniform over the client's 9 examples (chi-square, 8 dof; p(>30) ~ 2e-4)
    many = jax.vmap(lambda k: sample_client_batches(k, 9, 16, 1, 1))(jax.random.split(key, 4500))
    counts = np.bincount(np.asarray(many).reshape(-1), minlength=9)
    assert counts.size == 9
    chi2 = ((counts - 500) ** 2 / 500).sum()
    assert chi2 < 30, counts


def test_gather_batches_matches_source_rows():
    arr = _fake_arrays()
    parts = partition(arr["labels"], 4, "quantity", seed=0, quantity_sigma=1.0)
    cd = stack_clients(arr, parts)
    idx = sample_batches(jax.random.PRNGKey(3), cd.num_examples, cd.n_max, 2, 3)
    batch = gather_batches(cd, idx)
    assert batch["input_ids"].shape == (4, 3, 2, 6) and batch["labels"].shape == (4, 3, 2)
    for c in range(4):
        src = parts[c][np.asarray(idx[c])]
        np.testing.assert_array_equal(batch["input_ids"][c], arr["input_ids"][src])
        np.testing.assert_array_equal(batch["attention_mask"][c], arr["attention_mask"][src])
        np.testing.assert_array_equal(batch["labels"][c], arr["labels"][src])
    one = gather_batches(cd, idx[:, 1])
    np.testing.assert_array_equal(one["input_ids"], batch["input_ids"][:, 1])


def test_prepare_federated_data_end_to_end(bbc, tok):
    cfg = _cfg(max_length=32, num_clients=6, partition="dirichlet", dirichlet_alpha=0.3, min_examples_per_client=5)
    fd = prepare_federated_data(cfg, tok, ds=bbc)
    n_train = 2225 - round(0.2 * 2225)
    assert fd.test["input_ids"].shape == (2225 - n_train, 32)
    assert fd.clients.input_ids.shape[0] == 6 and fd.clients.input_ids.shape[2] == 32
    assert int(fd.clients.num_examples.sum()) == n_train == int(fd.histogram.sum())
    assert fd.clients.num_examples.min() >= 5
    assert fd.label_names == sorted(BBC_COUNTS)


class _CountingTokenizer:
    """Delegates to a tokenizer and counts the texts it was asked to tokenise."""

    def __init__(self, tok):
        self.tok, self.texts = tok, 0

    def __call__(self, texts, **kw):
        self.texts += len(texts)
        return self.tok(texts, **kw)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def test_hosted_clients_tokenise_only_their_examples_and_match_the_full_rows(bbc, tok):
    """`hosted=[1, 3]` (what a process of a multi-process run builds): the same partition, only those
    clients' training examples (+ the test split) are tokenised, and their rows, sizes and n_max are
    exactly those of the full build (so sharding them equals the single-process data)."""
    ds = bbc.select(range(300))
    cfg = _cfg(max_length=16, num_clients=5, partition="dirichlet", dirichlet_alpha=0.5, min_examples_per_client=3)
    full = prepare_federated_data(cfg, tok, ds=ds)
    counting = _CountingTokenizer(tok)
    part = prepare_federated_data(cfg, counting, ds=ds, hosted=np.array([1, 3]))
    sizes = [len(p) for p in full.parts]
    assert [len(p) for p in part.parts] == sizes and part.hosted_examples == sizes[1] + sizes[3]
    # each of the hosted clients' and test examples is tokenised, then measured once more for
    # truncation (count_truncated); no other client's example is touched
    assert counting.texts == 2 * (part.hosted_examples + part.test["labels"].shape[0]) < 600
    assert part.clients.n_max == full.clients.n_max == max(sizes)
    np.testing.assert_array_equal(part.clients.num_examples, full.clients.num_examples[[1, 3]])
    for k in full.clients.arrays:
        np.testing.assert_array_equal(part.clients.arrays[k], full.clients.arrays[k][[1, 3]])
    np.testing.assert_array_equal(part.histogram, full.histogram)
    for k in full.test:
        np.testing.assert_array_equal(part.test[k], full.test[k])

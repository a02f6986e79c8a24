import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fedlora.data.config import DataConfig  # noqa: E402
from fedlora.data.partition import describe, label_skew, partition, partition_from_config  # noqa: E402


def _labels(n=2000, k=5, seed=0):
    # imbalanced classes, like BBC
    rng = np.random.default_rng(seed)
    return rng.choice(k, size=n, p=[0.3, 0.25, 0.2, 0.15, 0.1]).astype(np.int64)


def _check_partition(parts, n, num_clients, min_per_client):
    assert len(parts) == num_clients
    allidx = np.concatenate(parts)
    assert allidx.size == n  # disjoint + complete
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))
    assert min(p.size for p in parts) >= min_per_client
    assert all(p.dtype == np.int64 for p in parts)


@pytest.mark.parametrize("method", ["iid", "dirichlet", "quantity", "client_dirichlet"])
@pytest.mark.parametrize("num_clients,min_per", [(1, 1), (7, 1), (40, 10)])
def test_partition_properties(method, num_clients, min_per):
    labels = _labels()
    own = {"dirichlet": {"dirichlet_alpha": 0.5}, "client_dirichlet": {"dirichlet_alpha": 0.5},
           "quantity": {"quantity_sigma": 1.5}}.get(method, {})  # each partition's own keys
    kw = dict(seed=11, min_per_client=min_per, **own)
    parts = partition(labels, num_clients, method, **kw)
    _check_partition(parts, labels.size, num_clients, min_per)
    again = partition(labels, num_clients, method, **kw)
    for a, b in zip(parts, again):
        np.testing.assert_array_equal(a, b)


def test_iid_sizes_balanced_and_seed_dependent():
    labels = _labels(n=1003)
    parts = partition(labels, 10, "iid", seed=0)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    other = partition(labels, 10, "iid", seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))
    # iid clients look like the global distribution
    assert label_skew(describe(parts, labels, 5)) < 0.1


def test_dirichlet_skew_grows_as_alpha_falls():
    labels = _labels()
    skew = {}
    for alpha in (0.1, 1.0, 100.0):
        skew[alpha] = np.mean(
            [label_skew(describe(partition(labels, 20, "dirichlet", seed=s, dirichlet_alpha=alpha), labels, 5)) for s in range(4)]
        )
    assert skew[0.1] > skew[1.0] > skew[100.0]
    assert skew[0.1] > 0.4 and skew[100.0] < 0.1, skew


def test_client_dirichlet_equal_sizes_and_skew_where_per_class_dirichlet_cannot():
    """alpha = 0.05 over 100 clients: per-class 'dirichlet' finds no draw with every client >= 1
    example; 'client_dirichlet' gives equal sizes (+-1) and strong skew that grows as alpha falls."""
    labels = _labels()
    with pytest.raises(ValueError, match="dirichlet partition"):
        partition(labels, 100, "dirichlet", dirichlet_alpha=0.05, max_retries=50)
    skew = {}
    for alpha in (0.05, 1.0, 100.0):
        parts = partition(labels, 100, "client_dirichlet", seed=3, dirichlet_alpha=alpha)
        _check_partition(parts, labels.size, 100, 1)
        sizes = [p.size for p in parts]
        assert max(sizes) - min(sizes) <= 1
        skew[alpha] = label_skew(describe(parts, labels, 5))
    iid = label_skew(describe(partition(labels, 100, "iid", seed=3), labels, 5))  # sampling noise
    assert skew[0.05] > skew[1.0] > skew[100.0]
    assert skew[0.05] > 0.6 and skew[100.0] < iid + 0.05, (skew, iid)


def test_quantity_cv_grows_with_sigma_labels_iid():
    labels = _labels()

    def cv(sigma):
        out = []
        for s in range(4):
            sizes = np.array([p.size for p in partition(labels, 20, "quantity", seed=s, quantity_sigma=sigma)])
            out.append(sizes.std() / sizes.mean())
        return np.mean(out)

    c0, c05, c15 = cv(0.0), cv(0.5), cv(1.5)
    assert c0 < 0.01 < c05 < c15
    parts = partition(labels, 20, "quantity", seed=0, quantity_sigma=1.5, min_per_client=3)
    assert min(p.size for p in parts) >= 3
    big = max(parts, key=len)
    hist = np.bincount(labels[big], minlength=5) / big.size
    assert np.abs(hist - np.bincount(labels) / labels.size).max() < 0.1


def test_describe_histogram():
    labels = np.array([0, 1, 1, 2, 2, 2])
    h = describe([np.array([0, 3]), np.array([1, 2, 4, 5])], labels, 4)
    np.testing.assert_array_equal(h, [[1, 0, 1, 0], [0, 2, 2, 0]])
    with pytest.raises(ValueError, match="num_classes"):
        describe([np.arange(6)], labels, 2)


def test_partition_errors():
    labels = _labels(n=50)
    with pytest.raises(ValueError, match=r"num_clients=51.*n=50"):
        partition(labels, 51, "iid")
    with pytest.raises(ValueError, match="num_clients must be >= 1"):
        partition(labels, 0, "iid")
    with pytest.raises(ValueError, match="alpha"):
        partition(labels, 5, "dirichlet", dirichlet_alpha=0.0)
    with pytest.raises(ValueError, match="alpha"):
        partition(labels, 5, "dirichlet", dirichlet_alpha=-1.0)
    with pytest.raises(ValueError, match=r"config\.data\.partition='shards' is not allowed: one of .*'dirichlet'.*'iid'.*'quantity'"):
        partition(labels, 5, "shards")
    with pytest.raises(ValueError, match="min_per_client"):
        partition(labels, 10, "quantity", min_per_client=6)
    with pytest.raises(ValueError, match="sigma"):
        partition(labels, 5, "quantity", quantity_sigma=-0.5)
    # an infeasible-in-practice dirichlet request fails with a bounded, explanatory error
    with pytest.raises(ValueError, match="max_retries=20"):
        partition(labels, 10, "dirichlet", dirichlet_alpha=0.01, min_per_client=5, max_retries=20)


def test_partition_from_config():
    labels = _labels(n=300)
    cfg = DataConfig.from_dict(
        {"partition": "dirichlet", "num_clients": 6, "dirichlet_alpha": 0.2, "split_seed": 4, "min_examples_per_client": 3}
    )
    parts = partition_from_config(labels, cfg)
    direct = partition(labels, 6, "dirichlet", seed=4, dirichlet_alpha=0.2, min_per_client=3)
    for a, b in zip(parts, direct):
        np.testing.assert_array_equal(a, b)

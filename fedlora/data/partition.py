"""Partitioning a (training) label array across simulated clients.

All methods are pure numpy functions of (labels, num_clients, method, seed, ...) using one
``np.random.default_rng(seed)``; each returns ``num_clients`` sorted int64 index arrays that are
disjoint and cover ``range(n)``; every client gets at least ``min_per_client`` examples.

* ``'iid'``: a random permutation of all indices cut into ``num_clients`` nearly equal parts
  (``np.array_split``: sizes differ by at most 1).
* ``'dirichlet'`` (label skew, Hsu et al. 2019, "Measuring the effects of non-identical data
  distribution"): for every class c draw proportions p_c ~ Dir(alpha * 1_C) over the clients,
  shuffle the class's indices and cut them at ``floor(cumsum(p_c) * n_c)``. Smaller alpha -> more
  skew (alpha -> inf approaches IID per class). The whole draw is repeated until every client has at
  least ``min_per_client`` examples; after ``max_retries`` failed draws a ValueError suggests larger
  alpha, fewer clients or a smaller minimum.
* ``'quantity'`` (quantity skew, labels IID): client weights w_k ~ LogNormal(0, sigma); every
  client first gets ``min_per_client`` examples and the remaining ``n - C * min_per_client`` are
  allocated proportionally to w (largest-remainder rounding), then a random permutation of all
  indices is cut into those sizes. sigma = 0 gives equal sizes (+-1); larger sigma, more skew.
* ``'client_dirichlet'`` (label skew at equal client sizes, the per-client form of Hsu et al. 2019):
  every client k draws its own label distribution q_k ~ Dir(alpha * C * p), p = the global class
  frequencies (Hsu et al.'s prior, scaled by the number of classes C so that balanced classes give
  the symmetric Dir(alpha * 1_C); large alpha approaches IID), and a size of n // C_clients
  (+1 for the first n % C_clients); clients (in random order) draw their examples class by class
  from multinomial(size, q_k) over the classes that still have unassigned examples; a class that runs
  out hands its excess to the client's other classes in proportion to q_k (uniformly if q_k puts no
  mass on them). Unlike 'dirichlet' it works for small alpha with many clients (every client gets
  exactly its size), e.g. alpha = 0.05 over 100 clients: most clients hold one class.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

METHODS = ("iid", "dirichlet", "quantity", "client_dirichlet")


def _validate(labels, num_clients, min_per_client) -> tuple[np.ndarray, int, int]:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got min {labels.min()}")
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise ValueError(f"num_clients must be an integer, got {num_clients!r}")
    if isinstance(min_per_client, bool) or not isinstance(min_per_client, (int, np.integer)):
        raise ValueError(f"min_per_client must be an integer, got {min_per_client!r}")
    num_clients, min_per_client = int(num_clients), int(min_per_client)
    n = labels.shape[0]
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > n:
        raise ValueError(f"num_clients={num_clients} exceeds the number of examples n={n}")
    if min_per_client < 1:
        raise ValueError(f"min_per_client must be >= 1, got {min_per_client}")
    if num_clients * min_per_client > n:
        raise ValueError(
            f"num_clients={num_clients} x min_per_client={min_per_client} = "
            f"{num_clients * min_per_client} exceeds the number of examples n={n}"
        )
    return labels, num_clients, min_per_client


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    exact = total * weights / weights.sum()
    sizes = np.floor(exact).astype(np.int64)
    rest = total - int(sizes.sum())
    if rest > 0:
        sizes[np.argsort(-(exact - sizes), kind="stable")[:rest]] += 1
    return sizes


def partition(
    labels,
    num_clients: int,
    method: str = "iid",
    *,
    seed: int = 0,
    alpha: float = 0.5,
    sigma: float = 1.0,
    min_per_client: int = 1,
    max_retries: int = 1000,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_clients`` index arrays; see the module doc."""
    if method not in METHODS:
        raise ValueError(f"unknown partition method {method!r}; allowed: {list(METHODS)}")
    labels, num_clients, min_per_client = _validate(labels, num_clients, min_per_client)
    n = labels.shape[0]
    rng = np.random.default_rng(seed)

    if method == "iid":
        parts = np.array_split(rng.permutation(n), num_clients)

    elif method == "quantity":
        sigma = float(sigma)
        if not np.isfinite(sigma) or sigma < 0:
            raise ValueError(f"quantity_sigma must be finite and >= 0, got {sigma!r}")
        weights = rng.lognormal(mean=0.0, sigma=sigma, size=num_clients)
        sizes = min_per_client + _largest_remainder(n - num_clients * min_per_client, weights)
        parts = np.split(rng.permutation(n), np.cumsum(sizes)[:-1])

    elif method == "client_dirichlet":
        alpha = float(alpha)
        if not np.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"dirichlet_alpha must be finite and > 0, got {alpha!r}")
        classes = np.unique(labels)
        pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
        prior = np.array([len(p) for p in pools], np.float64) / n
        sizes = np.full(num_clients, n // num_clients, np.int64)
        sizes[: n % num_clients] += 1
        parts = [None] * num_clients
        for k in rng.permutation(num_clients):
            q = rng.dirichlet(alpha * classes.size * prior)
            left = np.array([len(p) for p in pools], np.int64)
            want = rng.multinomial(sizes[k], q)
            take = np.minimum(want, left)
            short = int(sizes[k] - take.sum())
            while short > 0:  # exhausted classes: give the excess to the client's other classes
                room = left - take
                w = np.where(room > 0, q, 0.0)
                w = w if w.sum() > 0 else (room > 0).astype(np.float64)
                extra = np.minimum(_largest_remainder(short, w), room)
                take += extra
                short -= int(extra.sum())
            chunks = []
            for c in range(classes.size):
                chunks.append(np.asarray(pools[c][: take[c]], np.int64))
                del pools[c][: take[c]]
            parts[k] = np.concatenate(chunks)

    else:  # dirichlet
        alpha = float(alpha)
        if not np.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"dirichlet_alpha must be finite and > 0, got {alpha!r}")
        if max_retries < 1:
            raise ValueError(f"max_retries must be >= 1, got {max_retries}")
        classes = np.unique(labels)
        class_idx = [np.flatnonzero(labels == c) for c in classes]
        smallest = -1
        for _ in range(int(max_retries)):
            buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
            for idx in class_idx:
                idx = idx[rng.permutation(idx.shape[0])]
                p = rng.dirichlet(np.full(num_clients, alpha))
                cuts = (np.cumsum(p) * idx.shape[0]).astype(np.int64)[:-1]
                for k, chunk in enumerate(np.split(idx, cuts)):
                    buckets[k].append(chunk)
            parts = [np.concatenate(b) for b in buckets]
            sizes = np.array([p.shape[0] for p in parts])
            smallest = max(smallest, int(sizes.min()))
            if sizes.min() >= min_per_client:
                break
        else:
            raise ValueError(
                f"dirichlet partition: no draw in max_retries={max_retries} gave every one of "
                f"num_clients={num_clients} clients >= min_per_client={min_per_client} examples "
                f"(n={n}, alpha={alpha}, best smallest client: {smallest}); increase dirichlet_alpha, "
                "or reduce num_clients / min_examples_per_client"
            )

    return [np.sort(p).astype(np.int64) for p in parts]


def partition_from_config(labels, data_cfg: Any) -> list[np.ndarray]:
    """``partition`` with arguments taken from ``config.data`` (see fedlora.data.sources)."""
    from fedlora.data.sources import get_option

    seed = get_option(data_cfg, "partition_seed")
    if seed is None:
        seed = get_option(data_cfg, "split_seed")
    return partition(
        labels,
        get_option(data_cfg, "num_clients"),
        get_option(data_cfg, "partition"),
        seed=seed,
        alpha=get_option(data_cfg, "dirichlet_alpha"),
        sigma=get_option(data_cfg, "quantity_sigma"),
        min_per_client=get_option(data_cfg, "min_examples_per_client"),
    )


def describe(parts: Sequence[np.ndarray], labels, num_classes: int) -> np.ndarray:
    """Per-client label histograms: an int64 array [num_clients, num_classes]."""
    labels = np.asarray(labels)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"labels go up to {labels.max()} but num_classes={num_classes}")
    return np.stack(
        [np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=num_classes) for p in parts]
    ).astype(np.int64)


def label_skew(hist: np.ndarray) -> float:
    """Mean over clients of the total-variation distance between the client's label distribution
    and the global one (0 = IID-like, up to 1 - min_c p_c for single-class clients)."""
    hist = np.asarray(hist, dtype=np.float64)
    glob = hist.sum(0) / hist.sum()
    local = hist / np.maximum(hist.sum(1, keepdims=True), 1)
    return float(0.5 * np.abs(local - glob).sum(1).mean())

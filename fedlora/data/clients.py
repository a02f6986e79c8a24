"""Per-client data as fixed-shape stacked arrays, and jittable/vmappable batch sampling.

Layout (C clients, n_max = largest client, L = max_length): a dict of arrays, each `[C, n_max, ...]`,
whose keys are what the task's batch holds, plus the true client sizes::

    ClientData.arrays['input_ids']       [C, n_max, L] int32    (classification and causal_lm)
    ClientData.arrays['attention_mask']  [C, n_max, L] int32
    ClientData.arrays['labels']          [C, n_max]    int32    (classification)
    ClientData.arrays['loss_mask', 'position_ids']  [C, n_max, L]   (causal_lm)
    ClientData.num_examples              [C]           int32    (n_k, the client's true size)

`cd.input_ids` is `cd.arrays['input_ids']` (any array key reads as an attribute).

Client k's real examples are rows 0..n_k-1; rows n_k..n_max-1 are padding made by repeating the
client's own examples cyclically (row j holds example ``j % n_k``), so padding never mixes clients
and holds valid tokens. Padding rows are never sampled: ``sample_batches`` only returns row indices
< n_k.

Sampling scheme (``sample_client_batches``): the client's stream of T = steps * batch_size draws is
split into consecutive "epochs" of n_k draws; epoch e (draws e*n_k .. e*n_k+n_k-1) is a fresh
uniformly random permutation of range(n_k), independent across epochs. So within an epoch examples
are drawn without replacement and every example appears exactly once per epoch; an example can
repeat inside a batch only if that batch straddles an epoch boundary (always when n_k < batch_size).
Implementation: over L' = T + n_max virtual slots, slot s carries example ``s % n_k`` and epoch
``s // n_k``; one stable ``lax.sort`` keyed by (epoch, random uint32) shuffles within each epoch
while keeping epochs in order; the first T slots are the draws (L' >= T + n_k guarantees the epoch
containing the last draw is complete, so a partial last epoch is a uniformly random subset). Cost
O(L' log L') per client, shapes depend only on the static (n_max, batch_size, steps).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

ARRAY_KEYS = ("input_ids", "attention_mask", "labels")  # what a classification batch holds


@flax.struct.dataclass
class ClientData:
  arrays: dict  # key -> [C, n_max, ...]
  num_examples: Any  # [C] int32

  def __getattr__(self, name):
    if name != "arrays" and "arrays" in self.__dict__ and name in self.__dict__["arrays"]:
      return self.__dict__["arrays"][name]
    raise AttributeError(f"ClientData has no attribute or array {name!r}")

  @property
  def num_clients(self) -> int:
    return self.num_examples.shape[0]

  @property
  def n_max(self) -> int:
    return next(iter(self.arrays.values())).shape[1]


def _check_arrays(arrays: Mapping[str, Any], required: Sequence[str] = ("input_ids", "attention_mask")) -> int:
  missing = [k for k in required if k not in arrays]
  if missing:
    raise ValueError(f"arrays is missing {missing}; needs {list(required)}, has {sorted(arrays)}")
  first = next(iter(arrays))
  n = np.shape(arrays[first])[0]
  for k in arrays:
    if np.shape(arrays[k])[0] != n:
      raise ValueError(f"arrays[{k!r}] has {np.shape(arrays[k])[0]} rows, {first} has {n}")
  if np.shape(arrays["input_ids"]) != np.shape(arrays["attention_mask"]):
    raise ValueError(
        f"input_ids {np.shape(arrays['input_ids'])} and attention_mask "
        f"{np.shape(arrays['attention_mask'])} must have the same shape"
    )
  return n


def stack_clients(arrays: Mapping[str, Any], parts: Sequence[np.ndarray], n_max: int | None = None) -> ClientData:
  """Stack per-client rows of ``arrays`` (every key, e.g. from ``tokenize``; all with the same
  number of rows) into a ClientData of numpy int32 arrays ``[C, n_max, ...]``.

  ``n_max`` defaults to the largest client; a larger value pads further (e.g. fixed shapes across
  runs); a smaller one is an error (data is never dropped).
  """
  n = _check_arrays(arrays)
  if len(parts) < 1:
    raise ValueError("parts is empty: need at least one client")
  parts = [np.asarray(p, dtype=np.int64).reshape(-1) for p in parts]
  sizes = np.array([p.shape[0] for p in parts], dtype=np.int64)
  if sizes.min() < 1:
    raise ValueError(f"client(s) {np.flatnonzero(sizes == 0).tolist()} have no examples")
  for k, p in enumerate(parts):
    if p.min() < 0 or p.max() >= n:
      raise ValueError(f"client {k} has indices outside [0, {n}): min {p.min()}, max {p.max()}")
  biggest = int(sizes.max())
  n_max = biggest if n_max is None else int(n_max)
  if n_max < biggest:
    raise ValueError(f"n_max={n_max} is smaller than the largest client ({biggest} examples)")
  rows = np.arange(n_max)
  gather = np.stack([p[rows % p.shape[0]] for p in parts])  # [C, n_max], cyclic padding
  out = {k: np.asarray(arrays[k])[gather].astype(np.int32) for k in arrays}
  return ClientData(arrays=out, num_examples=sizes.astype(np.int32))


def stack_client_rows(per_client: Sequence[Mapping[str, np.ndarray]], n_max: int | None = None) -> ClientData:
  """ClientData from each client's own rows (e.g. packed sequences built per client): client k's
  arrays ``[n_k, ...]`` are cyclically padded to ``n_max`` rows exactly as ``stack_clients`` does."""
  if len(per_client) < 1:
    raise ValueError("per_client is empty: need at least one client")
  sizes = [_check_arrays(a) for a in per_client]
  offsets = np.cumsum([0] + sizes)
  joined = {k: np.concatenate([np.asarray(a[k]) for a in per_client]) for k in per_client[0]}
  parts = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(per_client))]
  return stack_clients(joined, parts, n_max)


def hosted_examples(parts: Sequence[np.ndarray], hosted: Sequence[int]) -> tuple[np.ndarray, list]:
  """The examples a process must tokenise for its hosted clients, and their parts re-indexed.

  parts: every client's example indices (the global partition, computed from labels only);
  hosted: `[H]` client ids. Returns ``(need [M], local_parts)``: the sorted union of the hosted
  clients' indices, and for each hosted client its indices into ``need`` (so
  ``stack_clients(rows_of(need), local_parts, n_max)`` gives exactly the hosted rows of the full
  ``stack_clients(rows_of(all), parts, n_max)``)."""
  mine = [np.asarray(parts[int(k)], np.int64) for k in hosted]
  need = np.unique(np.concatenate(mine)) if mine else np.zeros((0,), np.int64)
  return need, [np.searchsorted(need, p) for p in mine]


def repad_clients(cd: ClientData, n_max: int) -> ClientData:
  """The same clients with rows padded (cyclically, as ``stack_clients`` does) up to ``n_max``:
  arrays ``[C, n_max, ...]``; identical to stacking with ``n_max`` in the first place."""
  if n_max < cd.n_max:
    raise ValueError(f"n_max={n_max} is smaller than the clients' {cd.n_max} rows")
  if n_max == cd.n_max:
    return cd
  sizes = np.maximum(np.asarray(cd.num_examples, np.int64), 1)
  gather = np.arange(n_max)[None, :] % sizes[:, None]  # [C, n_max]
  rows = np.arange(sizes.shape[0])[:, None]
  return ClientData(arrays={k: np.asarray(v)[rows, gather] for k, v in cd.arrays.items()},
                    num_examples=cd.num_examples)


@functools.partial(jax.jit, static_argnames=("n_max", "batch_size", "steps"))
def sample_client_batches(key, n_k, n_max: int, batch_size: int, steps: int):
  """One client's row indices [steps, batch_size] int32, all in [0, n_k); see the module doc."""
  total = steps * batch_size
  n_k = jnp.maximum(jnp.asarray(n_k, jnp.int32), 1)
  slots = jnp.arange(total + n_max, dtype=jnp.int32)
  epoch = slots // n_k
  noise = jax.random.bits(key, slots.shape, dtype=jnp.uint32)
  _, _, order = jax.lax.sort((epoch, noise, slots), num_keys=2, is_stable=True)
  return (order[:total] % n_k).reshape(steps, batch_size).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("n_max", "batch_size", "steps"))
def sample_batches(key, num_examples, n_max: int, batch_size: int, steps: int):
  """Row indices [C, steps, batch_size] int32 with ``indices[c] < num_examples[c]``.

  Client c uses ``jax.random.split(key, C)[c]`` with ``sample_client_batches``; jittable and
  vmappable (e.g. over rounds or scenarios).
  """
  for name, v in (("n_max", n_max), ("batch_size", batch_size), ("steps", steps)):
    if v < 1:
      raise ValueError(f"{name} must be >= 1, got {v}")
  num_examples = jnp.asarray(num_examples, jnp.int32)
  keys = jax.random.split(key, num_examples.shape[0])
  return jax.vmap(sample_client_batches, in_axes=(0, 0, None, None, None))(
      keys, num_examples, n_max, batch_size, steps
  )


def gather_batches(client_data: ClientData, indices) -> dict[str, jax.Array]:
  """Gather rows per client: ``indices`` [C, *S] -> every array ``[C, *S, ...]`` (input_ids
  [C, *S, L], labels [C, *S], ...). With indices from ``sample_batches`` S = (steps, B); to save
  memory gather one step at a time with ``indices[:, s]`` (S = (B,))."""
  indices = jnp.asarray(indices)
  if indices.ndim < 1 or indices.shape[0] != client_data.num_clients:
    raise ValueError(
        f"indices must have leading dim num_clients={client_data.num_clients}, got shape {indices.shape}"
    )
  take = jax.vmap(lambda x, i: jnp.asarray(x)[i])
  return {k: take(v, indices) for k, v in client_data.arrays.items()}


class FederatedData(NamedTuple):
  clients: ClientData  # training data stacked per client
  test: dict  # tokenised held-out set: input_ids [n, L], attention_mask [n, L], labels [n]
  parts: list  # per-client indices into the training split
  label_names: list  # class names, id order
  histogram: np.ndarray  # [C, num_classes] per-client label counts
  hosted_examples: int = 0  # training examples tokenised by this process (all of them unless hosted)
  truncated: int = 0  # examples (train + test) longer than data.max_length tokens, cut to it


def prepare_federated_data(data_cfg: Any, tokenizer, ds=None, hosted=None) -> FederatedData:
  """Load (or take ``ds``) -> stratified split -> tokenize -> partition the train split -> stack.

  ``hosted`` (multi-process runs, `[H]` client ids, see fedlora.fed.sharding.hosted_clients): the
  partition is computed from the labels alone (the same on every process), then only the hosted
  clients' examples are tokenised; ``clients`` holds the hosted clients only (arrays
  ``[H, n_max, ...]``, n_max the largest client of ALL clients, ``num_examples [H]``) and
  ``hosted_examples`` is the number of training examples tokenised."""
  from fedlora.data.partition import describe, partition_from_config
  from fedlora.data.sources import load_dataset_from_config
  from fedlora.data.split import train_test_split
  from fedlora.data.tokenize import count_truncated, tokenize

  if ds is None:
    ds = load_dataset_from_config(data_cfg)
  names = list(ds.features["label"].names)
  train, test = train_test_split(ds, data_cfg.test_fraction, data_cfg.split_seed)
  warn_missing_classes(names, train["label"], test["label"])
  max_length = data_cfg.max_length
  if hosted is None:
    train_arr = tokenize(train, tokenizer, max_length)
    labels, tokenized = train_arr["labels"], len(train)
    parts = partition_from_config(labels, data_cfg)
    clients = stack_clients(train_arr, parts)
  else:  # labels only -> the global partition; tokenise the hosted clients' examples only
    labels = np.asarray(train["label"], dtype=np.int64).astype(np.int32)  # as tokenize makes them
    parts = partition_from_config(labels, data_cfg)
    need, local = hosted_examples(parts, hosted)
    clients = stack_clients(tokenize(train.select(need), tokenizer, max_length), local,
                            n_max=max(p.shape[0] for p in parts))
    tokenized = int(need.size)
  test_arr = tokenize(test, tokenizer, max_length)
  seen = list(test["text"]) + list(train["text"] if hosted is None else train.select(need)["text"])
  truncated = count_truncated(seen, tokenizer, max_length)  # of the examples tokenised here
  return FederatedData(
      clients=clients,
      test=test_arr,
      parts=parts,
      label_names=names,
      histogram=describe(parts, labels, len(names)),
      hosted_examples=tokenized,
      truncated=truncated,
  )


def warn_missing_classes(names: list, train_labels, test_labels) -> None:
  """Warns naming the classes with no example in the training or the test split (a class only in
  the test split can never be predicted; one only in training is never scored)."""
  from fedlora.run.errors import warn
  for split, labels in (("training", train_labels), ("test", test_labels)):
    absent = sorted(set(range(len(names))) - {int(x) for x in labels})
    if absent:
      warn(f"class(es) {[names[i] for i in absent]} have no example in the {split} split "
           f"(data.test_fraction, data.max_examples and the split seed decide it)")


def _groups(ds):
  """Each example's category (`data.category_column`), or None when the data has none."""
  return np.asarray(ds["category"]) if "category" in ds.column_names else None

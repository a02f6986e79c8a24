"""The task interface and its registry: the trainer wires the task named by `config.task.name`.

A task is one file in `fedlora/tasks/` defining `TASK = Task(...)`; the registry finds it by scanning
the package (adding a task touches that file and its test). `get_task(name)` raises naming the
registered ones.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, NamedTuple


class TaskData(NamedTuple):
  """What `Task.prepare_data` returns."""
  clients: Any        # fedlora.data.ClientData: arrays [C, n_max, ...] (the batch keys) + num_examples
  test: dict          # numpy held-out arrays the task's evaluation reads
  info: dict          # task-specific facts for the summary/metrics (label names, histogram, counts)


class Task(NamedTuple):
  """One learning task.

  name: registry name (`config.task.name`).
  head: the model head it needs ('classifier' or 'causal_lm'); a model family that cannot build it
    is a clear error before training.
  batch: what one client batch holds: key -> shape/dtype (leaves `[B, ...]`; `[E, B, ...]` per round).
  validate: (config) -> None; raises ConfigError naming bad task-specific keys.
  prepare_data: (config, tokenizer, hf_config dict, hosted=None) -> TaskData (source -> tokenised
    arrays -> clients). Multi-process runs pass `hosted` (`[H]` sorted client ids, see
    fedlora.fed.sharding.hosted_clients): the client partition is still computed for ALL clients
    (from labels/categories only, so every process gets the same one), but only the hosted clients'
    training examples are tokenised; `clients` then holds those H clients (arrays `[H, n_h, ...]`,
    `num_examples [H]`, in the order of `hosted`; the trainer pads rows to the global n_max) and
    `info['hosted_examples']` counts the training examples tokenised. Everything else (test split,
    histogram, label names) is the same as without `hosted`.
  model_kwargs: (config, TaskData) -> extra `load_pretrained` kwargs (e.g. num_labels, pooling).
  make_loss: (parts, config, penalty, penalty_weight) -> loss_fn(trainable, frozen, batch, key)
    -> (loss, aux) with aux holding at least 'ce' and 'acc' (per-client means are logged).
  make_eval: (parts, config, TaskData, tokenizer) -> evaluate(trainable, frozen, test) -> {metric: float}.
  headline: the eval metric printed and summarised as the run's result ('accuracy', 'loss').
  after_training: (exp, trainable) -> None; e.g. prints a few generations (may do nothing).
  """
  name: str
  head: str
  batch: dict
  validate: Callable
  prepare_data: Callable
  model_kwargs: Callable
  make_loss: Callable
  make_eval: Callable
  headline: str
  after_training: Callable


_REGISTRY: dict[str, Task] = {}


def tasks() -> dict[str, Task]:
  if not _REGISTRY:
    import fedlora.tasks as pkg
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
      t = getattr(importlib.import_module(f"fedlora.tasks.{info.name}"), "TASK", None)
      if isinstance(t, Task):
        if t.name in _REGISTRY:
          raise ValueError(f"task {t.name!r} is registered twice")
        _REGISTRY[t.name] = t
  return dict(_REGISTRY)


def task_name(config) -> str:
  """`config.task.name` ('classification' for a config without a `task` section)."""
  return config.task.name if "task" in config else "classification"


def get_task(name: str) -> Task:
  known = tasks()
  if name not in known:
    from fedlora.utils.validate import ConfigError
    raise ConfigError(f"config.task.name={name!r} is not allowed: one of {sorted(known)}")
  return known[name]


def nothing_after_training(exp, trainable) -> None:
  return None

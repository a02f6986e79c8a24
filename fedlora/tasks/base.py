"""The task interface and its registry: the trainer wires the task named by `config.task.name`.

A task is one file in `fedlora/tasks/` that registers its `Task(...)` with `TASKS` (its own keys, if
any, as an options section in the `task` section); adding a task touches that file and its test.
`get_task(name)` raises naming the registered ones. The `task` and `eval` sections are declared here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

from fedlora.registry import Registry
from fedlora.section import Section, is_int, is_num

TASKS = Registry("task", "fedlora.tasks", "task.name")


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
  validate: (config) -> None; raises ConfigError naming a key whose value this task cannot use
    (checked with the whole config, before any data is read).
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
  after_training: (parts, config, TaskData, tokenizer, trainable) -> None; e.g. prints a few
    generations (may do nothing).
  summarize: (evaluated records) -> {summary key: value}, the task's own summary metrics (the
    `final_test_*` / `best_test_*` keys of summary.json).
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
  summarize: Callable


def tasks() -> dict[str, Task]:
  return {n: e.obj for n, e in TASKS.entries().items()}


def get_task(name: str) -> Task:
  return TASKS.get(name).obj


@dataclasses.dataclass(frozen=True)
class TaskConfig(Section):
  """Section `task` (plus the keys each task declares, fedlora/tasks/<name>.py).

  name: registered task: 'classification' | 'causal_lm' (instruction tuning) | 'lm_classification'
        (classification as generation with a causal LM, docs/llm.md)
  """
  SECTION = "task"
  COMPONENTS = staticmethod(lambda: TASKS)
  name: str = "classification"

  def check(self) -> None:
    TASKS.get(self.name)


@dataclasses.dataclass(frozen=True)
class EvalConfig(Section):
  """Section `eval` (each task evaluates with its own `make_eval`).

  every:          evaluate on the test split every n rounds (and always after the last)
  batch_size:     examples per evaluation forward pass
  max_new_tokens: causal LM: greedy tokens for exact match on short answers (0 = skip exact match)
  print_samples:  causal LM: held-out prompts printed with their generation after training (0 = none)
  temperature:    causal LM: sampling temperature of the printed samples (0 = greedy)
  zero_shot:      evaluate the model before round 1 (the pretrained model: LoRA's B starts at 0) and
                  record it as round 0 (summary.json: zero_shot_test_*)
  """
  SECTION = "eval"
  every: int = 5
  batch_size: int = 64
  max_new_tokens: int = 32
  print_samples: int = 3
  temperature: float = 0.0
  zero_shot: bool = False

  def check(self) -> None:
    self.need(isinstance(self.zero_shot, bool), "zero_shot", "True or False")
    for k, lo in (("every", 1), ("batch_size", 1), ("max_new_tokens", 0), ("print_samples", 0)):
      self.need(is_int(getattr(self, k)) and getattr(self, k) >= lo, k, f"an integer >= {lo}")
    self.need(is_num(self.temperature) and self.temperature >= 0, "temperature", ">= 0 (0 = greedy)")


def headline_summary(headline: str):
  """`summarize` of a task that reports only its headline metric (final and best)."""
  def summarize(records: list) -> dict:
    key = f"test_{headline}"
    vals = [r[key] for r in records if key in r]
    return {f"final_{key}": vals[-1] if vals else None}
  return summarize


def nothing_after_training(parts, config, data, tokenizer, trainable) -> None:
  return None

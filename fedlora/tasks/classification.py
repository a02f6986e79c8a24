"""Sequence classification: cross-entropy loss (+ optional SOFT orthogonality penalty) and evaluation."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedlora.lora.split import ModelParts
from fedlora.tasks.base import TASKS, Task, TaskData, nothing_after_training
from fedlora.tasks.label_skew import make_logit_adjust
from fedlora.tasks.skew_metrics import confusion_counts


def make_loss(parts: ModelParts, penalty: Callable | None = None, penalty_weight: float = 0.0,
              logit_adjust: Callable | None = None):
  """`loss_fn(trainable, frozen, batch, key) -> (loss, {'ce', 'acc'})`.

  batch: `input_ids [B, L]`, `attention_mask [B, L]`, `labels [B]` (+ `label_counts [C]` with
  `logit_adjust`).
  penalty: optional `trainable -> scalar` (SOFT's near-orthogonality regulariser) times its weight.
  logit_adjust: optional `(logits, label_counts) -> logits` for the training cross-entropy only
  (fedlora/tasks/label_skew.py: FedLC / FedRS); 'acc' is on the raw logits.
  """
  def loss_fn(trainable, frozen, batch, key):
    logits = parts.module(trainable, frozen)(batch["input_ids"], batch["attention_mask"], key=key)
    logits = logits.astype(jnp.float32)  # loss in float32 whatever model.compute_dtype is
    train_logits = logits if logit_adjust is None else logit_adjust(logits, batch["label_counts"])
    ce = optax.softmax_cross_entropy_with_integer_labels(train_logits, batch["labels"]).mean()
    acc = (logits.argmax(-1) == batch["labels"]).mean()
    loss = ce
    if penalty is not None and penalty_weight > 0:
      loss = loss + penalty_weight * penalty(trainable)
    return loss, {"ce": ce, "acc": acc}
  return loss_fn


def make_eval(parts: ModelParts, batch_size: int):
  """`evaluate(trainable, frozen, arrays) -> {'accuracy', 'loss', 'confusion' [C, C]}` over a split
  (confusion[true, predicted] counts; fedlora/tasks/skew_metrics.py derives the skew metrics).

  arrays: numpy `input_ids [n, L]`, `attention_mask [n, L]`, `labels [n]`; padded on the host to a
  multiple of `batch_size` (padding rows get weight 0) and scanned in one jitted call.
  """
  @jax.jit
  def _eval(trainable, frozen, ids, mask, labels, weight):
    def one(_, b):
      logits = parts.module(trainable, frozen)(b[0], b[1]).astype(jnp.float32)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, b[2])
      correct = (logits.argmax(-1) == b[2]).astype(jnp.float32)
      conf = confusion_counts(b[2], logits.argmax(-1), b[3], logits.shape[-1])
      return None, ((correct * b[3]).sum(), (ce * b[3]).sum(), conf)
    _, (c, l, conf) = jax.lax.scan(one, None, (ids, mask, labels, weight))
    n = weight.sum()
    return {"accuracy": c.sum() / n, "loss": l.sum() / n, "confusion": conf.sum(0)}

  def evaluate(trainable, frozen, arrays):
    n = arrays["labels"].shape[0]
    nb = -(-n // batch_size)
    pad = nb * batch_size - n

    def prep(x):
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
      return x.reshape((nb, batch_size) + x.shape[1:])
    weight = prep(np.ones((n,), np.float32))
    out = _eval(trainable, frozen, prep(arrays["input_ids"]), prep(arrays["attention_mask"]),
                prep(arrays["labels"]), weight)
    return {k: (np.asarray(v) if k == "confusion" else float(v)) for k, v in out.items()}
  return evaluate


# ---- the task declaration (see fedlora.tasks.base) -----------------------------------------------------

def validate_config(c) -> None:
  """Classification reads labelled text: the source must give text and labels (every source does)."""


def prepare_data(config, tokenizer, hf_config, hosted=None):
  """Dataset (with the optional stratified `data.max_examples` subset) -> split -> tokenise -> clients
  (`hosted`: only those clients' examples are tokenised and stacked, see fedlora.tasks.base)."""
  from fedlora.data.clients import prepare_federated_data
  from fedlora.data.sources import load_dataset_with_report
  from fedlora.data.split import split_indices
  ds, dropped = load_dataset_with_report(config.data)
  if config.data.max_examples and config.data.max_examples < len(ds):
    labels = np.asarray(ds["label"])
    _, keep = split_indices(labels, config.data.max_examples / len(ds), config.data.split_seed)
    ds = ds.select(np.sort(keep))
  fd = prepare_federated_data(config.data, tokenizer, ds=ds, hosted=hosted)
  return TaskData(fd.clients, fd.test, {"label_names": fd.label_names, "histogram": fd.histogram,
                                        "parts": fd.parts, "data_dropped": dropped,
                                        "stats": {"examples": len(ds), "truncated_examples": fd.truncated},
                                        **({} if hosted is None else
                                           {"hosted_examples": fd.hosted_examples})})


def make_task_eval(parts, config, data, tokenizer):
  """`evaluate(trainable, frozen, test)`: accuracy, loss and, from the confusion matrix and the
  clients' label histogram, the skew metrics (fedlora/tasks/skew_metrics.py)."""
  from fedlora.tasks.skew_metrics import skew_metrics
  evaluate = make_eval(parts, config.eval.batch_size)
  histogram = data.info.get("histogram")

  def run(trainable, frozen, test):
    out = evaluate(trainable, frozen, test)
    conf = out.pop("confusion")
    if histogram is not None:
      out.update(skew_metrics(conf, histogram))
    return out
  return run


SUMMARY_KEYS = ("balanced_accuracy", "macro_f1", "client_accuracy_mean", "client_accuracy_worst10")


def summarize(records: list) -> dict:
  """Final and best test accuracy, and the final skew metrics, of the evaluated rounds."""
  final = [r for r in records if "test_accuracy" in r]
  return {
      "final_test_accuracy": final[-1]["test_accuracy"] if final else None,
      "best_test_accuracy": max(r["test_accuracy"] for r in final) if final else None,
      **{f"final_test_{k}": final[-1].get(f"test_{k}") if final else None for k in SUMMARY_KEYS},
      "best_test_balanced_accuracy": max((r.get("test_balanced_accuracy", 0.0) for r in final),
                                         default=None)}


TASKS.register("classification")(Task(
    name="classification", head="classifier",
    batch={"input_ids": "[B, L] int32", "attention_mask": "[B, L] int32 (1 = token, 0 = pad)",
           "labels": "[B] int32"},
    validate=validate_config, prepare_data=prepare_data,
    model_kwargs=lambda config, data: {"num_labels": len(data.info["label_names"]),
                                       "pooling": config.model.pooling},
    make_loss=lambda parts, config, penalty, weight: make_loss(
        parts, penalty, weight, make_logit_adjust(config.client)),
    make_eval=make_task_eval, headline="accuracy", after_training=nothing_after_training,
    summarize=summarize))

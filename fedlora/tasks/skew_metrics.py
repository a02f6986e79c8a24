"""Evaluation that shows label skew: balanced accuracy, macro-F1 and per-client accuracy, all from the
global test confusion matrix `confusion [C, C]` (rows = true class, columns = predicted class).

* balanced accuracy = mean over classes present in the test set of the recall r_c = conf[c, c] / Σ_j conf[c, j]
* macro-F1 = mean over those classes of 2·P_c·R_c / (P_c + R_c)  (P_c = conf[c, c] / Σ_i conf[i, c];
  F1_c = 0 when P_c + R_c = 0)
* per-client accuracy on the client's own label distribution (ours): client k's expected accuracy
  if its test examples followed its training label histogram h_k, i.e. Σ_c (h_kc / Σ h_k)·r_c;
  reported as the mean over clients and the "worst decile" = the mean over the ceil(N/10) clients
  with the lowest values (a client that holds mostly a class the global model misses shows up here).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def confusion_counts(labels, preds, weight, num_classes: int) -> jax.Array:
  """`[C, C]` float32 weighted counts of (true, predicted) pairs; labels/preds/weight `[B]`."""
  t = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * weight[:, None]
  p = jax.nn.one_hot(preds, num_classes, dtype=jnp.float32)
  return t.T @ p


def per_class_recall(confusion) -> np.ndarray:
  """`[C]` recall per class (NaN for a class absent from the test set)."""
  conf = np.asarray(confusion, np.float64)
  support = conf.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(support > 0, np.diag(conf) / support, np.nan)


def skew_metrics(confusion, histogram) -> dict:
  """{'balanced_accuracy', 'macro_f1', 'client_accuracy_mean', 'client_accuracy_worst10'} from the
  test confusion matrix `[C, C]` and the clients' training label histograms `[N, C]`."""
  conf = np.asarray(confusion, np.float64)
  present = conf.sum(1) > 0
  recall = per_class_recall(conf)
  pred_tot = conf.sum(0)
  tp = np.diag(conf)
  with np.errstate(invalid="ignore", divide="ignore"):
    precision = np.where(pred_tot > 0, tp / pred_tot, 0.0)
    rec0 = np.nan_to_num(recall)
    f1 = np.where(precision + rec0 > 0, 2 * precision * rec0 / (precision + rec0), 0.0)
  hist = np.asarray(histogram, np.float64)
  # classes a client holds but the test set lacks carry no information: renormalise over present ones
  h = hist * present[None, :]
  h = h / np.maximum(h.sum(1, keepdims=True), 1e-12)
  client_acc = h @ np.nan_to_num(recall)
  worst = np.sort(client_acc)[:max(1, math.ceil(len(client_acc) / 10))]
  return {"balanced_accuracy": float(recall[present].mean()),
          "macro_f1": float(f1[present].mean()),
          "client_accuracy_mean": float(client_acc.mean()),
          "client_accuracy_worst10": float(worst.mean())}

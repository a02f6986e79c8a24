"""Label-skew-aware client losses for classification: logit adjustments by the client's label counts.

`make_logit_adjust(cfg) -> adjust(logits [B, C], counts [C]) -> logits [B, C]` or None ('none'). The
classification loss applies it to the TRAINING logits only (cross-entropy on the adjusted logits;
accuracy and evaluation use the raw logits). `counts` is the client's label histogram over its
whole local data set (`client_label_counts`, computed inside the jitted round from the stacked client
arrays and carried in the batch as `label_counts`).

* 'fedlc' — logit calibration, Zhang et al. 2022 ("Federated Learning with Label Distribution Skew
  via Logits Calibration", ICML), eq. 8 and their reference code: the loss is the cross-entropy of
  the calibrated logits  z_c − τ·n_c^{-1/4}  (n_c = the client's count of class c), i.e. rare local
  classes are pushed down during training so the model must raise them, and the classifier stops
  over-predicting the client's majority classes. A class the client does not hold has n_c = 0, so
  n_c^{-1/4} = ∞ and the class drops out of the softmax (as in their code, where the calibration of an
  absent class is exp(−∞) = 0); here that is a finite −1e9, so gradients stay finite.
  Key: `client.fedlc_tau` (τ ≥ 0; 0 = plain cross-entropy except for the absent-class exclusion).
* 'fedrs' — restricted softmax, Li & Zhan 2021 ("FedRS: Federated Learning with Restricted Softmax
  for Label Distribution Non-IID Data", KDD): the logits of classes the client does not hold are
  scaled by α ∈ [0, 1] (α = 1: plain cross-entropy), which limits the update of those classes'
  weights on clients that never see them. Key: `client.fedrs_alpha`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

KINDS = ("none", "fedlc", "fedrs")
ABSENT = -1e9  # fedlc: calibrated logit of a class the client does not hold (n_c^{-1/4} = inf)


def client_label_counts(labels, num_examples, num_classes: int) -> jax.Array:
  """`[K, C]` float32 label histograms of stacked client data: `labels [K, n_max]` (rows >= n_k are
  padding and not counted), `num_examples [K]`."""
  valid = jnp.arange(labels.shape[1])[None, :] < num_examples[:, None]
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return (onehot * valid[..., None]).sum(1)


def fedlc(logits, counts, tau: float):
  """`z_c − τ·n_c^{-1/4}` for held classes, −1e9 for classes with n_c = 0. logits `[B, C]`, counts `[C]`."""
  held = counts > 0
  cal = tau * jnp.power(jnp.where(held, counts, 1.0), -0.25)
  return jnp.where(held, logits - cal, ABSENT).astype(logits.dtype)


def fedrs(logits, counts, alpha: float):
  """Logits of classes with n_c = 0 scaled by α. logits `[B, C]`, counts `[C]`."""
  return (logits * jnp.where(counts > 0, 1.0, alpha)).astype(logits.dtype)


def make_logit_adjust(cfg) -> Callable | None:
  """The adjustment of `cfg.logit_adjust` (section `client`, checked there), or None for 'none'."""
  if cfg.logit_adjust == "fedlc":
    tau = float(cfg.fedlc_tau)
    return lambda logits, counts: fedlc(logits, counts, tau)
  if cfg.logit_adjust == "fedrs":
    alpha = float(cfg.fedrs_alpha)
    return lambda logits, counts: fedrs(logits, counts, alpha)
  return None

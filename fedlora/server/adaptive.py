"""The adaptive server optimisers' shared arithmetic (FedAdagrad / FedAdam / FedYogi), exactly as
Algorithm 2 of Reddi et al. 2021 ("Adaptive Federated Optimization"), with g = -Δ̄ the pseudo-gradient:

  m <- β1·m + (1 - β1)·g
  v <- v + g²                                       (adagrad)
  v <- β2·v + (1 - β2)·g²                           (adam)
  v <- v - (1 - β2)·g²·sign(v - g²)                 (yogi)
  direction = m / (sqrt(v) + τ),    global <- global - lr·direction

v starts at τ² (the paper's v_{-1} ≥ τ²) and m at 0; no bias correction (as in the paper). The state
is the NamedTuple below (part of the run state, so it is checkpointed and resumes exactly).
Each optimiser file (fedadagrad.py, fedadam.py, fedyogi.py) validates its keys and calls `scale_by_fedopt`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedlora.server.base import cfg_get, check_float

KINDS = ("adagrad", "adam", "yogi")


class FedOptState(NamedTuple):
  m: Any  # first moment, trainable-tree structure
  v: Any  # second moment, trainable-tree structure


def scale_by_fedopt(kind: str, b1: float, b2: float, tau: float) -> optax.GradientTransformation:
  if kind not in KINDS:
    raise ValueError(f"unknown adaptive server optimiser {kind!r}: one of {KINDS}")

  def init(params):
    return FedOptState(jax.tree_util.tree_map(jnp.zeros_like, params),
                       jax.tree_util.tree_map(lambda p: jnp.full_like(p, tau * tau), params))

  def second(v, g):
    g2 = g * g
    if kind == "adagrad":
      return v + g2
    if kind == "adam":
      return b2 * v + (1.0 - b2) * g2
    return v - (1.0 - b2) * g2 * jnp.sign(v - g2)

  def update(grads, state, params=None):
    m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, state.m, grads)
    v = jax.tree_util.tree_map(second, state.v, grads)
    d = jax.tree_util.tree_map(lambda m, v: m / (jnp.sqrt(v) + tau), m, v)
    return d, FedOptState(m, v)

  return optax.GradientTransformation(init, update)


def build_adaptive(kind: str, cfg, defaults: dict) -> optax.GradientTransformation:
  b1 = check_float("b1", cfg_get(cfg, "b1", defaults["b1"]), 0.0, 1.0, hi_open=True)
  b2 = check_float("b2", cfg_get(cfg, "b2", defaults["b2"]), 0.0, 1.0, hi_open=True)
  tau = check_float("tau", cfg_get(cfg, "tau", defaults["tau"]), 0.0, lo_open=True)
  return scale_by_fedopt(kind, b1, b2, tau)

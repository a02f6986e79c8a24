"""The adaptive server optimisers' shared part (FedAdagrad / FedAdam / FedYogi), exactly as Algorithm 2
of Reddi et al. 2021 ("Adaptive Federated Optimization"), with g = -Δ̄ the pseudo-gradient:

  m <- β1·m + (1 - β1)·g
  v <- second_moment(v, g², β2)                     (each optimiser file's own rule)
  direction = m / (sqrt(v) + τ),    global <- global - lr·direction

v starts at τ² (the paper's v_{-1} ≥ τ²) and m at 0; no bias correction (as in the paper). The state
is the NamedTuple below (part of the run state, so it is checkpointed and resumes exactly).

Keys (section `server`) of every adaptive optimiser, validated here (each file lists its DEFAULTS):
  b1   first-moment decay β1 in [0, 1) (0 = no server momentum)
  b2   second-moment decay β2 in [0, 1)
  tau  adaptivity τ > 0 (the paper's ε; v starts at τ²)
Typical server lr: 1e-2 … 1e-1 (the step is ~lr per coordinate, unlike fedavg's lr·Δ̄).

An optimiser file (fedadagrad.py, fedadam.py, fedyogi.py) holds its DEFAULTS and its
`second_moment(v, g2, b2)` on one leaf, and sets `build = adaptive_build(second_moment, DEFAULTS)`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedlora.server.base import cfg_get, check_float


class FedOptState(NamedTuple):
  m: Any  # first moment, trainable-tree structure
  v: Any  # second moment, trainable-tree structure


def scale_by_fedopt(second_moment: Callable, b1: float, b2: float,
                    tau: float) -> optax.GradientTransformation:
  """The direction m / (sqrt(v) + τ); `second_moment(v, g2, b2) -> v` on one leaf (v, g2 same shape)."""

  def init(params):
    return FedOptState(jax.tree_util.tree_map(jnp.zeros_like, params),
                       jax.tree_util.tree_map(lambda p: jnp.full_like(p, tau * tau), params))

  def update(grads, state, params=None):
    m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, state.m, grads)
    v = jax.tree_util.tree_map(lambda v, g: second_moment(v, g * g, b2), state.v, grads)
    d = jax.tree_util.tree_map(lambda m, v: m / (jnp.sqrt(v) + tau), m, v)
    return d, FedOptState(m, v)

  return optax.GradientTransformation(init, update)


def adaptive_build(second_moment: Callable, defaults: dict) -> Callable:
  """The `build(cfg) -> optax.GradientTransformation` of an adaptive optimiser file: validates
  b1, b2, tau (ValueError naming the key, the value and the allowed range)."""

  def build(cfg) -> optax.GradientTransformation:
    b1 = check_float("b1", cfg_get(cfg, "b1", defaults["b1"]), 0.0, 1.0, hi_open=True)
    b2 = check_float("b2", cfg_get(cfg, "b2", defaults["b2"]), 0.0, 1.0, hi_open=True)
    tau = check_float("tau", cfg_get(cfg, "tau", defaults["tau"]), 0.0, lo_open=True)
    return scale_by_fedopt(second_moment, b1, b2, tau)

  return build

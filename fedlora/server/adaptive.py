"""The adaptive server optimisers' shared part (FedAdagrad / FedAdam / FedYogi), exactly as Algorithm 2
of Reddi et al. 2021 ("Adaptive Federated Optimization"), with g = -Δ̄ the pseudo-gradient:

  m <- β1·m + (1 - β1)·g
  v <- second_moment(v, g², β2)                     (each optimiser file's own rule)
  direction = m / (sqrt(v) + τ),    global <- global - lr·direction

v starts at τ² (the paper's v_{-1} ≥ τ²) and m at 0; no bias correction (as in the paper). The state
is the NamedTuple below (part of the run state, so it is checkpointed and resumes exactly).

Keys (section `server`) of every adaptive optimiser: `Options` below. Typical server lr: 1e-2 … 1e-1
(the step is ~lr per coordinate, unlike fedavg's lr·Δ̄). An optimiser file (fedadagrad.py,
fedadam.py, fedyogi.py) holds its `second_moment(v, g2, b2)` on one leaf and registers
`adaptive_build(second_moment)` with these `Options`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedlora.section import Section, is_num


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of the adaptive optimisers 'fedadagrad' (b1, tau), 'fedadam' and 'fedyogi' (section `server`).

  b1:  first-moment decay β1 in [0, 1) (0 = no server momentum)
  b2:  second-moment decay β2 in [0, 1) (fedadam, fedyogi)
  tau: adaptivity τ > 0 (the paper's ε; v starts at τ²)
  """
  SECTION = "server"
  b1: float = 0.9
  b2: float = 0.99
  tau: float = 1e-3

  def check(self) -> None:
    for k in ("b1", "b2"):
      self.need(is_num(getattr(self, k)) and 0.0 <= getattr(self, k) < 1.0, k, "a number >= 0.0 and < 1.0")
    self.need(is_num(self.tau) and self.tau > 0, "tau", "a number > 0.0")


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


def adaptive_build(second_moment: Callable) -> Callable:
  """The `build(section) -> optax.GradientTransformation` of an adaptive optimiser file."""
  def build(section) -> optax.GradientTransformation:
    return scale_by_fedopt(second_moment, float(section.b1), float(section.b2), float(section.tau))
  return build

"""The server optimiser interface: an optax transformation applied to the aggregated update.

The server treats the (data-size weighted) mean client update as a pseudo-gradient (Reddi et al.
2021, "Adaptive Federated Optimization"): `grad = -mean_delta`, `direction, opt = tx.update(grad,
opt)`, `global <- global - lr_t * direction` with `lr_t = server.lr * schedule(t)` for the 1-based
round t. Each optimiser file provides `tx` (an `optax.GradientTransformation` WITHOUT the learning
rate, so the round-level schedule is applied here as a traced scalar); FedAvg is the identity, so
`fedavg` at lr 1 is plain FedAvg and at lr η is FedAvg with a server step size η.

A round in which no upload arrives (every weight 0) leaves the global model AND the optimiser state
unchanged (no server step; the schedule still follows the round number).

Config section `server` (keys shared by all optimisers; each optimiser file lists its own):
  name              'fedavg'     one of fedlora.server.NAMES
  lr                1.0          server learning rate η (> 0)
  lr_schedule       'constant'   'constant' | 'warmup' | 'cosine' over rounds (fedlora.fed.schedule)
  lr_warmup_rounds  0            linear warm-up rounds
  lr_final_fraction 0.0          cosine: lr at the last round as a fraction of `lr`
  mean              'all'        how the client updates are averaged (fedlora/fed/aggregate.py):
                                 'all' = FedAvg, Σ w_c Δ_c / Σ w_c over the delivered uploads;
                                 'senders' = per coordinate over the uploads that carry it (a
                                 sparsified entry is not shrunk by the clients that dropped it; ours)
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedlora.fed.aggregate import MEANS, weighted_mean
from fedlora.fed.schedule import round_schedule, validate_schedule

SHARED_DEFAULTS = {"name": "fedavg", "lr": 1.0, "lr_schedule": "constant", "lr_warmup_rounds": 0,
                   "lr_final_fraction": 0.0, "mean": "all"}


class ServerOptimizer(NamedTuple):
  init: Callable    # (trainable) -> opt state (a PyTree of arrays; part of the run state/checkpoint)
  update: Callable  # (opt_state, global, mean_delta, t, active) -> (new global, new opt_state)
  lr: Callable      # t -> float32 learning rate of round t
  mean: Callable = weighted_mean  # (deltas [K, ...], weights [K]) -> the aggregated update


def cfg_get(cfg, key, default):
  """`cfg[key]` for a ConfigDict / dict section, `default` when absent or cfg is None."""
  if cfg is None:
    return default
  try:
    v = cfg[key]
  except (KeyError, AttributeError):
    return default
  return default if v is None else v


def check_float(key: str, value, lo: float, hi: float | None = None, lo_open: bool = False,
                hi_open: bool = False) -> float:
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  if ok:
    ok = (value > lo if lo_open else value >= lo) and (
        hi is None or (value < hi if hi_open else value <= hi))
  if not ok:
    lo_s = f"{'>' if lo_open else '>='} {lo}"
    hi_s = "" if hi is None else f" and {'<' if hi_open else '<='} {hi}"
    raise ValueError(f"config.server.{key}={value!r} is not allowed: a number {lo_s}{hi_s}")
  return float(value)


def make_server_optimizer(tx: optax.GradientTransformation, cfg, total_rounds: int) -> ServerOptimizer:
  """Wraps the direction transformation `tx` with the server lr and its round schedule."""
  lr0 = check_float("lr", cfg_get(cfg, "lr", SHARED_DEFAULTS["lr"]), 0.0, lo_open=True)
  kind = cfg_get(cfg, "lr_schedule", SHARED_DEFAULTS["lr_schedule"])
  warm = cfg_get(cfg, "lr_warmup_rounds", SHARED_DEFAULTS["lr_warmup_rounds"])
  final = cfg_get(cfg, "lr_final_fraction", SHARED_DEFAULTS["lr_final_fraction"])
  validate_schedule("server", kind, warm, final)
  mean_name = cfg_get(cfg, "mean", SHARED_DEFAULTS["mean"])
  if mean_name not in MEANS:
    raise ValueError(f"config.server.mean={mean_name!r} is not allowed: one of {tuple(MEANS)}")
  sched = round_schedule(kind, warm, total_rounds, final)

  def lr(t):
    return lr0 * sched(t)

  def update(opt_state, params, mean_delta, t, active):
    grad = jax.tree_util.tree_map(jnp.negative, mean_delta)
    direction, new_state = tx.update(grad, opt_state, params)
    step = lr(t)
    new_params = jax.tree_util.tree_map(lambda p, d: (p - step * d).astype(p.dtype), params, direction)
    keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
    return (jax.tree_util.tree_map(keep, new_params, params),
            jax.tree_util.tree_map(keep, new_state, opt_state))

  return ServerOptimizer(tx.init, update, lr, MEANS[mean_name])

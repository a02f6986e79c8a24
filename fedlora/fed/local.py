"""Local training of one client: E optimizer steps on its LoRA/head, as one `lax.scan`.

`make_local_update` returns a pure function of ONE client; the round vmaps it over clients, and the
test-only Python-loop reference calls it client by client, so both run the same arithmetic.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def make_local_update(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
  """Builds `local_update(trainable, frozen, batches, key) -> (new_trainable, metrics)`.

  Args:
    loss_fn: `(trainable, frozen, batch, key) -> (loss, aux_dict)`; batch leaves `[B, ...]`.
    optimizer: optax transformation; its state starts fresh each round (FedAvg convention).
  The returned function takes `batches` with leaves `[steps, B, ...]` and returns the trained tree
  and `{'loss': mean loss over steps, 'first_loss': loss of the first step, ...aux means}`.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def local_update(trainable, frozen, batches, key):
    opt_state = optimizer.init(trainable)
    steps = jax.tree_util.tree_leaves(batches)[0].shape[0]
    keys = jax.random.split(key, steps)

    def step(carry, inp):
      params, opt_state = carry
      batch, k = inp
      (loss, aux), grads = grad_fn(params, frozen, batch, k)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state), (loss, aux)

    (params, _), (losses, auxs) = jax.lax.scan(step, (trainable, opt_state), (batches, keys))
    metrics = {"loss": losses.mean(), "first_loss": losses[0]}
    metrics.update({k: v.mean() for k, v in auxs.items()})
    return params, metrics

  return local_update


def make_optimizer(optim_cfg, labels=None) -> optax.GradientTransformation:
  """Client optimizer from `config.optim`; leaves labelled 'freeze' get zero updates (FFA-LoRA)."""
  name = optim_cfg.name
  if name == "adamw":
    opt = optax.adamw(optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
  elif name == "sgd":
    opt = optax.sgd(optim_cfg.lr, momentum=optim_cfg.momentum or None)
  else:
    raise ValueError(f"optim.name={name!r}: allowed values are ('adamw', 'sgd')")
  if optim_cfg.grad_clip and optim_cfg.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(optim_cfg.grad_clip), opt)
  if labels is not None:
    opt = optax.multi_transform({"train": opt, "freeze": optax.set_to_zero()}, labels)
  return opt

"""Local training of one client: E optimizer steps on its LoRA/head, as one `lax.scan`.

`make_local_update` returns a pure function of ONE client; the round vmaps it over clients, and the
test-only Python-loop reference calls it client by client, so both run the same arithmetic.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def make_local_update(loss_fn: Callable, optimizer: optax.GradientTransformation,
                      correct: Callable | None = None, track_grads: bool = False) -> Callable:
  """Builds `local_update(trainable, frozen, batches, key, lr_scale=1.0, anchor=None, mask=None)
  -> (new_trainable, metrics, grad_mean)`.

  Args:
    loss_fn: `(trainable, frozen, batch, key) -> (loss, aux_dict)`; batch leaves `[B, ...]`.
    optimizer: optax transformation; its state starts fresh each round (FedAvg convention).
    correct: optional `(grads, params, anchor) -> grads` applied before the optimizer at every step
      (drift control, fedlora/fed/drift.py); `anchor` is passed through from the call.
    track_grads: also return the mean over steps of the raw (uncorrected) gradients (SCAFFOLD),
      else `grad_mean` is None.
  The returned function takes `batches` with leaves `[steps, B, ...]`; `lr_scale` (a traced
  scalar: the round's client learning-rate schedule) multiplies every optimizer update, i.e. the
  learning rate of AdamW/SGD. `mask` (a tree broadcasting against `trainable`, e.g. a client's rank
  mask, fedlora/lora/hetrank.py) multiplies every gradient (before the correction) and every
  optimizer update, so entries where it is 0 keep their value and get zero gradient. Returns the trained tree, `{'loss': mean loss over steps,
  'first_loss': loss of the first step, ...aux means}` and `grad_mean`.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def local_update(trainable, frozen, batches, key, lr_scale=1.0, anchor=None, mask=None):
    opt_state = optimizer.init(trainable)
    steps = jax.tree_util.tree_leaves(batches)[0].shape[0]
    keys = jax.random.split(key, steps)
    gsum0 = jax.tree_util.tree_map(jnp.zeros_like, trainable) if track_grads else None

    def step(carry, inp):
      params, opt_state, gsum = carry
      batch, k = inp
      (loss, aux), grads = grad_fn(params, frozen, batch, k)
      if mask is not None:
        grads = jax.tree_util.tree_map(lambda g, m: (g * m).astype(g.dtype), grads, mask)
      if track_grads:
        gsum = jax.tree_util.tree_map(jnp.add, gsum, grads)
      if correct is not None:
        grads = correct(grads, params, anchor)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      updates = jax.tree_util.tree_map(lambda u: (u * lr_scale).astype(u.dtype), updates)
      if mask is not None:
        updates = jax.tree_util.tree_map(lambda u, m: (u * m).astype(u.dtype), updates, mask)
      params = optax.apply_updates(params, updates)
      return (params, opt_state, gsum), (loss, aux)

    (params, _, gsum), (losses, auxs) = jax.lax.scan(step, (trainable, opt_state, gsum0),
                                                     (batches, keys))
    metrics = {"loss": losses.mean(), "first_loss": losses[0]}
    metrics.update({k: v.mean() for k, v in auxs.items()})
    gmean = jax.tree_util.tree_map(lambda g: g / steps, gsum) if track_grads else None
    return params, metrics, gmean

  return local_update

"""Client-drift control for the local phase: FedProx's proximal term and SCAFFOLD control variates.

Both act on the gradient of the trainable tree at every local step, before the client optimiser
(so they compose with AdamW/SGD, gradient clipping and FFA-LoRA's frozen leaves):

  g  <-  g + μ·(w − w_global)          FedProx (Li et al. 2020): the gradient of μ/2·‖w − w_global‖²
  g  <-  g + c − c_i                   SCAFFOLD (Karimireddy et al. 2020)

SCAFFOLD state: every client holds c_i (trainable-tree structure, part of the per-client state
`client_states['scaffold']`, leaves `[N, ...]`, gathered/scattered for the sampled clients like the
compressor state); the server holds c (`server_state['control']`) and sends it with the model.
After its local steps a client sets (ours) c_i+ = mean over its E steps of the raw minibatch
gradients g_i(y_k) — for plain SGD this is exactly SCAFFOLD's option II, c_i − c + (x − y)/(E·η),
and it stays on the gradient scale for adaptive client optimisers (AdamW), where (x − y)/(E·η) does
not. It uploads Δc_i = c_i+ − c_i densely (bits_per_value bits per trained entry, counted in its
uplink bits); the server sets c <- c + Σ_{delivered} Δc_i / N. A client whose upload misses the deadline
keeps its new c_i (it is local) but the server never sees that Δc_i (ours). Leaves the method
freezes (FFA-LoRA's A) have c_i = c = 0 and are not sent.

Config section `client`: prox_mu (μ >= 0, 0 = off), scaffold (bool).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class DriftControl(NamedTuple):
  prox_mu: float
  scaffold: bool
  mask: Any                # trainable-tree structure, 1.0 on trained leaves, 0.0 on frozen ones
  scaffold_values: int     # trained entries (the size of one Δc_i upload / c download)
  bits_per_value: int
  num_clients: int

  @property
  def active(self) -> bool:
    return self.prox_mu > 0 or self.scaffold

  @property
  def downlink_values(self) -> int:
    """Values the server sends each sampled client besides the model (SCAFFOLD's c), fp32."""
    return self.scaffold_values if self.scaffold else 0

  @property
  def scaffold_bits(self) -> float:
    return float(self.scaffold_values * self.bits_per_value) if self.scaffold else 0.0


def build_drift(client_cfg, trainable, labels=None, bits_per_value: int = 32,
                num_clients: int = 1) -> DriftControl:
  """From config section `client` (keys prox_mu, scaffold); `labels` = lora.trainable_labels
  ('train' / 'freeze' per leaf) or None (all trained)."""
  mu = client_cfg.prox_mu if client_cfg is not None else 0.0
  if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not mu >= 0:
    raise ValueError(f"config.client.prox_mu={mu!r} is not allowed: a number >= 0 (0 = off)")
  sc = client_cfg.scaffold if client_cfg is not None else False
  if not isinstance(sc, bool):
    raise ValueError(f"config.client.scaffold={sc!r} is not allowed: True or False")
  if labels is None:
    mask = jax.tree_util.tree_map(lambda _: 1.0, trainable)
  else:
    mask = jax.tree_util.tree_map(lambda lab: 0.0 if lab == "freeze" else 1.0, labels)
  values = sum(int(x.size) * int(m) for x, m in zip(jax.tree_util.tree_leaves(trainable),
                                                    jax.tree_util.tree_leaves(mask)))
  return DriftControl(float(mu), sc, mask, values, int(bits_per_value), int(num_clients))


def no_drift(trainable) -> DriftControl:
  return DriftControl(0.0, False, jax.tree_util.tree_map(lambda _: 1.0, trainable), 0, 32, 1)


def init_client(dc: DriftControl, trainable) -> dict:
  """One client's drift state: {'scaffold': c_i = 0} or {}."""
  return {"scaffold": jax.tree_util.tree_map(jnp.zeros_like, trainable)} if dc.scaffold else {}


def init_server(dc: DriftControl, trainable) -> dict:
  """The server's drift state: {'control': c = 0} or {}."""
  return {"control": jax.tree_util.tree_map(jnp.zeros_like, trainable)} if dc.scaffold else {}


def anchor(dc: DriftControl, global_tr, ctx: dict, cstate: dict) -> dict:
  """What the local steps need: {'global': w_global} (FedProx), {'shift': c − c_i} (SCAFFOLD)."""
  out = {}
  if dc.prox_mu > 0:
    out["global"] = global_tr
  if dc.scaffold:
    out["shift"] = jax.tree_util.tree_map(jnp.subtract, ctx["control"], cstate["scaffold"])
  return out


def correct(dc: DriftControl, grads, params, anc: dict):
  """The corrected local gradient (see the module doc)."""
  if dc.prox_mu > 0:
    mu = dc.prox_mu
    grads = jax.tree_util.tree_map(lambda g, w, w0: g + (mu * (w - w0)).astype(g.dtype),
                                   grads, params, anc["global"])
  if dc.scaffold:
    grads = jax.tree_util.tree_map(lambda g, s: g + s.astype(g.dtype), grads, anc["shift"])
  return grads


def finish_client(dc: DriftControl, cstate: dict, grad_mean):
  """(new drift entries of the client state, Δc_i or None, extra uplink bits [])."""
  if not dc.scaffold:
    return {}, None, jnp.float32(0.0)
  new_c = jax.tree_util.tree_map(lambda g, m: (g * m).astype(g.dtype), grad_mean, dc.mask)
  delta_c = jax.tree_util.tree_map(jnp.subtract, new_c, cstate["scaffold"])
  return {"scaffold": new_c}, delta_c, jnp.float32(dc.scaffold_bits)


def update_server(dc: DriftControl, sstate: dict, control_deltas, delivered) -> dict:
  """c <- c + Σ_k delivered_k·Δc_k / N; control_deltas leaves `[K, ...]`, delivered `[K]` in {0, 1}."""
  if not dc.scaffold:
    return sstate
  d = delivered.astype(jnp.float32) / dc.num_clients
  c = jax.tree_util.tree_map(lambda c, dc_: c + jnp.tensordot(d, dc_, axes=1).astype(c.dtype),
                             sstate["control"], control_deltas)
  return dict(sstate, control=c)


def validate_client(cfg) -> None:
  """Checks config section `client` (drift control, lr schedule, label-skew loss) before any data
  is loaded; ValueError naming the key, the value and what is allowed."""
  from fedlora.fed.schedule import validate_schedule
  from fedlora.tasks.label_skew import validate as validate_label_skew
  build_drift(cfg, {})
  validate_schedule("client", cfg.lr_schedule, cfg.lr_warmup_rounds, cfg.lr_final_fraction)
  validate_label_skew(cfg)

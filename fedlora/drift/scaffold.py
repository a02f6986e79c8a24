"""'scaffold' (Karimireddy et al. 2020): control variates, g <- g + c − c_i. On with `client.scaffold`.

Every client holds c_i (trainable-tree structure, `client_states['scaffold']`); the server holds c
(`server_state['control']`) and sends it with the model. After its local steps a client sets (ours)
c_i+ = mean over its E steps of the raw minibatch gradients g_i(y_k) — for plain SGD this is exactly
SCAFFOLD's option II, c_i − c + (x − y)/(E·η), and it stays on the gradient scale for adaptive
client optimisers (AdamW), where (x − y)/(E·η) does not. It uploads Δc_i = c_i+ − c_i densely
(bits_per_value bits per trained entry, counted in its uplink bits); the server sets
c <- c + Σ_{delivered} Δc_i / N. A client whose upload misses the deadline keeps its new c_i (it is
local) but the server never sees that Δc_i (ours). Leaves the method freezes (FFA-LoRA's A) have
c_i = c = 0 and are not sent.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fedlora.drift import DRIFTS, Correction, trained_values
from fedlora.section import Section


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'scaffold' (section `client`).

  scaffold: SCAFFOLD control variates (extra dense uplink/downlink, counted); the default recipe
            (it holds up under label skew where FedAvg does not: docs/skew.md); False = FedAvg
  """
  SECTION = "client"
  scaffold: bool = True

  def check(self) -> None:
    self.need(isinstance(self.scaffold, bool), "scaffold", "True or False")


@DRIFTS.register("scaffold", options=Options)
def build(section, trainable, mask, num_clients):
  if not section.scaffold:
    return None
  values = trained_values(trainable, mask)
  zeros = lambda tr: jax.tree_util.tree_map(jnp.zeros_like, tr)  # noqa: E731

  def correct(grads, params, shift):
    return jax.tree_util.tree_map(lambda g, s: g + s.astype(g.dtype), grads, shift)

  def anchor(global_tr, control, c_i):  # the shift c − c_i
    return jax.tree_util.tree_map(jnp.subtract, control, c_i)

  def finish(c_i, grad_mean):
    new_c = jax.tree_util.tree_map(lambda g, m: (g * m).astype(g.dtype), grad_mean, mask)
    return new_c, jax.tree_util.tree_map(jnp.subtract, new_c, c_i)

  def update_server(control, deltas, delivered):  # c <- c + Σ_k delivered_k·Δc_k / N
    d = delivered.astype(jnp.float32) / num_clients
    return jax.tree_util.tree_map(lambda c, dc: c + jnp.tensordot(d, dc, axes=1).astype(c.dtype),
                                  control, deltas)

  return Correction("scaffold", correct, anchor, client_key="scaffold", server_key="control",
                    init_client=zeros, init_server=zeros, context=lambda control: control,
                    finish=finish, update_server=update_server, upload_values=values,
                    download_values=values, needs_grads=True)

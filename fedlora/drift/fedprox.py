"""'fedprox' (Li et al. 2020): the gradient of the proximal term μ/2·‖w − w_global‖²,
g <- g + μ·(w − w_global). No state, no upload. On when `client.prox_mu` > 0."""
from __future__ import annotations

import dataclasses

import jax

from fedlora.drift import DRIFTS, Correction
from fedlora.section import Section, is_num


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'fedprox' (section `client`).

  prox_mu: FedProx proximal weight μ (μ/2·‖w − w_global‖²; >= 0, 0 = off)
  """
  SECTION = "client"
  prox_mu: float = 0.0

  def check(self) -> None:
    self.need(is_num(self.prox_mu) and self.prox_mu >= 0, "prox_mu", "a number >= 0 (0 = off)")


@DRIFTS.register("fedprox", options=Options)
def build(section, trainable, mask, num_clients):
  mu = float(section.prox_mu)
  if mu <= 0:
    return None

  def correct(grads, params, anchor):
    return jax.tree_util.tree_map(lambda g, w, w0: g + (mu * (w - w0)).astype(g.dtype),
                                  grads, params, anchor)
  return Correction("fedprox", correct, anchor=lambda global_tr, ctx, cstate: global_tr)

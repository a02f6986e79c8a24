"""'soft': SOFT sparsification (top-m rank components by per-rank importance) with the
near-orthogonality regulariser in the local loss, TSFA allocation by default (docs/method.md)."""
from __future__ import annotations

import dataclasses

from fedlora.methods.registry import MethodSpec, register_method
from fedlora.section import Section, is_num
from fedlora.soft.ortho import B_TERMS, make_ortho_penalty
from fedlora.soft.reorth import reorthogonalize


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'soft' (section `method`).

  ortho_weight: weight of the regulariser ‖AᵀA − I‖² + B term (>= 0; 0 = off)
  ortho_b:      its B term: 'gram' ‖offdiag(BBᵀ)‖² | 'cosine' ‖offdiag(cos(b_i, b_j))‖² (scale-free;
                fedlora/soft/ortho.py says why)
  reorth:       the server rewrites the global factors in their product's singular basis after every
                round (exact, the model unchanged; fedlora/soft/reorth.py; ours)
  """
  SECTION = "method"
  ortho_weight: float = 1e-2
  ortho_b: str = "gram"
  reorth: bool = False

  def check(self) -> None:
    self.need(is_num(self.ortho_weight) and self.ortho_weight >= 0, "ortho_weight", "a number >= 0")
    self.need(self.ortho_b in B_TERMS, "ortho_b", f"one of {B_TERMS}")
    self.need(isinstance(self.reorth, bool), "reorth", "True or False")


register_method(MethodSpec(name="soft", compressor="soft",
                           make_penalty=lambda opt: make_ortho_penalty(opt("ortho_b")),
                           reparam=reorthogonalize, reparam_key="reorth",
                           penalty_key="ortho_weight", rank_grid=True, allocation="tsfa"),
                options=Options)

"""'soft': SOFT sparsification (top-m rank components by per-rank importance) with the
near-orthogonality regulariser in the local loss, TSFA allocation by default (docs/method.md).

Config keys (section `method`):
  ortho_weight = 1e-2     # weight of the regulariser ‖AᵀA − I‖² + B term (>= 0; 0 = off)
  ortho_b      = 'gram'   # B term: 'gram' ‖offdiag(BBᵀ)‖² | 'cosine' ‖offdiag(cos(b_i, b_j))‖²
                          #   (scale-free; fedlora/soft/ortho.py says why)
  reorth       = False    # the server rewrites the global factors in their product's singular
                          #   basis after every round (fedlora/soft/reorth.py; ours)
"""
from fedlora.methods.registry import MethodSpec, register_method
from fedlora.soft.ortho import make_ortho_penalty
from fedlora.soft.reorth import reorthogonalize


register_method(MethodSpec(name="soft", compressor="soft",
                           make_penalty=lambda opt: make_ortho_penalty(opt("ortho_b")),
                           reparam=reorthogonalize, reparam_key="reorth",
                           penalty_key="ortho_weight", rank_grid=True, allocation="tsfa",
                           defaults={"ortho_weight": 1e-2, "ortho_b": "gram", "reorth": False}))

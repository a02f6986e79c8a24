"""'soft': SOFT sparsification (top-m rank components by per-rank importance) with the
near-orthogonality regulariser in the local loss, TSFA allocation by default (docs/method.md).

Config keys (section `method`):
  ortho_weight = 1e-2   # weight of the regulariser ‖AᵀA − I‖² + ‖offdiag(BBᵀ)‖² (>= 0; 0 = off)
"""
from fedlora.methods.registry import MethodSpec, register_method
from fedlora.soft.ortho import ortho_penalty

register_method(MethodSpec(name="soft", compressor="soft", penalty=ortho_penalty,
                           penalty_key="ortho_weight", rank_grid=True, allocation="tsfa",
                           defaults={"ortho_weight": 1e-2}))

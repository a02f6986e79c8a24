"""SOFT — Sparsified Orthogonal Fine-Tuning (docs/method.md, section SOFT).

- `ortho_penalty(trainable, b_term)`, `make_ortho_penalty(b_term)`: near-orthogonality regulariser for the local loss.
- `rank_scores(a, b)`, `product_scores(a0, b0, da, db)`, `importance_profile(tree)`, `dropped_mass(tree_or_scores, ratio)`: per-rank
  importance and the sparsification-error term E(ρ) used by TSFA.
- `soft_compressor(...)`: the uplink compressor (also `fedlora.compress.get_compressor('soft', cfg)`).
"""
from fedlora.soft.importance import (dropped_mass, importance_profile, product_scores, rank_scores,
                                     score_tree)
from fedlora.soft.ortho import adapter_ortho_penalty, make_ortho_penalty, ortho_penalty
from fedlora.soft.sparsify import adapter_bits, soft_compressor, soft_mask, sparsify_adapter

__all__ = ["adapter_bits", "adapter_ortho_penalty", "dropped_mass", "importance_profile",
           "make_ortho_penalty", "ortho_penalty", "product_scores", "rank_scores", "score_tree",
           "soft_compressor", "soft_mask", "sparsify_adapter"]

"""LoRA adapters as pure functions over parameter PyTrees (pure nested dicts).

`W = W0 + (alpha/r) * A @ B` in our `[d_in, d_out]` kernel layout: `lora_a: [d_in, r]`,
`lora_b: [r, d_out]`; rank component i is `(lora_a[:, i], lora_b[i, :])` (the paper's a_i, b_i).
"""
from fedlora.lora.adapters import attach, init_adapters, lora_scale, match_targets, merge
from fedlora.lora.count import tree_bytes, tree_size
from fedlora.lora.setup import add_adapters
from fedlora.lora.split import ModelParts, split_model, trainable_labels

__all__ = [
    "add_adapters", "attach", "init_adapters", "lora_scale", "match_targets", "merge",
    "tree_bytes", "tree_size", "ModelParts", "split_model", "trainable_labels",
]

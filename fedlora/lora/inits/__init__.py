"""LoRA initialisations of A, found by name (`lora.init`); B always starts at 0.

Each file registers `init(key, d_in, r, lora_section) -> A [d_in, r]` float32 with `LORA_INITS`
(options, if any, as a section class beside it: their keys live in the `lora` section).
"""
from fedlora.registry import Registry

LORA_INITS = Registry("LoRA init", "fedlora.lora.inits", "lora.init")

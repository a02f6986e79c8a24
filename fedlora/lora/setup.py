"""A loaded model made LoRA-trainable: adapters attached, precision set, split into the parts a run uses."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedlora.lora.adapters import attach, init_adapters, lora_scale
from fedlora.lora.split import ModelParts, split_model
from fedlora.models.layers import DTYPES, set_precision


def add_adapters(model, family, lora_cfg, model_cfg, key) -> ModelParts:
  """Adapters on `lora_cfg.targets` (() = the family's default targets) initialised from `key`,
  attached to `model` (scale alpha / r, dropout), the compute dtype, remat and gradient barrier of
  `model_cfg` set, and the split (graphdef, trainable: adapters + the family's head, frozen base
  cast to `model_cfg.param_dtype`; the trainable tree stays float32)."""
  base = split_model(model, family.head_paths)
  if not lora_cfg.targets:
    lora_cfg = lora_cfg.replace(targets=family.lora_targets)
  attach(model, init_adapters(key, base.frozen, lora_cfg), scale=lora_scale(lora_cfg.alpha, lora_cfg.rank),
         dropout=lora_cfg.dropout)
  set_precision(model, model_cfg.compute_dtype, model_cfg.remat, model_cfg.grad_barrier)
  parts = split_model(model, family.head_paths)
  pdt = DTYPES[model_cfg.param_dtype]
  return parts._replace(frozen=jax.tree_util.tree_map(
      lambda x: x.astype(pdt) if jnp.issubdtype(x.dtype, jnp.floating) else x, parts.frozen))

"""Split a model into (graphdef, trainable, frozen) pure dicts, the form every jitted function uses.

The frozen base weights live once (broadcast to all clients with `in_axes=None`); per client only the
trainable tree (adapters + task head), its optimizer state and activations exist.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
from flax import nnx


class ModelParts(NamedTuple):
  graphdef: Any   # static structure (nnx.GraphDef)
  trainable: dict  # adapters (`lora_a`, `lora_b`) + head leaves, pure nested dict
  frozen: dict     # everything else, pure nested dict

  def module(self, trainable=None, frozen=None) -> nnx.Module:
    """The nnx module over (possibly traced) trees; call it inside jit/vmap."""
    return nnx.merge(self.graphdef, self.trainable if trainable is None else trainable,
                     self.frozen if frozen is None else frozen)


def split_model(model: nnx.Module, head_patterns=("classifier",)) -> ModelParts:
  """Trainable = every `nnx.LoRAParam` plus parameters whose path contains a head pattern."""
  heads = [nnx.PathContains(h) for h in head_patterns]
  graphdef, trainable, frozen = nnx.split(model, nnx.Any(nnx.LoRAParam, *heads), ...)
  return ModelParts(graphdef, nnx.to_pure_dict(trainable), nnx.to_pure_dict(frozen))


def trainable_labels(trainable: dict, freeze: str | None) -> dict:
  """'train'/'freeze' label per leaf for `optax.multi_transform`.

  freeze: regex over '/'-joined leaf paths (e.g. 'lora_a$' for FFA-LoRA), or None/'' for none.
  """
  pat = re.compile(freeze) if freeze else None

  def label(path, _):
    s = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    return "freeze" if pat is not None and pat.search(s) else "train"
  return jax.tree_util.tree_map_with_path(label, trainable)

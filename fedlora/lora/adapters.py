"""Initialise LoRA adapters for layers chosen by name pattern, attach them, merge them into W0.

Paths are '/'-joined keys of the pure parameter dict, e.g. `encoder/layers/0/attention/query`.
A layer is adaptable when its dict node holds a 2-D `kernel` `[d_in, d_out]`; it is adapted when
any regex in `targets` matches its path (`re.search`).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import jax
import jax.numpy as jnp
from flax import nnx


def lora_scale(alpha: float, rank: int) -> float:
  """The LoRA scaling `alpha / r`."""
  return float(alpha) / float(rank)


def _as_tuple(targets) -> tuple[str, ...]:
  if isinstance(targets, str):
    return tuple(t for t in targets.split(",") if t)
  return tuple(targets)


def _walk(tree: dict, prefix: tuple = ()) -> Iterable[tuple[tuple, dict]]:
  """Yields (path, node) for every dict node of a nested pure dict."""
  yield prefix, tree
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _walk(v, prefix + (k,))


def path_str(path: tuple) -> str:
  return "/".join(str(p) for p in path)


def match_targets(frozen: dict, targets) -> list[tuple]:
  """Paths (tuples of keys) of the Linear layers in `frozen` that `targets` selects.

  Raises ValueError when nothing matches, listing the adaptable paths a user could name.
  """
  pats = [re.compile(t) for t in _as_tuple(targets)]
  adaptable = [p for p, node in _walk(frozen)
               if "kernel" in node and getattr(node["kernel"], "ndim", 0) == 2]
  chosen = [p for p in adaptable if any(r.search(path_str(p)) for r in pats)]
  if not chosen:
    sample = ", ".join(path_str(p) for p in adaptable[:12])
    raise ValueError(f"lora.targets={_as_tuple(targets)} matches no layer; adaptable layer paths "
                     f"include: {sample}")
  return chosen


def init_adapters(key: jax.Array, frozen: dict, cfg) -> dict:
  """Fresh adapters `{path...: {'lora_a': [d_in, r], 'lora_b': [r, d_out] = 0}}` for matched layers.

  `cfg`: the `lora` section (fedlora.lora.config.LoraConfig: targets, rank, init and the init's own
  keys). Pure: the same key and parameters give the same adapters; each layer folds its index into key.
  """
  from fedlora.lora.inits import LORA_INITS
  init_a = LORA_INITS.get(cfg.init).obj
  out: dict = {}
  for i, path in enumerate(match_targets(frozen, cfg.targets)):
    node = frozen
    for p in path:
      node = node[p]
    d_in, d_out = node["kernel"].shape
    leaf = {"lora_a": init_a(jax.random.fold_in(key, i), d_in, cfg.rank, cfg),
            "lora_b": jnp.zeros((cfg.rank, d_out), jnp.float32)}
    cur = out
    for p in path[:-1]:
      cur = cur.setdefault(p, {})
    cur[path[-1]] = leaf
  return out


def attach(model: nnx.Module, adapters: dict, *, scale: float, dropout: float = 0.0) -> nnx.Module:
  """Sets `lora_a/lora_b` (as `nnx.LoRAParam`) on the model's Linear layers named in `adapters`.

  Build-time only (it mutates the freshly built module, like a constructor would); training
  then works on the split-out pure dicts. Returns the model for chaining.
  """
  for path, node in _walk(adapters):
    if "lora_a" not in node:
      continue
    layer = model
    for p in path:
      layer = layer[p] if isinstance(p, int) else getattr(layer, p)
    layer.lora_a = nnx.LoRAParam(node["lora_a"])
    layer.lora_b = nnx.LoRAParam(node["lora_b"])
    layer.lora_scale = float(scale)
    layer.lora_dropout = float(dropout)
  return model


def merge(frozen: dict, adapters: dict, *, scale: float) -> dict:
  """Export: a copy of `frozen` with `kernel <- kernel + scale * lora_a @ lora_b` where adapted."""
  def rec(f: Any, a: Any):
    if not isinstance(f, dict):
      return f
    out = {k: rec(v, a.get(k, {}) if isinstance(a, dict) else {}) for k, v in f.items()}
    if isinstance(a, dict) and "lora_a" in a:
      out["kernel"] = f["kernel"] + scale * (a["lora_a"] @ a["lora_b"])
    return out
  return rec(frozen, adapters)

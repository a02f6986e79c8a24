"""Initialise LoRA adapters for layers chosen by name pattern, attach them, merge them into W0.

Paths are '/'-joined keys of the pure parameter dict, e.g. `encoder/layers/0/attention/query`.
A layer is adaptable when its dict node holds a 2-D `kernel` `[d_in, d_out]`; it is adapted when
any regex in `targets` matches its path (`re.search`).
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

import jax
import jax.numpy as jnp
from flax import nnx

INITS = ("kaiming", "orthogonal", "gaussian", "graded")


def lora_scale(alpha: float, rank: int) -> float:
  """The LoRA scaling `alpha / r`."""
  return float(alpha) / float(rank)


def validate_lora_config(cfg) -> None:
  """Raise ValueError naming the bad `lora.*` value and what is allowed."""
  if not isinstance(cfg.rank, int) or cfg.rank < 1:
    raise ValueError(f"lora.rank={cfg.rank!r}: must be an integer >= 1")
  if not cfg.alpha > 0:
    raise ValueError(f"lora.alpha={cfg.alpha!r}: must be > 0")
  if not 0.0 <= cfg.dropout < 1.0:
    raise ValueError(f"lora.dropout={cfg.dropout!r}: must be in [0, 1)")
  if cfg.init not in INITS:
    raise ValueError(f"lora.init={cfg.init!r}: allowed values are {INITS}")
  if cfg.init == "graded":
    decay = getattr(cfg, "init_decay", None)
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0.0 < decay <= 1.0:
      raise ValueError(f"lora.init_decay={decay!r}: lora.init='graded' needs a number in (0, 1]")
  targets = _as_tuple(cfg.targets)
  if not targets:
    raise ValueError("lora.targets is empty: give at least one regex over layer paths")
  for t in targets:
    try:
      re.compile(t)
    except re.error as e:
      raise ValueError(f"lora.targets entry {t!r} is not a valid regex: {e}") from None


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


def _init_a(key, d_in: int, r: int, init: str, decay: float = 1.0) -> jax.Array:
  """A `[d_in, r]` for `init` (INITS). 'graded' (ours): orthonormal columns scaled by decay**i.
  From B = 0, AdamW gives every b_i about the same update norm, so component i's share of the
  product's change, ‖Δb_i‖·‖a_i‖, falls geometrically with i: a round's update concentrates in the
  leading components, where SOFT scoring the product ('product') finds it and SVD truncation keeps
  it too (benchmarks/bench_update_capture.py). Measured: SOFT at a fixed ratio then keeps picking
  the same leading components, and the others are never trained (README: Fair comparison)."""
  if init == "kaiming":  # PEFT default: kaiming_uniform(a=sqrt(5)) -> U(-1/sqrt(d_in), 1/sqrt(d_in))
    bound = 1.0 / math.sqrt(d_in)
    return jax.random.uniform(key, (d_in, r), jnp.float32, -bound, bound)
  if init == "orthogonal":  # orthonormal columns: A A^T = I_r in the paper's layout (SOFT)
    return jax.nn.initializers.orthogonal()(key, (d_in, r), jnp.float32)
  if init == "gaussian":  # PEFT 'gaussian': N(0, 1/r)
    return jax.random.normal(key, (d_in, r), jnp.float32) / r
  if init == "graded":  # the orthogonal init, column i scaled by decay**i
    scale = jnp.asarray(decay, jnp.float32) ** jnp.arange(r, dtype=jnp.float32)
    return _init_a(key, d_in, r, "orthogonal") * scale[None, :]
  raise ValueError(f"lora.init={init!r}: allowed values are {INITS}")


def init_adapters(key: jax.Array, frozen: dict, cfg) -> dict:
  """Fresh adapters `{path...: {'lora_a': [d_in, r], 'lora_b': [r, d_out] = 0}}` for matched layers.

  Pure: the same key and parameters give the same adapters; each layer folds its index into key.
  """
  validate_lora_config(cfg)
  out: dict = {}
  for i, path in enumerate(match_targets(frozen, cfg.targets)):
    node = frozen
    for p in path:
      node = node[p]
    d_in, d_out = node["kernel"].shape
    leaf = {"lora_a": _init_a(jax.random.fold_in(key, i), d_in, cfg.rank, cfg.init,
                              getattr(cfg, "init_decay", 1.0)),
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

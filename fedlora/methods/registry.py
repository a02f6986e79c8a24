"""`build_method(config)`: the method named by `config.method.name`, built from its config sections.

| name   | client trains        | upload (compressor)                 | uplink                      |
|--------|----------------------|-------------------------------------|-----------------------------|
| ideal  | A, B, head           | dense                               | channel only if enabled     |
| soft   | A, B, head + ortho   | SOFT rank sparsification            | channel; TSFA by default    |
| topk   | A, B, head           | magnitude top-k of A and B          | channel; fixed ρ by default |
| randk  | A, B, head           | random-k of A and B                 | channel; fixed ρ            |
| svd    | A, B, head           | SVD-basis rank truncation of A·B    | channel; fixed ρ            |
| ffa    | B, head (A frozen)   | dense B + head (A is never sent)    | channel; fixed ρ = 1        |
With `wireless.enabled=False` every method runs without a channel (all uploads arrive).
"""
from __future__ import annotations

import jax.numpy as jnp

from fedlora.compress import get_compressor
from fedlora.compress.base import Compressor, CompressOut
from fedlora.methods.base import Method, deliver_all, fixed_ratio_plan, no_plot, no_state
from fedlora.soft.ortho import ortho_penalty

METHODS = ("ideal", "soft", "topk", "randk", "svd", "ffa")
_COMPRESSOR = {"ideal": "none", "soft": "soft", "topk": "topk", "randk": "randk", "svd": "svd",
               "ffa": "none"}


def without_frozen_bits(comp: Compressor, frozen_bits: float) -> Compressor:
  """FFA-LoRA: the frozen A factors have zero update and are never sent; remove their bits."""
  def update(state, delta, ratio, key, ref) -> CompressOut:
    out = comp.update(state, delta, ratio, key, ref)
    return out._replace(bits=out.bits - frozen_bits)
  return Compressor(comp.init, update)


def build_method(config, trainable=None) -> Method:
  """The method of `config.method.name`; `trainable` (the initial trainable tree) is needed by 'ffa'
  to count the never-sent A factors."""
  name = config.method.name
  if name not in METHODS:
    raise ValueError(f"config.method.name={name!r} is not allowed: one of {METHODS}")
  freeze = "lora_a$" if name == "ffa" else None
  comp = get_compressor(_COMPRESSOR[name], config.compress)
  if name == "ffa" and trainable is not None:
    n_a = sum(int(x.size) for p, x in _leaves(trainable) if p.endswith("lora_a"))
    comp = without_frozen_bits(comp, float(n_a * config.compress.bits_per_value))
  penalty, weight = (ortho_penalty, float(config.method.ortho_weight)) if name == "soft" else (None, 0.0)
  if name == "soft" and weight < 0:
    raise ValueError(f"config.method.ortho_weight={weight!r} is not allowed: >= 0")
  if not config.wireless.enabled:
    ratio = 1.0 if name in ("ideal", "ffa") else float(config.method.ratio)
    if not 0.0 < ratio <= 1.0:
      raise ValueError(f"config.method.ratio={ratio!r} is not allowed: a ratio in (0, 1]")
    return Method(name, comp, freeze, penalty, weight, no_state, fixed_ratio_plan(ratio),
                  deliver_all, no_plot)
  from fedlora.methods.uplink import make_uplink
  if name in ("ideal", "ffa"):  # dense uploads: ratio 1, equal bandwidth split
    config = config.copy_and_resolve_references()
    config.method.ratio = 1.0
    config.method.allocation = "fixed"
  init_state, plan, deliver, plot = make_uplink(config, rank_grid=name in ("soft", "svd"))
  return Method(name, comp, freeze, penalty, weight, init_state, plan, deliver, plot)


def _leaves(tree):
  import jax
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    yield "/".join(str(getattr(k, "key", k)) for k in path), x

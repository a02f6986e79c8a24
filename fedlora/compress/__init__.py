"""Uplink compressors for client updates, found by name: `get_compressor(name, cfg) -> Compressor`.

A compressor is ONE file that registers itself with `@register(name, defaults)`: its factory, its
config keys with their defaults (read from the flat `config.compress` section), their validation and
its docstring (rule, payload bits, payload model, importance profile) live in that file. Built-in:

| name  | file                      | keys of its own (besides the common ones below)           |
|-------|---------------------------|-----------------------------------------------------------|
| none  | fedlora/compress/dense.py | -                                                         |
| soft  | fedlora/soft/sparsify.py  | score_on ('delta' | 'updated' | 'product')                 |
| topk  | fedlora/compress/topk.py  | index_coding ('min' | 'indices' | 'bitmap')                 |
| randk | fedlora/compress/randk.py | unbiased (bool), seed_bits (int >= 0)                      |
| svd   | fedlora/compress/svd.py   | rcond (float in [0, 1))                                    |

Common keys (every compressor gets them; validated here): `bits_per_value` (32 | 16),
`simulate_quantization` (bool), `error_feedback` (bool). Keys a compressor does not declare are
ignored (the section is shared); a declared key missing from the config takes the file's default,
so a new compressor works before its keys are added to `configs/bbc_minilm.py` (add them there to
make them settable from the command line).

Lookup: a registered name; else the built-in module above; else the module
`fedlora.compress.<name>` is imported (so a new file in this folder needs no other edit); a
compressor in any other module registers when that module is imported.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from fedlora.compress.base import (CompressOut, Compressor, adapter_pairs, check_bits_per_value,
                                   check_bool, check_choice, cfg_get, dense_leaves, is_adapter,
                                   map_adapters, map_dense, num_keep, top_mask)
from fedlora.utils.plugins import import_if_present

COMMON_DEFAULTS = {"bits_per_value": 32, "simulate_quantization": True, "error_feedback": False}

_BUILTIN = {"none": "fedlora.compress.dense", "soft": "fedlora.soft.sparsify",
            "topk": "fedlora.compress.topk", "randk": "fedlora.compress.randk",
            "svd": "fedlora.compress.svd"}


class Registered(NamedTuple):
  factory: Callable   # (opts: dict of validated common + own keys, section: str) -> Compressor
  defaults: dict      # the compressor's own keys and defaults


_REGISTRY: dict[str, Registered] = {}


def register(name: str, defaults: dict | None = None):
  """Decorator: registers `factory(opts, section) -> Compressor` under `name`.

  `defaults`: the compressor's own config keys (flat in `config.compress`) and their defaults.
  `opts` holds those keys (config value or default) plus the validated common keys.
  """
  defaults = dict(defaults or {})
  clash = sorted(set(defaults) & set(COMMON_DEFAULTS))
  if clash:
    raise ValueError(f"compressor {name!r}: keys {clash} are common keys; do not redeclare them")

  def deco(factory):
    _REGISTRY[name] = Registered(factory, defaults)
    return factory
  return deco


def _lookup(name: str) -> Registered | None:
  if name not in _REGISTRY and isinstance(name, str):
    import_if_present(_BUILTIN.get(name, f"fedlora.compress.{name}"))
  return _REGISTRY.get(name)


def names() -> tuple:
  """Every registered compressor name (the built-ins imported first)."""
  for n in _BUILTIN:
    _lookup(n)
  return tuple(sorted(_REGISTRY))


def defaults(name: str) -> dict:
  """Common + own config keys of compressor `name` with their defaults."""
  reg = _lookup(name)
  if reg is None:
    raise ValueError(f"compressor {name!r} is not registered: allowed values are {names()}")
  return {**COMMON_DEFAULTS, **reg.defaults}


def get_compressor(name: str, cfg=None, section: str = "compress") -> Compressor:
  """The compressor called `name`, configured from `cfg` (a ConfigDict section, a dict, or None).

  `section` only names the config section in error messages.
  """
  reg = _lookup(name)
  if reg is None:
    raise ValueError(f"{section}.name={name!r}: allowed values are {names()}")
  opts = {k: cfg_get(cfg, k, d) for k, d in {**COMMON_DEFAULTS, **reg.defaults}.items()}
  opts["bits_per_value"] = check_bits_per_value(section, opts["bits_per_value"])
  for k in ("simulate_quantization", "error_feedback"):
    opts[k] = check_bool(section, k, opts[k])
  return reg.factory(opts, section)


__all__ = ["COMMON_DEFAULTS", "CompressOut", "Compressor", "adapter_pairs", "check_bool",
           "check_choice", "defaults", "dense_leaves", "get_compressor", "is_adapter",
           "map_adapters", "map_dense", "names", "num_keep", "register", "top_mask"]

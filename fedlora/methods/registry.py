"""`build_method(config)`: the method named by `config.method.name`, built from its config sections."""
from __future__ import annotations

from fedlora.compress import get_compressor
from fedlora.methods.base import Method, deliver_all, fixed_ratio_plan, no_plot, no_state

METHODS = ("ideal",)


def build_method(config) -> Method:
  name = config.method.name
  if name not in METHODS:
    raise ValueError(f"config.method.name={name!r} is not allowed: one of {METHODS}")
  if name == "ideal":
    return Method(name, get_compressor("none", config.compress), None, None, 0.0, no_state,
                  fixed_ratio_plan(1.0), deliver_all, no_plot)
  raise AssertionError(name)

"""Dotted-key overrides of a ConfigDict from Python (tests, benchmarks): {'fed.rounds': 3, ...}."""
from __future__ import annotations


def apply_overrides(config, overrides: dict):
  """Sets each `a.b.c=value` in place (a leading 'config.' is ignored) and returns the config.

  A key that does not exist raises (the ConfigDict is the schema), naming the key."""
  for k, v in overrides.items():
    node = config
    *head, last = k.removeprefix("config.").split(".")
    try:
      for p in head:
        node = node[p]
      if last not in node:
        raise KeyError(last)
    except KeyError:
      raise KeyError(f"config has no key {k!r}") from None
    node[last] = v
  return config

"""Seconds-long variant of the default experiment, used by the tests: 2 MiniLM layers, 32 tokens,
240 BBC examples over 4 clients, 2 rounds. Run: python -m fedlora --config configs/tiny.py
(no variants: `configs/tiny.py:<anything>` is an error)."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bbc_minilm  # noqa: E402


def get_config(arg=None):
  if arg not in (None, ""):
    raise ValueError(f"configs/tiny.py has no variants, got {arg!r}; use configs/tiny.py "
                     "(or configs/bbc_minilm.py:tiny)")
  c = bbc_minilm.get_config("tiny")
  c.name = "tiny"  # experiment name: the default workdir is runs/tiny-<method>-s<seed>
  return c

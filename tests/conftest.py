"""Shared test set-up: offline hubs, a tiny experiment built once per session."""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402


def tiny_config(**overrides):
  """configs/tiny.py with dotted-key overrides, e.g. tiny_config(**{'fed.rounds': 3})."""
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import tiny  # noqa: PLC0415
  from fedlora.utils.overrides import apply_overrides  # noqa: PLC0415
  return apply_overrides(tiny.get_config(), overrides)


@pytest.fixture(scope="session")
def tiny_exp():
  """The tiny experiment (2 MiniLM layers, 4 clients), built once for the tests that share it."""
  from fedlora.train import build
  return build(tiny_config())

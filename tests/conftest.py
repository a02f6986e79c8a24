"""Shared test set-up: offline hubs, a tiny experiment built once per session."""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# XLA's persistent compilation cache, fresh for each test process (nothing survives from an earlier
# run): many tests compile the same tiny programs, and a hit skips the compile. Set in the environment
# so the subprocesses a test starts (CLI runs, the multi-process run) share it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile  # noqa: E402
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="fedlora-test-xla-cache-")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  import atexit  # noqa: E402
  import shutil  # noqa: E402
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
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

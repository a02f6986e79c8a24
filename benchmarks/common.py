"""Shared helpers for the benchmark scripts: timing discipline and result files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax

from fedlora.utils.overrides import apply_overrides  # noqa: F401  (re-exported for the scripts)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def timed(fn, *args, repeats: int = 3, warmup: int = 1):
  """(first-call seconds incl. compile, median steady-state seconds, all steady times).

  Every call's outputs are `block_until_ready`-ed so the time covers the computation."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  for _ in range(max(0, warmup - 1)):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times), times


def environment() -> dict:
  return {"jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
          "machine": platform.machine(), "python": platform.python_version()}


def write_result(name: str, payload: dict) -> str:
  os.makedirs(RESULTS, exist_ok=True)
  path = os.path.join(RESULTS, f"{name}.json")
  payload = dict(payload, environment=environment(), unix_time=time.time())
  with open(path, "w") as f:
    json.dump(payload, f, indent=2)
  return path


def parse_overrides(argv: list[str]) -> dict:
  """`key.sub=value` command-line overrides (values parsed as Python literals when possible)."""
  import ast
  out = {}
  for a in argv:
    k, _, v = a.lstrip("-").partition("=")
    try:
      out[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      out[k] = v
  return out

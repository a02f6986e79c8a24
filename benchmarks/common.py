"""Shared helpers for the benchmark scripts: script set-up, arguments, timing discipline and result files.

Every script takes `key=value` arguments (`parse_overrides`), and these, which this module reads:
  --help     prints the script's docstring (what it measures, its keys, the command of its results)
  out=PATH   where the results file goes
  replace=1  write `benchmarks/results/<name>.json` (the committed file the docs are generated from)
Without either, results go to `runs/bench/<name>.json`: an exploratory or smoke run never rewrites
the committed results. A run that measured nothing (no number outside its arguments) writes nothing.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

import jax

from fedlora.utils.overrides import apply_overrides  # noqa: F401  (re-exported for the scripts)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SCRATCH = os.path.join(ROOT, "runs", "bench")
OUTPUT = {"out": None, "replace": False}  # set by parse_overrides from out= / replace=
NOT_MEASURED = ("args", "overrides", "recipe", "environment", "unix_time", "command", "machine_note")


def script_setup() -> str:
  """Set-up of a script run as `python benchmarks/<name>.py` (after it put ROOT on sys.path to import
  this module): configs/ importable (`import bbc_minilm`), Hugging Face offline unless the caller's
  environment says otherwise (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE default 1). Returns ROOT."""
  configs = os.path.join(ROOT, "configs")
  if configs not in sys.path:
    sys.path.insert(0, configs)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
  return ROOT


def launcher_tunables() -> str:
  """The GLIBC_TUNABLES value the launchers export (`launch/glibc_tunables.txt`, first line that is
  not a comment). It takes effect at process start only: a script that runs its measurements in
  subprocesses gives them this (the caller's own GLIBC_TUNABLES, if set, wins)."""
  with open(os.path.join(ROOT, "launch", "glibc_tunables.txt")) as f:
    return next(ln.strip() for ln in f if ln.strip() and not ln.startswith("#"))


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


def interleaved(fns: dict, repeats: int, warmup: int = 0) -> tuple[dict, dict]:
  """(first-call seconds incl. compile, steady times) per name, the calls interleaved: after each
  fn's first call (timed apart) and `warmup` more untimed ones, `repeats` rounds call every fn once,
  in turn, so that all of them see the same machine (on a drifting CPU, timing one after the other
  skews their ratio). Every call's outputs are `block_until_ready`-ed."""
  def once(fn):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0
  first = {n: once(f) for n, f in fns.items()}
  for _ in range(warmup):
    for f in fns.values():
      once(f)
  times = {n: [] for n in fns}
  for _ in range(repeats):
    for n, f in fns.items():
      times[n].append(once(f))
  return first, times


def environment() -> dict:
  return {"jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
          "machine": platform.machine(), "python": platform.python_version()}


def measured_numbers(payload, skip=NOT_MEASURED) -> int:
  """How many numbers `payload` holds outside its arguments (`skip` keys at any depth)."""
  if isinstance(payload, dict):
    return sum(measured_numbers(v, skip) for k, v in payload.items() if k not in skip)
  if isinstance(payload, (list, tuple)):
    return sum(measured_numbers(v, skip) for v in payload)
  return int(isinstance(payload, (int, float)) and not isinstance(payload, bool))


def result_path(name: str) -> str:
  """Where `write_result(name, ...)` writes (module docstring: out=, replace=, else runs/bench/)."""
  if OUTPUT["out"]:
    return OUTPUT["out"]
  return os.path.join(RESULTS if OUTPUT["replace"] else SCRATCH, f"{name}.json")


def write_result(name: str, payload: dict) -> str | None:
  """Writes the results file (whole, then renamed); None, and nothing written, when the run
  measured nothing."""
  if not measured_numbers(payload):
    print(f"{name}: nothing was measured, no results file written", flush=True)
    return None
  path = result_path(name)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  payload = dict(payload, environment=environment(), unix_time=time.time())
  tmp = f"{path}.{os.getpid()}.tmp"  # written whole, then renamed: a reader (another sweep running
  with open(tmp, "w") as f:          # beside this one) or a kill mid-write never sees half a file
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)
  return path


def fail(msg: str):
  """Ends the script with one `error:` line (exit code 2), before anything is measured or written."""
  print(f"error: {msg}", file=sys.stderr)
  raise SystemExit(2)


def pop_list(ov: dict, key: str, default, cast=str) -> list:
  """`key=a,b,c` from `parse_overrides` as a list of `cast(item)`: a comma list arrives parsed as a
  tuple (`seeds=0,1,2` -> (0, 1, 2)), a single item as a scalar, text as a string. An item `cast`
  refuses ends the script naming the key and the item."""
  v = ov.pop(key, default)
  items = v if isinstance(v, (tuple, list)) else str(v).split(",")
  out = []
  for x in items:
    if str(x) == "":
      continue
    try:
      out.append(cast(x))
    except (TypeError, ValueError):
      fail(f"{key}={v!r}: {x!r} is not a {getattr(cast, '__name__', 'value')}")
  return out


def check_choices(key: str, values: list, allowed) -> list:
  """Ends the script unless every value is one of `allowed` (a typo in a group or run name)."""
  bad = [v for v in values if v not in allowed]
  if bad:
    fail(f"{key}: {bad} not allowed; one of {sorted(allowed)}")
  return values


def parse_overrides(argv: list[str]) -> dict:
  """`key.sub=value` command-line overrides (values parsed as Python literals when possible).
  `--help` prints the running script's docstring and exits; `out=` / `replace=` set where results go
  (module docstring) and are taken out; an argument without `=` ends the script naming it."""
  import ast
  if any(a in ("-h", "--help", "help") for a in argv):
    print((sys.modules["__main__"].__doc__ or "").strip() + "\n\n" + __doc__.split("\n\n", 1)[1])
    raise SystemExit(0)
  out = {}
  for a in argv:
    k, eq, v = a.lstrip("-").partition("=")
    if not eq or not k:
      fail(f"argument {a!r} is not key=value (--help lists the keys)")
    try:
      out[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      out[k] = v
  OUTPUT["out"] = out.pop("out", None) or None
  OUTPUT["replace"] = bool(out.pop("replace", False))
  return out

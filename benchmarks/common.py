"""Shared helpers for the benchmark scripts: script set-up, arguments, timing discipline and result files.

Every script takes `key=value` arguments (`parse_overrides`), and these, which this module reads:
  --help     prints the script's docstring (what it measures, its keys, the command of its results)
  out=PATH   where the results file goes
  replace=1  write `benchmarks/results/<name>.json` (the committed file the docs are generated from)
  smoke=1    the script's whole code path at tiny sizes (seconds; the tests run it): a config-based
             script trains the `SMOKE` config (1 MiniLM layer, 16 tokens, 4 clients, 1 round of 1
             step), the others their smallest shapes and repeats; never with replace=1
Without out= or replace=1, results go to `runs/bench/<name>.json`: an exploratory or smoke run never
rewrites the committed results. A run that measured nothing (no number outside its arguments) writes
nothing. Every argument is checked before anything runs: a bad one ends the script with one
`error:` line (exit code 2) naming the value and what is allowed.
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
OUTPUT = {"out": None, "replace": False, "smoke": False}  # set by parse_overrides: out= replace= smoke=
NOT_MEASURED = ("args", "overrides", "recipe", "environment", "unix_time", "command", "machine_note")
# smoke=1: the smallest real experiment (the tests' tiny config, smaller still) for config-based scripts
SMOKE = {"model.num_layers": 1, "data.max_length": 16, "data.max_examples": 240, "data.num_clients": 4,
         "data.min_examples_per_client": 4, "fed.rounds": 1, "fed.clients_per_round": 2,
         "fed.local_steps": 1, "fed.batch_size": 4, "fed.client_chunk": 2, "eval.every": 1,
         "eval.batch_size": 64, "checkpoint.every": 1, "client.scaffold": False, "progress": False}


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


def kind(cast) -> str:
  """'an integer', 'a number', ... : what `cast` accepts, for error lines."""
  return {int: "an integer", float: "a number", str: "a string", bool: "0 or 1"}.get(
      cast, f"a {getattr(cast, '__name__', 'value')}")


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
      y = cast(x)
    except (TypeError, ValueError):
      fail(f"{key}={v!r}: {x!r} is not {kind(cast)}")
    if cast is int and isinstance(x, float) and x != y:  # int(0.5) would silently be 0
      fail(f"{key}={v!r}: {x!r} is not {kind(cast)}")
    out.append(y)
  return out


def check_choices(key: str, values: list, allowed) -> list:
  """Ends the script unless every value is one of `allowed` (a typo in a group or run name)."""
  bad = [v for v in values if v not in allowed]
  if bad:
    fail(f"{key}: {bad} not allowed; one of {sorted(allowed)}")
  return values


def pop_one(ov: dict, key: str, default, cast=int):
  """`key=value` as `cast(value)` (one item; `pop_list` for lists), ending the script naming the key
  when `cast` refuses it (`seed=x`, `repeats=1.5` with cast int, a list where one value is wanted)."""
  v = ov.pop(key, default)
  if cast is int and isinstance(v, float) and v != int(v) or isinstance(v, (tuple, list, dict)):
    fail(f"{key}={v!r} is not {kind(cast)}")
  if cast is bool:
    if v not in (0, 1, True, False):
      fail(f"{key}={v!r}: expected 0 or 1")
    return bool(v)
  try:
    return cast(v)
  except (TypeError, ValueError):
    fail(f"{key}={v!r} is not {kind(cast)}")


def no_unknown(ov: dict, allowed) -> None:
  """Ends the script when `ov` (what is left of the arguments) holds a key the script does not take."""
  if ov:
    fail(f"unknown argument(s) {sorted(ov)}; allowed: {sorted(allowed)} (and out=, replace=, smoke=; "
         "--help describes them)")


def smoke() -> bool:
  """True when the script was called with smoke=1 (see the module docstring)."""
  return bool(OUTPUT["smoke"])


def checked_config(config, *overrides: dict, use_smoke: bool = True):
  """`config` with each dict of dotted-key `overrides` applied in turn (`SMOKE` first under smoke=1
  unless `use_smoke` is False),
  validated as a whole (`fedlora.config.typed`): an unknown key or a value not allowed ends the script
  with one error line, before anything is built. Returns the (ConfigDict) config."""
  from fedlora.config import typed
  try:
    if smoke() and use_smoke:
      apply_overrides(config, SMOKE)
    for ov in overrides:
      apply_overrides(config, ov)
    typed(config)
  except (KeyError, ValueError, TypeError) as e:
    fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
  return config


def parse_overrides(argv: list[str]) -> dict:
  """`key.sub=value` command-line overrides (values parsed as Python literals when possible).
  `--help` prints the running script's docstring and exits; `out=` / `replace=` set where results go
  (module docstring) and are taken out; an argument without `=` ends the script naming it."""
  import ast
  if any(a in ("-h", "--help", "help") for a in argv):
    doc = sys._getframe(1).f_globals.get("__doc__")  # the calling script's docstring (run or imported)
    print((doc or "").strip() + "\n\n" + __doc__.split("\n\n", 1)[1])
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
  OUTPUT["replace"] = pop_one(out, "replace", False, bool)
  OUTPUT["smoke"] = pop_one(out, "smoke", False, bool)
  if OUTPUT["out"] is not None and not isinstance(OUTPUT["out"], str):
    OUTPUT["out"] = str(OUTPUT["out"])
  if OUTPUT["smoke"] and OUTPUT["replace"]:
    fail("smoke=1 with replace=1: a smoke run never replaces the committed results (out=PATH names a file)")
  if OUTPUT["out"] and OUTPUT["replace"]:
    fail(f"out={OUTPUT['out']!r} with replace=1: one or the other")
  return out


def output_beside(suffix: str, name: str) -> str:
  """Where a companion file of the results (`.md` table, `.png` figure) goes: beside the results
  file `result_path(name)`, same stem (so only replace=1 rewrites the committed ones)."""
  return os.path.splitext(result_path(name))[0] + suffix


def argument_parser(doc: str):
  """An argparse parser for the scripts that take `--flags` (its `--help` prints `doc`; a bad argument
  ends the script with one `error:` line, exit code 2) with the output flags of `key=value` scripts:
  --out PATH, --replace, --smoke (module docstring); `parse_args` sets them here."""
  import argparse

  class Parser(argparse.ArgumentParser):
    def error(self, message):
      fail(f"{message} (--help lists the flags)")

    def parse_args(self, args=None, namespace=None):
      ns = super().parse_args(args, namespace)
      OUTPUT.update(out=ns.out, replace=ns.replace, smoke=ns.smoke)
      if ns.smoke and ns.replace:
        fail("--smoke with --replace: a smoke run never replaces the committed results")
      if ns.out and ns.replace:
        fail(f"--out {ns.out} with --replace: one or the other")
      return ns

  ap = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", default=None, help="results file (default runs/bench/<name>.json)")
  ap.add_argument("--replace", action="store_true",
                  help="write the committed benchmarks/results/<name>.json")
  ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (what the tests run)")
  return ap

"""Sweeps: a grid of config overrides × seeds, each run `python -m fedlora` in its own workdir.

A *grid* is `{key: [values]}` (a value that is not a list is one value; the optional `_label` names
its points); the cartesian product of its axes gives its *points*, a study is a list of grids. Each
point × seed is a run of

  python -m fedlora --config FILE --config.<key>=<value> ... --config.seed=<s> --config.workdir=<dir>/<slug>-s<s>

so a sweep is resumable run by run: a run whose workdir holds a finished run of its own config
(`finished`) is read back, never repeated; an interrupted one resumes from its checkpoint. Two
points whose configs are the same (same fingerprint) share one workdir. Every run's config is
parsed and validated as the command line does (`fedlora.cli.parse_config`, `fedlora.config.typed`)
before the first run starts. The results file (`results`) holds every run's key figures, per point
mean ± std over seeds, and per-seed differences to a reference point. Command line: `python -m
fedlora.sweep --help`; figures: `fedlora.sweep.figures`; the guide: docs/sweeps.md.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

RESERVED = ("seed", "workdir", "progress")  # set by the sweep itself: --seeds, the sweep folder
# the key figures kept per run (summary.json keys and what metrics.jsonl adds; see `read_run`)
METRICS = ("final_test_accuracy", "final_test_balanced_accuracy", "final_test_macro_f1",
           "best_test_accuracy", "final_test_loss", "uplink_bits", "uplink_attempted_bits",
           "profile_bits", "downlink_bits", "mean_ratio", "mean_round_latency_s",
           "first_round_latency_s", "deadline_misses", "train_seconds", "wall_seconds")


class SweepError(ValueError):
  """A bad sweep: grid key or value, seeds, reference, or a workdir holding another config's run."""


# ---------------------------------------------------------------- grids and points

def parse_value(text: str):
  """A command-line grid value: int, float (also inf/nan), True/False, else the string itself."""
  s = text.strip()
  if s in ("True", "False"):
    return s == "True"
  for cast in (int, float):
    try:
      return cast(s)
    except ValueError:
      pass
  return s


def fmt(v) -> str:
  """The value as `--config.key=` takes it (the same text names it in slugs and comparisons)."""
  return str(v)  # 1.0 stays '1.0' (a float for ml_collections), inf 'inf', True 'True'


def parse_grid_arg(arg: str) -> dict:
  """`key=v1,v2,...` -> `{key: [values]}` (`parse_value` for each value)."""
  key, eq, vals = arg.partition("=")
  if not eq or not key.strip() or not vals.strip():
    raise SweepError(f"--grid {arg!r}: expected key=value1,value2,... (e.g. --grid method.name=ideal,soft)")
  return {key.strip(): [parse_value(v) for v in vals.split(",")]}


def parse_assignments(args: list[str], flag: str) -> dict:
  """`['a.b=1', 'c=x,y']` -> `{'a.b': 1, 'c': 'x,y'}` (for --set and --reference)."""
  out = {}
  for arg in args:
    for part in ([arg] if flag == "--set" else arg.split(",")):
      k, eq, v = part.partition("=")
      if not eq or not k.strip():
        raise SweepError(f"{flag} {arg!r}: expected key=value")
      out[k.strip()] = parse_value(v)
  return out


def load_study(path: str) -> list[dict]:
  """The list of grids a Python file defines as `STUDY` (a list, or a function returning one)."""
  import importlib.util
  if not os.path.isfile(path):
    raise SweepError(f"--study {path!r}: no such file")
  spec = importlib.util.spec_from_file_location("_fedlora_study", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  study = getattr(mod, "STUDY", None)
  study = study() if callable(study) else study
  if not isinstance(study, (list, tuple)) or not all(isinstance(g, dict) for g in study):
    raise SweepError(f"--study {path!r}: expected STUDY, a list of grids ({{key: [values]}} dicts), "
                     f"got {type(study).__name__}")
  return list(study)


def slugify(text: str) -> str:
  """A folder-name-safe form of `text` (longer than 80 characters: cut, plus a hash of the whole)."""
  s = re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-") or "default"
  return s if len(s) <= 80 else f"{s[:64]}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def expand(grids: list[dict]) -> list[dict]:
  """`[{"label", "slug", "overrides"}]`: every grid's cartesian product, in order (the last axis
  varies fastest). A point's label is its grid's `_label` (with the axis values when the grid has
  several points), else `key=value,...`."""
  points, seen = [], {}
  for g in grids:
    g = dict(g)
    name = g.pop("_label", None)
    if name is not None and not isinstance(name, str):
      raise SweepError(f"grid _label {name!r}: expected a string naming the grid's point(s)")
    for k in g:
      if not isinstance(k, str) or not k:
        raise SweepError(f"grid key {k!r}: expected a dotted config key such as 'method.name'")
      if k in RESERVED:
        raise SweepError(f"grid key {k!r} is set by the sweep itself (use --seeds for seeds; the workdir "
                         f"is <sweep dir>/<point>-s<seed>)")
    axes = {k: (list(v) if isinstance(v, list) else [v]) for k, v in g.items()}
    for k, vals in axes.items():
      if not vals:
        raise SweepError(f"grid key {k!r} has no values")
    many = math.prod(len(v) for v in axes.values()) > 1
    for combo in itertools.product(*axes.values()):
      ov = dict(zip(axes, combo))
      kv = ",".join(f"{k}={fmt(v)}" for k, v in ov.items())
      label = name if name is not None and not many else (f"{name}:{kv}" if name is not None else kv)
      label = label or "default"
      key = json.dumps({k: fmt(v) for k, v in ov.items()}, sort_keys=True)
      if label in seen:
        if seen[label] != key:
          raise SweepError(f"two points are labelled {label!r} with different overrides")
        continue  # the same point twice (two grids share it): one row
      seen[label] = key
      points.append({"label": label, "slug": slugify(label), "overrides": ov})
  slugs = [p["slug"] for p in points]
  for s in set(slugs):
    if slugs.count(s) > 1:  # e.g. labels differing only in characters slugify replaces
      for p in points:
        if p["slug"] == s:
          p["slug"] = slugify(f"{s}-{hashlib.sha1(p['label'].encode()).hexdigest()[:8]}")
  return points


# ---------------------------------------------------------------- the plan

def command(config: str, overrides: dict, seed: int, workdir: str) -> list[str]:
  """The run's argv after `python -m fedlora`."""
  return (["--config", config] + [f"--config.{k}={fmt(v)}" for k, v in overrides.items()]
          + [f"--config.seed={seed}", f"--config.workdir={workdir}", "--config.progress=False"])


def plan(config: str, points: list[dict], seeds: list[int], sweep_dir: str, sets: dict) -> list[dict]:
  """`[{"point", "seed", "workdir", "log", "argv", "fingerprint", "rounds"}]`, one per point × seed,
  each config parsed and validated as the command line does. A point whose config equals an earlier
  point's shares its workdir (one run). SweepError names every bad point (all found, not just the
  first) and a workdir holding another config's run."""
  from fedlora.cli import parse_config
  from fedlora.config import typed
  from fedlora.run.fingerprint import describe_differences, differences, fingerprint
  for k in sets:
    if k in RESERVED:
      raise SweepError(f"--set {k}=...: {k!r} is set by the sweep itself")
  if not seeds:
    raise SweepError("--seeds: no seeds given")
  runs, errors, by_hash = [], [], {}
  for p in points:
    ov = {**sets, **p["overrides"]}
    for seed in seeds:
      wd = os.path.join(sweep_dir, f"{p['slug']}-s{seed}")
      argv = command(config, ov, seed, wd)
      try:
        cfg, _ = parse_config(["fedlora"] + argv)
        t = typed(cfg)
      except (ValueError, KeyError, TypeError) as e:  # ConfigError is a ValueError
        errors.append(f"point {p['label']!r}: {e}")
        break
      fp = fingerprint(t)
      if fp["hash"] in by_hash:  # the same config as an earlier point: its run, its workdir
        wd = by_hash[fp["hash"]]
        argv = command(config, ov, seed, wd)
      by_hash.setdefault(fp["hash"], wd)
      old = os.path.join(wd, "fingerprint.json")
      if os.path.exists(old):
        with open(old) as f:
          stored = json.load(f)
        from fedlora.run.fingerprint import same_config
        if not same_config(stored, fp):
          errors.append(f"{wd} holds a run of another config "
                        f"({describe_differences(differences(stored.get('items', {}), fp['items']))}); "
                        "move it away or pass another --dir")
      runs.append({"point": p["label"], "seed": seed, "workdir": wd,
                   "log": os.path.join(sweep_dir, "logs", f"{os.path.basename(wd)}.log"),
                   "argv": argv, "fingerprint": fp["hash"], "rounds": int(t.fed.rounds)})
  if errors:
    raise SweepError("bad sweep, nothing run:\n  " + "\n  ".join(errors))
  return runs


# ---------------------------------------------------------------- one run: finished? its figures

def finished(run: dict) -> dict | None:
  """The summary.json of a finished run of this config in `run["workdir"]`, else None: it exists,
  holds the run's fingerprint, covers the asked rounds and lacks none (`metric_rounds_missing`, what
  the command line exits 3 for)."""
  path = os.path.join(run["workdir"], "summary.json")
  try:
    with open(path) as f:
      s = json.load(f)
  except (OSError, ValueError):
    return None
  if s.get("fingerprint") != run["fingerprint"] or s.get("rounds", 0) < run["rounds"]:
    return None
  return None if s.get("metric_rounds_missing") else s


def read_run(run: dict, summary: dict) -> dict:
  """The run's record: identity, the `METRICS` that apply (None where not), the final test
  metrics, and the accuracy-vs-bits curve `[[round, headline metric, cumulative uplink bits]]`."""
  from fedlora.utils.metrics import read_metrics
  recs = [r for r in read_metrics(os.path.join(run["workdir"], "metrics.jsonl"))
          if 1 <= r["round"] <= run["rounds"]]
  lat = [r["round_latency"] for r in recs if "round_latency" in r]
  head = summary.get("headline", "test_accuracy")
  offline = os.path.join(run["workdir"], "tsfa_offline.json")
  out = {k: run[k] for k in ("point", "seed", "workdir", "log", "fingerprint", "rounds")}
  out.update({
      "headline": head,
      "final_headline": summary.get(f"final_{head}"),
      "final_test_accuracy": summary.get("final_test_accuracy"),
      "final_test_balanced_accuracy": summary.get("final_test_balanced_accuracy"),
      "final_test_macro_f1": summary.get("final_test_macro_f1"),
      "best_test_accuracy": summary.get("best_test_accuracy"),
      "final_test_loss": summary.get("final_test", {}).get("test_loss"),
      "final_test": summary.get("final_test", {}),
      "uplink_bits": 8 * summary["cum_uplink_bytes"],
      "uplink_attempted_bits": 8 * summary.get("cum_uplink_attempted_bytes", summary["cum_uplink_bytes"]),
      "profile_bits": 8 * summary.get("cum_profile_bytes", 0.0),
      "downlink_bits": 8 * summary.get("cum_downlink_bytes", 0.0),
      "mean_ratio": float(np.mean([np.mean(r["ratio"]) for r in recs if r.get("ratio")]))
      if any(r.get("ratio") for r in recs) else None,
      "mean_round_latency_s": float(np.mean(lat)) if lat else None,
      "first_round_latency_s": float(lat[0]) if lat else None,
      "deadline_misses": int(sum(r.get("deadline_misses", 0) for r in recs)),
      "train_seconds": summary.get("train_seconds_all_rounds"),
      "wall_seconds": summary.get("wall_seconds_this_invocation"),
      "curve": [[r["round"], r[head], 8 * r.get("cum_uplink_bytes", 0.0)] for r in recs if head in r],
  })
  if os.path.exists(offline):
    with open(offline) as f:
      out["offline_chosen_rank"] = json.load(f)["chosen"]["rank"]
  return out


# ---------------------------------------------------------------- running

def execute(todo: list[dict], workers: int, echo=print) -> tuple[list[dict], list[dict]]:
  """Runs `todo` (plan entries) as `python -m fedlora` subprocesses, at most `workers` at a time,
  each writing its log file. Returns (finished runs' records, failures `[{run..., "rc"}]`); a
  failing run is reported with its log path and the others go on. Ctrl-C is passed to the running
  runs (which stop cleanly at a round's end) and ends the sweep."""
  if workers < 1:
    raise SweepError(f"--workers {workers}: expected at least 1")
  queue, live, done, failed = list(todo), [], [], []
  env = dict(os.environ)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
  try:
    while queue or live:
      while queue and len(live) < workers:
        run = queue.pop(0)
        os.makedirs(os.path.dirname(run["log"]), exist_ok=True)
        log = open(run["log"], "ab")
        proc = subprocess.Popen([sys.executable, "-m", "fedlora", *run["argv"]], stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        live.append((proc, run, log, time.time()))
        echo(f"start  {run['point']} seed {run['seed']} -> {run['workdir']}")
      time.sleep(0.2)
      for item in list(live):
        proc, run, log, t0 = item
        rc = proc.poll()
        if rc is None:
          continue
        live.remove(item)
        log.close()
        s = finished(run) if rc == 0 else None
        if s is None:
          failed.append({**run, "rc": rc})
          echo(f"FAILED {run['point']} seed {run['seed']} (exit {rc}); log: {run['log']}")
        else:
          done.append(read_run(run, s))
          echo(f"done   {run['point']} seed {run['seed']} in {time.time() - t0:.0f} s: "
               f"{s.get('headline', 'test_accuracy')} {s.get('final_' + s.get('headline', 'test_accuracy'))}")
  except KeyboardInterrupt:
    for proc, *_ in live:
      proc.send_signal(signal.SIGINT)
    for proc, _, log, _ in live:
      proc.wait()
      log.close()
    raise
  return done, failed


# ---------------------------------------------------------------- results

def _stats(values: list) -> tuple:
  """(mean, population std) of the values that are not None; (None, None) if none are."""
  v = [x for x in values if x is not None]
  if not v:
    return None, None
  a = np.asarray(v, dtype=float)
  return float(a.mean()), float(a.std())


def reference_of(point: dict, points: list[dict], spec: dict, sets: dict) -> dict | None:
  """The reference point of `point`: among the points whose overrides (with `sets`) match `spec`
  (`label=` matches the point's label), the one that agrees with `point` on every other key, else
  the only match; None when neither exists."""
  def value(p, k):
    if k == "label":
      return p["label"]
    ov = {**sets, **p["overrides"]}
    return fmt(ov[k]) if k in ov else None
  match = [p for p in points if all(value(p, k) == fmt(v) for k, v in spec.items())]
  others = lambda p: {k: fmt(v) for k, v in p["overrides"].items() if k not in spec}  # noqa: E731
  same = [p for p in match if others(p) == others(point)]
  if len(same) == 1:
    return same[0]
  return match[0] if len(match) == 1 else None


def results(records: list[dict], points: list[dict], seeds: list[int], reference: dict | None,
            sets: dict) -> dict:
  """`{"runs", "points", "paired"}`: every run's record; per point the mean and population std over
  its seeds of each metric in `METRICS` (and the seeds, workdirs and the mean curve); per point
  with a reference (`reference_of`), the per-seed differences point − reference of each metric over
  the seeds both have, with their mean and population std."""
  by = {(r["point"], r["seed"]): r for r in records}
  rows = []
  for p in points:
    runs = [by[(p["label"], s)] for s in seeds if (p["label"], s) in by]
    row = {"label": p["label"], "overrides": p["overrides"], "seeds": [r["seed"] for r in runs],
           "workdirs": {str(r["seed"]): r["workdir"] for r in runs}, "mean": {}, "std": {}}
    for m in METRICS:
      row["mean"][m], row["std"][m] = _stats([r.get(m) for r in runs])
    rows.append(row)
  paired = []
  if reference:
    for p in points:
      ref = reference_of(p, points, reference, sets)
      if ref is None or ref is p:
        continue
      common = [s for s in seeds if (p["label"], s) in by and (ref["label"], s) in by]
      if not common:
        continue
      diffs = {}
      for m in METRICS:
        d = [by[(p["label"], s)].get(m) - by[(ref["label"], s)].get(m) for s in common
             if by[(p["label"], s)].get(m) is not None and by[(ref["label"], s)].get(m) is not None]
        if len(d) == len(common):
          diffs[m] = d
      paired.append({"point": p["label"], "reference": ref["label"], "seeds": common, "diffs": diffs,
                     "mean": {m: float(np.mean(d)) for m, d in diffs.items()},
                     "std": {m: float(np.std(d)) for m, d in diffs.items()}})
  return {"runs": records, "points": rows, "paired": paired}


def write_json(path: str, payload: dict) -> None:
  """Written whole, then renamed (a reader never sees half a file)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1)
  os.replace(tmp, path)


def from_results_file(path: str | None) -> dict:
  """`{(fingerprint, seed, rounds): record}` of an earlier results file (none: {}), so runs whose
  workdirs are gone (a fresh clone of committed results) are read back, not repeated."""
  if not path or not os.path.exists(path):
    return {}
  with open(path) as f:
    old = json.load(f)
  return {(r["fingerprint"], r["seed"]): r for r in old.get("runs", []) if "fingerprint" in r}


def sweep(config: str, grids: list[dict], seeds: list[int], sweep_dir: str, out: str | None = None,
          sets: dict | None = None, workers: int = 1, reference: dict | None = None,
          echo=print, earlier: str | None = None) -> dict:
  """The whole sweep (module docstring): plan and validate every run, read back finished ones (from
  their workdirs, else from the earlier runs of the same fingerprint and seed in the results file
`earlier`, by default `out`), run the rest,
  and return (and write to `out`) the results with `"counts": {"planned", "ran", "read_back",
  "failed"}` and `"failed": [{point, seed, log, rc}]`."""
  sets = dict(sets or {})
  points = expand(grids)
  if not points:
    raise SweepError("the grid has no points")
  runs = plan(config, points, seeds, sweep_dir, sets)
  if reference:
    if not any(reference_of(p, points, reference, sets) for p in points):
      allowed = sorted({k for p in points for k in p["overrides"]} | {"label"})
      raise SweepError(f"--reference {reference}: no point matches (keys of the grid: {allowed})")
  earlier = from_results_file(earlier or out)
  records, todo, by_wd, read = [], [], {}, 0
  for run in runs:
    s = finished(run)
    if s is not None:
      records.append(read_run(run, s))
      read += 1
    elif (run["fingerprint"], run["seed"]) in earlier and \
        earlier[(run["fingerprint"], run["seed"])].get("rounds", 0) >= run["rounds"]:
      records.append({**earlier[(run["fingerprint"], run["seed"])], "point": run["point"],
                      "from_results_file": True})
      read += 1
    elif run["workdir"] in by_wd:  # another point's run of the same config: read once it finished
      by_wd[run["workdir"]].append(run)
    else:
      by_wd[run["workdir"]] = [run]
      todo.append(run)
  echo(f"sweep: {len(runs)} runs ({len(points)} points x {len(seeds)} seeds), {read} finished already, "
       f"{len(todo)} to run with {workers} worker(s) under {sweep_dir}")
  done, failed = execute(todo, workers, echo)
  for rec in done:
    for twin in by_wd[rec["workdir"]]:
      records.append(rec if twin["point"] == rec["point"] else {**rec, "point": twin["point"]})
  res = results(records, points, seeds, reference, sets)
  res = {"config": config, "sets": sets, "grids": grids, "seeds": seeds, "sweep_dir": sweep_dir,
         "reference": reference, **res,
         "counts": {"planned": len(runs), "ran": len(done), "read_back": read, "failed": len(failed)},
         "failed": [{k: f[k] for k in ("point", "seed", "log", "rc")} for f in failed]}
  if out:
    write_json(out, res)
  return res

"""What a workdir holds and whether this config may run in it (before anything is written).

A workdir holds one run: `fingerprint.json` (see `fedlora.run.fingerprint`), `config.json`,
`metrics.jsonl`, `summary.json`, plots and `checkpoints/` (each step stores the fingerprint too).
`config.resume` decides what happens when the command is run again:

  auto   (default) resume when the workdir holds a run with the same fingerprint, start fresh when it
         holds none, refuse when it holds a run of a different config.
  never  start fresh; refuse when the workdir already holds a run (results are never overwritten).
  must   resume; refuse when the workdir holds no checkpoint of this config.

A workdir is either empty (or new), or holds a run (its fingerprint), or is refused naming what it
holds: fedlora never writes into a folder of files it did not write (`foreign_entries`). A refusal
names the differing keys (old -> new) and happens before anything in the workdir is touched. An empty `workdir` means `runs/<name>-<method>-s<seed>` (`default_workdir`), so runs that
differ in config name, method or seed never share a folder. Lowering `fed.rounds` below the last
checkpointed round is refused: the summary of a shorter run cannot be derived from a longer one.
Raising `fed.rounds` continues the run, unless something it computed depends on the horizon
(`horizon_keys`: a cosine lr schedule, the TSFA offline stage's V rule with horizon_rounds = 0):
then the finished rounds would differ from a fresh run of the new length, and it is refused.
"""
from __future__ import annotations

import contextlib
import json
import os

from fedlora.run.errors import RunError
from fedlora.run.fingerprint import (RESUMABLE_KEYS, data_differences, describe_differences,
                                     differences, fingerprint, fingerprint_hash, fingerprint_items,
                                     same_config)
from fedlora.run.lock import WorkdirLock
from fedlora.utils.files import write_json_atomic

RESUME_MODES = ("auto", "never", "must")
FINGERPRINT_FILE = "fingerprint.json"
RUN_FILES = (FINGERPRINT_FILE, "metrics.jsonl", "summary.json")
# every name fedlora writes at a workdir's top level (anything else there is a user's file)
OWN_ENTRIES = RUN_FILES + ("config.json", "checkpoints", "checkpoints_corrupt", ".lock", "plot.png",
                           "uplink.png", "pilot", "tsfa_offline.json")


def foreign_entries(workdir: str) -> list[str]:
  """The workdir's top-level entries fedlora does not write (sorted; [] for a missing folder)."""
  if not os.path.isdir(workdir):
    return []
  from fedlora.tracking import workdir_entries  # what the trackers write (tensorboard/, ...)
  own = OWN_ENTRIES + workdir_entries()
  return sorted(e for e in os.listdir(workdir) if e not in own and not e.endswith(".tmp"))


def check_not_foreign(workdir: str) -> None:
  """Refuses a folder that holds files but no fedlora run (checked before the lock is created)."""
  foreign = foreign_entries(workdir)
  if foreign and not existing_run(workdir):
    shown = foreign[:8] + (["..."] if len(foreign) > 8 else [])
    raise RunError(f"workdir {workdir!r} is not empty and holds no fedlora run (it has {shown}); "
                   "fedlora writes only into an empty folder or one holding a run. Nothing was "
                   "written: use a new or empty --config.workdir")


def horizon_keys(config) -> list[str]:
  """The settings whose computation depends on `fed.rounds` (so it may not change on resume)."""
  keys = [f"{s}.lr_schedule='cosine'" for s in ("client", "server")
          if config[s].lr_schedule == "cosine"]
  if config.tsfa.offline.enabled and not config.tsfa.offline.horizon_rounds:
    keys.append("tsfa.offline.horizon_rounds=0 (= fed.rounds)")
  return keys


def default_workdir(config) -> str:
  return os.path.join("runs", f"{config.name}-{config.method.name}-s{config.seed}")


def resolve_workdir(config) -> str:
  """`config.workdir`, or `default_workdir(config)` when it is empty."""
  return config.workdir or default_workdir(config)


def checkpoint_steps(workdir: str) -> list[int]:
  """Finished checkpoint steps (orbax names them by the step; unfinished ones carry a tmp suffix)."""
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit() and os.path.isdir(os.path.join(d, n)))


def existing_run(workdir: str) -> list[str]:
  """What of a run the workdir holds (file names, 'checkpoints/<step>'); [] for none."""
  found = [f for f in RUN_FILES if os.path.exists(os.path.join(workdir, f))]
  return found + [f"checkpoints/{s}" for s in checkpoint_steps(workdir)]


def read_fingerprint(workdir: str) -> dict:
  """The stored fingerprint; from `config.json` for workdirs written before fingerprints existed."""
  path = os.path.join(workdir, FINGERPRINT_FILE)
  src = path if os.path.exists(path) else os.path.join(workdir, "config.json")
  try:
    with open(src) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise RunError(f"workdir {workdir!r} holds results ({', '.join(existing_run(workdir))}) but no "
                   f"{FINGERPRINT_FILE} or config.json saying which config produced them; use a new "
                   "--config.workdir") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RunError(f"{src!r} is not valid JSON ({e}); the workdir's config cannot be checked: use a "
                   "new --config.workdir") from None
  if src == path:
    return data
  items = fingerprint_items(data)
  return {"hash": fingerprint_hash(items), "items": items}


def check_workdir(config, fp: dict) -> None:
  """Raises RunError when `config` may not run in `config.workdir` under `config.resume`."""
  w, mode = config.workdir, config.resume
  found = existing_run(w)
  check_not_foreign(w)
  if mode == "never" and found:
    raise RunError(f"config.resume='never' but workdir {w!r} already holds a run ({', '.join(found)}); "
                   "use a new or empty --config.workdir (results are never overwritten)")
  if not found:
    if mode == "must":
      raise RunError(f"config.resume='must' but workdir {w!r} holds no run to resume; check the "
                     "workdir, or use --config.resume=auto to start a fresh run there")
    return
  old = read_fingerprint(w)
  if not same_config(old, fp):
    diff = differences(old.get("items", {}), fp["items"])
    raise RunError(
        f"workdir {w!r} holds a run of a different config (fingerprint {old.get('hash')} != "
        f"{fp['hash']}); differing keys (workdir -> this command): {describe_differences(diff)}. "
        "Nothing was written. Use a new --config.workdir (or leave workdir empty for "
        f"runs/<name>-<method>-s<seed>), or rerun with the workdir's config (see its config.json). "
        f"Only {', '.join(RESUMABLE_KEYS)} may change on resume; --config.resume=auto|never|must "
        "chooses between resume-if-compatible, fresh-only and resume-only")
  steps = checkpoint_steps(w)
  old_rounds = _stored_rounds(w)
  if steps and old_rounds is not None and old_rounds != config.fed.rounds and horizon_keys(config):
    raise RunError(
        f"workdir {w!r} holds a run of fed.rounds={old_rounds} and this command has "
        f"fed.rounds={config.fed.rounds}, but {', '.join(horizon_keys(config))} depends on the number "
        "of rounds, so the rounds already run would differ from a fresh run of the new length. "
        f"Nothing was written: keep --config.fed.rounds={old_rounds}, or use a new --config.workdir")
  if mode == "must" and not steps:
    raise RunError(f"config.resume='must' but workdir {w!r} has no checkpoint to resume")
  if steps and steps[-1] > config.fed.rounds:
    raise RunError(
        f"workdir {w!r} has finished round {steps[-1]} but config.fed.rounds={config.fed.rounds}: "
        f"its state after round {config.fed.rounds} is not kept, so a {config.fed.rounds}-round "
        f"summary cannot be derived from it. Use --config.fed.rounds={steps[-1]} (or more) to "
        f"summarise or continue it, or a new --config.workdir for a {config.fed.rounds}-round run")


def _stored_rounds(workdir: str) -> int | None:
  """`fed.rounds` of the config the workdir's run was started (or last continued) with."""
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      return int(json.load(f)["fed"]["rounds"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


@contextlib.contextmanager
def open_workdir(config, lead: bool = True):
  """Creates the workdir, holds its lock and checks it may be used; yields the fingerprint.

  Raises OSError (unwritable folder) or RunError (in use, other config, resume policy) before any
  file of the run is written. `lead=False` (a multi-host process other than 0, which writes
  nothing): no folder, lock or check, only the fingerprint."""
  fp = fingerprint(config)
  if not lead:
    yield fp
    return
  if os.path.exists(config.workdir) and not os.path.isdir(config.workdir):
    raise RunError(f"--config.workdir={config.workdir!r} is a file, not a folder; choose a folder")
  check_not_foreign(config.workdir)
  try:
    os.makedirs(config.workdir, exist_ok=True)
    lock = WorkdirLock(config.workdir).acquire()
  except OSError as e:
    raise RunError(f"cannot use --config.workdir={config.workdir!r} ({e.strerror or e}"
                   f"{': ' + repr(e.filename) if e.filename else ''}); choose a folder you can "
                   "create and write to") from None
  try:
    check_workdir(config, fp)
    yield fp
  finally:
    lock.release()


def check_data(workdir: str, data_fp: dict) -> None:
  """Refuses to continue a run on data whose content changed (`fingerprint.data_fingerprint`); a
  workdir written before data fingerprints existed is continued (the fingerprint is recorded)."""
  if not existing_run(workdir):
    return
  try:
    with open(os.path.join(workdir, FINGERPRINT_FILE)) as f:
      old = json.load(f).get("data")
  except (OSError, ValueError):
    old = None
  if old is None:
    return
  diff = data_differences(old, data_fp)
  if diff:
    raise RunError(f"workdir {workdir!r} holds a run on other data: {diff}. Nothing was written. To "
                   "train on the data as it is now, use a new --config.workdir; to continue the run, "
                   "restore the data it started with")


def write_run_files(config, fp: dict) -> None:
  """config.json and fingerprint.json, each written atomically."""
  write_json_atomic(os.path.join(config.workdir, "config.json"),
                    json.loads(json.dumps(config.to_dict(), default=str)))
  write_json_atomic(os.path.join(config.workdir, FINGERPRINT_FILE), fp)

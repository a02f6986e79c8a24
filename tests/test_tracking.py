"""Trackers (fedlora/tracking/): TensorBoard event files read back with TensorBoard's own
EventAccumulator hold every numeric scalar of metrics.jsonl at its round, once, also across an
interrupted and resumed run; W&B (a fake module recording the calls) continues the same run; bad
tracker names and a missing package are config errors before any data or model."""
import json
import math
import os
import sys
import time
import types

import numpy as np
import pytest

from conftest import ROOT, tiny_config
from fedlora import cli, train
from fedlora.config import typed
from fedlora.fed.algorithm import make_algorithm
from fedlora.run.fingerprint import fingerprint, flatten
from fedlora.run.workdir import open_workdir, write_run_files
from fedlora.section import ConfigError
from fedlora.tracking import scalars
from fedlora.utils.checkpoint import Checkpointer
from fedlora.utils.metrics import read_metrics


def _train(exp, **overrides):
  """train.run without the rebuild, on the session's compiled tiny experiment (as tests/test_run.py)."""
  c = tiny_config(**overrides)
  tc = typed(c)
  algorithm = make_algorithm(exp.round_fns, exp.method, exp.parts.trainable, exp.parts.frozen,
                             exp.clients, seed=tc.seed, clients_per_round=tc.fed.clients_per_round,
                             nonfinite=tc.fed.nonfinite)
  with open_workdir(c) as fp:
    write_run_files(c, fp)
    return train.train(exp._replace(config=c, algorithm=algorithm), fp, time.time())


def _crash_after_metrics_of(round_, monkeypatch):
  """Checkpointer.save of `round_` raises: metrics.jsonl holds the round, no checkpoint does (a run
  killed between the two); the resumed run re-runs it."""
  real = Checkpointer.save

  def save(self, step, state):
    if step == round_:
      raise RuntimeError(f"simulated crash before the checkpoint of round {step}")
    return real(self, step, state)
  monkeypatch.setattr(Checkpointer, "save", save)
  return lambda: monkeypatch.setattr(Checkpointer, "save", real)


def tb_scalars(workdir) -> dict:
  """`{tag: [(step, value), ...]}` of <workdir>/tensorboard as TensorBoard's EventAccumulator reads it."""
  from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
  acc = EventAccumulator(os.path.join(workdir, "tensorboard"), size_guidance={SCALARS: 0})
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def assert_tb_mirrors_metrics(workdir, rounds):
  """Every numeric scalar of each metrics.jsonl record is in TensorBoard at its round with its value
  (float32), each tag holds each round once, and nothing else is there."""
  recs = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert [r["round"] for r in recs] == rounds
  tb, acc = tb_scalars(workdir)
  expected = {}
  for r in recs:
    for k, v in r.items():
      if k != "round" and isinstance(v, (int, float)):  # bools too (as 0/1)
        expected.setdefault(k, []).append((r["round"], float(v)))
  assert set(tb) == set(expected) and "train_loss" in tb and "test_accuracy" in tb
  for tag, points in expected.items():
    got = tb[tag]
    assert [s for s, _ in got] == [s for s, _ in points], tag  # each round once, in order
    for (s, want), (_, have) in zip(points, got):
      assert (math.isnan(want) and math.isnan(have)) or have == np.float32(want), (tag, s, want, have)
  return acc


def test_tensorboard_holds_every_scalar_of_metrics_jsonl_and_the_config(tmp_path, tiny_exp):
  w = str(tmp_path / "w")
  _train(tiny_exp, workdir=w, tracking="jsonl,tensorboard", **{"fed.rounds": 3, "eval.zero_shot": True})
  acc = assert_tb_mirrors_metrics(w, [0, 1, 2, 3])
  from tensorboard.plugins.hparams import metadata
  content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
  info = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
  hp = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
  config = flatten(json.loads(open(os.path.join(w, "config.json")).read()))
  assert set(hp) == set(config)
  assert hp["seed"] == 0 and hp["fed.rounds"] == 3 and hp["method.name"] == "ideal"
  assert hp["eval.zero_shot"] is True and hp["tracking"] == "jsonl,tensorboard"
  assert sorted(os.listdir(os.path.join(w, "tensorboard")))[0].startswith("events.out.tfevents.")


def test_metrics_jsonl_is_the_same_with_or_without_other_trackers(tmp_path, tiny_exp):
  """The jsonl tracker writes what MetricsWriter wrote: the same lines, timings aside. A tracker
  registered from a test-local file gets every record, in round order, as metrics.jsonl has it."""
  from fedlora.tracking import TRACKERS, Spec
  got = []

  class Probe:
    def __init__(self, workdir, start, config):
      got.append(("open", workdir, start, config["tracking"]))

    def write(self, record):
      got.append(json.loads(json.dumps(record, default=lambda x: np.asarray(x).tolist())))

    def close(self):
      got.append("close")
  TRACKERS.register("probe")(Spec(open=Probe))

  def lines(w):
    out = []
    for line in open(os.path.join(w, "metrics.jsonl")):
      rec = json.loads(line)
      out.append({k: v for k, v in rec.items() if not k.endswith("_seconds")})
    return out
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  try:
    _train(tiny_exp, workdir=a)
    _train(tiny_exp, workdir=b, tracking="jsonl,tensorboard,probe")
  finally:
    TRACKERS.unregister("probe")
  assert lines(a) == lines(b) and not os.path.exists(os.path.join(a, "tensorboard"))
  assert got[0] == ("open", b, 0, "jsonl,tensorboard,probe") and got[-1] == "close"
  assert got[1:-1] == [json.loads(x) for x in open(os.path.join(b, "metrics.jsonl"))]


def test_a_resumed_run_shows_each_round_once_in_tensorboard(tmp_path, tiny_exp, monkeypatch):
  """Killed after metrics.jsonl got round 2, before its checkpoint: the rerun resumes after round 1,
  runs round 2 again and round 3; TensorBoard holds rounds 1, 2, 3 once each, the values of the
  metrics readers keep."""
  w = str(tmp_path / "w")
  kw = dict(workdir=w, tracking="jsonl,tensorboard", **{"fed.rounds": 3})
  restore = _crash_after_metrics_of(2, monkeypatch)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _train(tiny_exp, **kw)
  restore()
  raw = [json.loads(x) for x in open(os.path.join(w, "metrics.jsonl"))]
  assert [r["round"] for r in raw] == [1, 2] and os.listdir(os.path.join(w, "checkpoints")) == ["1"]
  s = _train(tiny_exp, **kw)
  assert s["resumed_from_round"] == 1
  assert_tb_mirrors_metrics(w, [1, 2, 3])
  assert len(os.listdir(os.path.join(w, "tensorboard"))) == 1  # rebuilt: one event file


class FakeWandb(types.ModuleType):
  """A `wandb` module that records `init(**kwargs)`, `run.log(data, step=)` and `run.finish()`."""

  def __init__(self):
    super().__init__("wandb")
    self.calls = []

  def init(self, **kwargs):
    self.calls.append(("init", kwargs))
    calls = self.calls

    class Run:
      def log(self, data, step=None):
        calls.append(("log", dict(data), step))

      def finish(self):
        calls.append(("finish",))
    return Run()


def test_wandb_logs_each_round_once_and_a_resume_continues_the_same_run(tmp_path, tiny_exp,
                                                                        monkeypatch):
  fake = FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", fake)
  monkeypatch.delenv("WANDB_MODE", raising=False)
  monkeypatch.delenv("WANDB_PROJECT", raising=False)
  w = str(tmp_path / "w")
  kw = dict(workdir=w, tracking="jsonl,wandb", **{"fed.rounds": 3})
  restore = _crash_after_metrics_of(2, monkeypatch)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _train(tiny_exp, **kw)
  restore()
  monkeypatch.setenv("WANDB_MODE", "online")  # the user's choice is left to W&B
  _train(tiny_exp, **kw)
  inits = [c[1] for c in fake.calls if c[0] == "init"]
  assert len(inits) == 2 and inits[0]["id"] == inits[1]["id"]
  assert json.load(open(os.path.join(w, "wandb_run.json"))) == {"id": inits[0]["id"], "logged_through": 3}
  assert all(i["resume"] == "allow" and i["dir"] == w and i["project"] == "fedlora" for i in inits)
  assert inits[0]["mode"] == "offline" and "mode" not in inits[1]
  config = flatten(json.loads(open(os.path.join(w, "config.json")).read()))
  assert inits[0]["config"] == config and inits[1]["config"]["seed"] == 0
  logs = [c for c in fake.calls if c[0] == "log"]
  assert [c[2] for c in logs] == [1, 2, 3]  # round 2, re-run after the crash, is not logged twice
  recs = read_metrics(os.path.join(w, "metrics.jsonl"))
  for (_, data, step), rec in zip(logs, recs):  # round 2 as first run: its timings may differ
    untimed = lambda d: {k: v for k, v in d.items() if not k.endswith("_seconds")}  # noqa: E731
    assert set(data) == set(scalars(rec)) and untimed(data) == untimed(scalars(rec)), step
    assert "train_loss" in data and "round_seconds" in data and "round" not in data
  assert [c[0] for c in fake.calls].count("finish") == 2


def test_wandb_named_on_resume_logs_the_earlier_rounds_first(tmp_path, tiny_exp, monkeypatch):
  fake = FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", fake)
  w = str(tmp_path / "w")
  _train(tiny_exp, workdir=w, **{"fed.rounds": 2})
  _train(tiny_exp, workdir=w, tracking="jsonl,wandb", **{"fed.rounds": 3})
  assert [c[2] for c in fake.calls if c[0] == "log"] == [1, 2, 3]


@pytest.mark.parametrize("value,match", [
    ("jsonl,tensorbord", r"config\.tracking='jsonl,tensorbord' is not allowed: 'tensorbord' is not "
                         r"a tracker; a comma-separated list of \('jsonl', 'tensorboard', 'wandb'\)"),
    ("tensorboard", r"config\.tracking='tensorboard' is not allowed: 'jsonl' is missing"),
    ("jsonl,jsonl", r"a tracker is named twice"),
    ("jsonl,", r"'' is not a tracker"),
    (3, r"config\.tracking=3 is not allowed"),
])
def test_bad_tracker_names_are_config_errors_naming_the_allowed_ones(value, match):
  c = tiny_config().to_dict()
  c["tracking"] = value  # (a plain dict: a ConfigDict would refuse the int itself)
  with pytest.raises(ConfigError, match=match):
    typed(c)


def test_wandb_without_the_package_stops_before_workdir_data_or_model(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
  with pytest.raises(ConfigError, match=r"config\.tracking='jsonl,wandb'.*'wandb' needs the wandb "
                                         r"package.*pip install wandb"):
    typed(tiny_config(tracking="jsonl,wandb"))
  touched = []
  import fedlora.data.readers.bbcnews as bbc
  monkeypatch.setattr(bbc, "load_bbcnews", lambda *a, **k: touched.append("data"))
  monkeypatch.setattr(train, "load_pretrained", lambda *a, **k: touched.append("model"))
  w = tmp_path / "w"
  code = cli.main(["fedlora", "--config", os.path.join(ROOT, "configs", "tiny.py"),
                   "--config.tracking=jsonl,wandb", f"--config.workdir={w}"])
  assert code == 2 and touched == [] and not w.exists()
  assert "pip install wandb" in capsys.readouterr().err


def test_tracking_is_a_resumable_key_and_its_folders_belong_to_the_run(tmp_path):
  """Adding a tracker on resume keeps the fingerprint; a workdir holding tensorboard/ and
  wandb_run.json is still a fedlora run, not a folder of foreign files."""
  from fedlora.run.workdir import foreign_entries
  assert fingerprint(tiny_config())["hash"] == \
      fingerprint(tiny_config(tracking="jsonl,tensorboard,wandb"))["hash"]
  for e in ("tensorboard", "wandb", "wandb_run.json", "notes.txt"):
    (tmp_path / e).mkdir()
  assert foreign_entries(str(tmp_path)) == ["notes.txt"]

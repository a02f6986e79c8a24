"""fedlora.sweep: a grid × seeds of real runs (configs/tiny.py, 1 round, 2 worker processes), its
results file against the runs' own summary.json and a numpy recomputation, resuming without
running anything, refusal of a bad grid before any run, and the figures."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from conftest import ROOT
from fedlora import sweep as sw
from fedlora.sweep.__main__ import main
from fedlora.sweep.figures import numeric_axes, pareto

SMALL = ["--set", "fed.rounds=1", "--set", "model.num_layers=1", "--set", "data.max_length=16",
         "--set", "fed.local_steps=1", "--set", "eval.every=1"]


def command(d) -> list:
  return ["--config", os.path.join(ROOT, "configs/tiny.py"), "--grid", "lora.rank=2,4", "--seeds", "0,1",
          "--workers", "2", "--dir", str(d), "--reference", "lora.rank=2"] + SMALL


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """The sweep run once: (sweep folder, results, stdout)."""
  import contextlib
  import io
  d = tmp_path_factory.mktemp("sweep")
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    rc = main(command(d))
  assert rc == 0, buf.getvalue()
  with open(d / "results.json") as f:
    return d, json.load(f), buf.getvalue()


def test_every_run_is_its_own_summary(swept):
  d, res, out = swept
  assert res["counts"] == {"planned": 4, "ran": 4, "read_back": 0, "failed": 0}
  assert "ran 4, read back 0, failed 0 of 4 runs" in out
  assert sorted((r["point"], r["seed"]) for r in res["runs"]) == \
      [("lora.rank=2", 0), ("lora.rank=2", 1), ("lora.rank=4", 0), ("lora.rank=4", 1)]
  for r in res["runs"]:
    assert r["workdir"] == str(d / f"{r['point']}-s{r['seed']}")
    with open(os.path.join(r["workdir"], "summary.json")) as f:
      s = json.load(f)
    with open(os.path.join(r["workdir"], "config.json")) as f:
      c = json.load(f)
    assert c["seed"] == r["seed"] and c["lora"]["rank"] == int(r["point"][-1]) and c["fed"]["rounds"] == 1
    assert r["final_test_accuracy"] == s["final_test_accuracy"]
    assert r["final_test_macro_f1"] == s["final_test_macro_f1"]
    assert r["uplink_bits"] == 8 * s["cum_uplink_bytes"] and r["fingerprint"] == s["fingerprint"]


def test_means_stds_and_paired_differences_match_numpy(swept):
  _, res, _ = swept
  acc = {(r["point"], r["seed"]): r["final_test_accuracy"] for r in res["runs"]}
  bits = {(r["point"], r["seed"]): r["uplink_bits"] for r in res["runs"]}
  for p in res["points"]:
    a = np.array([acc[(p["label"], s)] for s in (0, 1)])
    assert p["seeds"] == [0, 1]
    assert p["mean"]["final_test_accuracy"] == pytest.approx(a.mean())
    assert p["std"]["final_test_accuracy"] == pytest.approx(a.std())
  (pair,) = res["paired"]   # the reference has no pair with itself
  assert (pair["point"], pair["reference"], pair["seeds"]) == ("lora.rank=4", "lora.rank=2", [0, 1])
  d = np.array([acc[("lora.rank=4", s)] - acc[("lora.rank=2", s)] for s in (0, 1)])
  assert pair["diffs"]["final_test_accuracy"] == pytest.approx(list(d))
  assert pair["mean"]["final_test_accuracy"] == pytest.approx(d.mean())
  assert pair["std"]["final_test_accuracy"] == pytest.approx(d.std())
  b = np.array([bits[("lora.rank=4", s)] - bits[("lora.rank=2", s)] for s in (0, 1)])
  assert pair["mean"]["uplink_bits"] == pytest.approx(b.mean()) and b.mean() > 0  # rank 4 sends more


def test_the_same_command_again_runs_nothing(swept, capsys):
  d, res, _ = swept
  mtimes = {p: os.path.getmtime(p) for p in glob.glob(str(d / "*-s*" / "*"))}
  assert main(command(d)) == 0
  out = capsys.readouterr().out
  assert "ran 0, read back 4, failed 0 of 4 runs" in out and "start " not in out
  assert {p: os.path.getmtime(p) for p in glob.glob(str(d / "*-s*" / "*"))} == mtimes
  with open(d / "results.json") as f:
    again = json.load(f)
  assert again["points"] == res["points"] and again["paired"] == res["paired"]


def test_figures_are_png_files(swept):
  d, _, out = swept
  for name in ("results.png", "results-lora.rank.png"):
    assert f"figure: {d / name}" in out
    with open(d / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_bad_grid_key_or_value_is_refused_before_any_run(tmp_path, capsys):
  for grid, named in (("method.nme=ideal,soft", "nme"), ("method.name=ideal,sof", "'sof'"),
                      ("seed=1,2", "'seed'")):
    rc = main(["--config", os.path.join(ROOT, "configs/tiny.py"), "--grid", grid, "--dir",
               str(tmp_path / "s")] + SMALL)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and named in err, err
    assert not (tmp_path / "s").exists()   # nothing run, nothing written


def test_expand_is_the_cartesian_product_with_labels():
  pts = sw.expand([{"a.x": [1, 2], "b.y": ["u", "v"]}, {"_label": "ref", "a.x": 0}])
  assert [p["overrides"] for p in pts] == [{"a.x": 1, "b.y": "u"}, {"a.x": 1, "b.y": "v"},
                                          {"a.x": 2, "b.y": "u"}, {"a.x": 2, "b.y": "v"}, {"a.x": 0}]
  assert pts[0]["label"] == "a.x=1,b.y=u" and pts[-1]["label"] == "ref"
  assert len({p["slug"] for p in pts}) == 5
  assert sw.reference_of(pts[1], pts, {"label": "ref"}, {})["label"] == "ref"
  # the reference that agrees on the other keys: b.y=u against a.x=1 at the same b.y
  assert sw.reference_of(pts[3], pts, {"a.x": 1}, {})["label"] == "a.x=1,b.y=v"
  with pytest.raises(sw.SweepError, match="labelled 'ref'"):
    sw.expand([{"_label": "ref", "a.x": 0}, {"_label": "ref", "a.x": 1}])
  assert sw.parse_grid_arg("t.b=0.5,inf,x,True") == {"t.b": [0.5, float("inf"), "x", True]}


def test_pareto_front_and_numeric_axes():
  xs, ys = [1.0, 2.0, 3.0, 2.5, 0.5], [80.0, 85.0, 84.0, 90.0, 70.0]
  assert pareto(xs, ys) == [4, 0, 1, 3]          # 3.0 bits at 84 % is beaten by 2.5 bits at 90 %
  pts = [{"overrides": {"m": "a", "r": 2}}, {"overrides": {"m": "b", "r": 4}}, {"overrides": {"m": "a", "r": 2}}]
  assert numeric_axes(pts) == ["r"]

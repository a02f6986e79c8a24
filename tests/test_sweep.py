"""benchmarks/sweep_methods.py's bookkeeping: a result is only ever read from a run of its own config."""
from __future__ import annotations

import json
import os

import pytest

from benchmarks import sweep_methods as sweep
from benchmarks.common import parse_overrides, pop_list
from fedlora.run.fingerprint import fingerprint

COMMON = {"fed.rounds": 20, "data.max_length": 32}


def test_folders_follow_the_config_not_the_label(tmp_path):
  dirs = sweep.run_dirs(str(tmp_path), COMMON)
  # identical configs share one folder: SOFT's defaults are gram + delta, so main/soft_r4 is that
  # ablation row, and score/cosine_delta (another B term) is not
  assert dirs[("main", "soft_r4")] == dirs[("score", "gram_delta")]
  assert dirs[("main", "soft_r4")] != dirs[("score", "cosine_delta")]
  assert len(set(dirs.values())) == len({sweep.run_config(m, ov, COMMON, "", 0).to_json(sort_keys=True)
                                         for _, _, m, ov in sweep.grid()})
  # a different common override (another sequence length) never shares a folder
  other = sweep.run_dirs(str(tmp_path), {**COMMON, "data.max_length": 64})
  assert not set(other.values()) & set(dirs.values())


def _finish(config, rounds):
  os.makedirs(config.workdir, exist_ok=True)
  with open(os.path.join(config.workdir, "fingerprint.json"), "w") as f:
    json.dump(fingerprint(config), f)
  with open(os.path.join(config.workdir, "summary.json"), "w") as f:
    json.dump({"rounds": rounds}, f)


def test_a_finished_run_of_another_config_is_refused(tmp_path):
  wd = str(tmp_path / "run")
  c = sweep.run_config("soft", {"method.allocation": "fixed"}, COMMON, wd, 0)
  assert not sweep.check_finished(c)                 # nothing there yet
  _finish(c, 20)
  assert sweep.check_finished(c)
  longer = sweep.run_config("soft", {"method.allocation": "fixed"}, {**COMMON, "fed.rounds": 30}, wd, 0)
  assert not sweep.check_finished(longer)            # 20 of 30 rounds: resume, not a result
  cos = sweep.run_config("soft", {"method.allocation": "fixed", "method.ortho_b": "cosine"}, COMMON, wd, 0)
  with pytest.raises(SystemExit, match="method.ortho_b: 'gram' -> 'cosine'"):
    sweep.check_finished(cos)
  cos.fed.rounds = 30                                # ... also when it would be resumed
  with pytest.raises(SystemExit, match="another config"):
    sweep.check_finished(cos)


def test_pop_list_reads_comma_lists_as_parsed():
  ov = parse_overrides(["seeds=0,1,2", "seed1=3", "runs=a,b", "one=x"])
  assert pop_list(ov, "seeds", "", int) == [0, 1, 2]   # arrives as the tuple (0, 1, 2)
  assert pop_list(ov, "seed1", "", int) == [3]
  assert pop_list(ov, "runs", "") == ["a", "b"] and pop_list(ov, "one", "") == ["x"]
  assert pop_list(ov, "absent", "0,5", int) == [0, 5] and ov == {}


def test_rows_of_the_results_file_survive_a_fresh_checkout(tmp_path):
  """A results file written with the same common overrides keeps its rows when their run folders
  are gone (a fresh clone adding rows); with other common overrides, or another config behind the
  same label (another folder name), they are not read."""
  dirs = sweep.run_dirs(str(tmp_path / "old"), COMMON)
  summary = {"final_test_accuracy": 0.9, "uplink_bits": 8.0, "uplink_attempted_bits": 8.0,
             "profile_bits": 0.0, "mean_ratio": 0.25, "mean_round_latency_s": 0.5,
             "deadline_misses": 0, "curve": [[20, 0.9, 8.0]]}
  path = str(tmp_path / "sweep_methods.json")
  with open(path, "w") as f:
    json.dump({"common_overrides": COMMON, "groups": {"main": {
        "soft_r4": {"folder": dirs[("main", "soft_r4")], "per_seed": {"1": summary}},
        "offline": {"folder": "runs/x/soft-000000000000", "per_seed": {"0": summary}}}}}, f)
  earlier = sweep.earlier_runs(path, COMMON)
  res = sweep.collect(str(tmp_path / "new"), [0, 1], COMMON, earlier)
  row = res["main"]["soft_r4"]
  assert row["seeds"] == [1] and row["from_results_file"] == [1] and row["acc_mean"] == 0.9
  assert res["score"]["gram_delta"]["from_results_file"] == [1]   # the same config under its other label
  found = {(g, l) for g, rows in res.items() for l in rows}
  assert found == {k for k, d in dirs.items() if d == dirs[("main", "soft_r4")]}  # not the unknown folder
  assert sweep.earlier_runs(path, {**COMMON, "data.max_length": 64}) == {}
  # the report reads every seed found, whatever seeds its own invocation ran (here: seed 1)
  assert sweep.collect(str(tmp_path / "new"), None, COMMON, earlier)["main"]["soft_r4"]["seeds"] == [1]


def test_head_to_head_is_the_paired_difference_over_shared_seeds():
  """Per-seed differences over the seeds both rows finished, their mean and standard error
  (sample std / √n) against a hand computation; pairs with a missing row are left out."""
  def row(accs, bits=100.0):
    return {"uplink_bits_mean": bits, "per_seed": {str(s): {"final_test_accuracy": a}
                                                   for s, a in accs.items()}}
  res = {"main": {"soft_r4": row({0: 0.90, 1: 0.92, 2: 0.95, 3: 0.91}, 90.0),
                  "svd_r4": row({0: 0.91, 1: 0.91, 2: 0.93})}}
  (h,) = sweep.head_to_head(res)
  assert (h["row"], h["ref"], h["n"]) == ("main/soft_r4", "main/svd_r4", 3)
  assert h["diffs"] == pytest.approx([-1.0, 1.0, 2.0])
  assert h["mean"] == pytest.approx(2.0 / 3)
  d = [-1.0, 1.0, 2.0]
  m = sum(d) / 3
  assert h["se"] == pytest.approx((sum((x - m) ** 2 for x in d) / 2) ** 0.5 / 3 ** 0.5)
  assert h["bits_ratio"] == pytest.approx(0.9)
  assert "| main/soft_r4 | main/svd_r4 | 3 | +0.67 ± 0.88 | 0.900 |" in sweep.head_to_head_markdown([h])


def test_update_capture_errors_against_the_obvious_cases():
  """bench_update_capture.errors: sending the whole update misses nothing; sending nothing misses all
  of the product change (error 1) and keeps no factor energy; half of B's update is in between."""
  import numpy as np
  from benchmarks.bench_update_capture import errors
  rng = np.random.default_rng(0)
  a0, b0 = rng.normal(size=(6, 3)), rng.normal(size=(3, 5))
  da, db = rng.normal(size=(4, 6, 3)), rng.normal(size=(4, 3, 5))
  assert errors(a0, b0, da, db, da, db) == {"client": 0.0, "kept": 1.0, "aggregate": 0.0}
  none = errors(a0, b0, da, db, 0 * da, 0 * db)
  assert none["client"] == pytest.approx(1.0) and none["aggregate"] == pytest.approx(1.0)
  assert none["kept"] == 0.0
  half = errors(a0, b0, da, db, da, db * np.array([1, 1, 0])[None, :, None])
  assert 0.0 < half["client"] < 1.0 and 0.0 < half["kept"] < 1.0


def test_pending_skips_finished_runs_and_rows_of_the_results_file(tmp_path):
  """A seed runs unless its folder holds the finished run or the results file holds its row (same
  config folder name), so a fresh clone does not run again what the committed results hold."""
  out = str(tmp_path / "runs")
  dirs = sweep.run_dirs(out, COMMON)
  todo = [t for t in sweep.grid() if t[1] in ("soft_r4", "svd_r4") and t[0] == "main"]
  soft = next(t for t in todo if t[1] == "soft_r4")
  _finish(sweep.run_config(soft[2], soft[3], COMMON, os.path.join(dirs[("main", "soft_r4")], "seed0"), 0),
          20)
  earlier = {(os.path.basename(dirs[("main", "svd_r4")]), 1): {"final_test_accuracy": 0.9}}
  left = [(g, l, s) for g, l, _, _, s, _ in sweep.pending(todo, [0, 1], out, COMMON, earlier)]
  assert left == [("main", "svd_r4", 0), ("main", "soft_r4", 1)]
  # rerun=1: the results file's rows run again (a finished run on disk still does not)
  left = [(g, l, s) for g, l, _, _, s, _ in sweep.pending(todo, [0, 1], out, COMMON, earlier, True)]
  assert left == [("main", "svd_r4", 0), ("main", "soft_r4", 1), ("main", "svd_r4", 1)]


def test_stop_at_is_the_next_such_time_also_across_midnight():
  """stop_at=01:30 given at 23:46 stops the next day at 01:30 (a string comparison stopped at once)."""
  import datetime as dt
  utc = dt.timezone.utc
  now = dt.datetime(2026, 12, 1, 23, 46, 30, tzinfo=utc)
  assert sweep.stop_deadline("01:30", now) == dt.datetime(2026, 12, 2, 1, 30, tzinfo=utc)
  assert sweep.stop_deadline("23:50", now) == dt.datetime(2026, 12, 1, 23, 50, tzinfo=utc)
  assert sweep.stop_deadline("23:46", now) <= now          # this minute: stop now
  for bad in ("25:00", "1:75", "noon"):
    with pytest.raises(SystemExit, match=f"stop_at='{bad}'"):
      sweep.stop_deadline(bad, now)


def test_rank_check_finds_the_best_rank_over_common_seeds_and_the_offline_distance():
  """The best rank is the highest mean over the seeds every rank row finished (a seed only some
  rows have is left out; a tie goes to the smaller rank); each offline choice's distance is counted
  in grid steps; a budget whose sweep lacks a rank is not checked."""
  def row(accs, **kw):
    return {"per_seed": {s: {"final_test_accuracy": a} for s, a in accs.items()}, **kw}
  acc = {2: 0.93, 4: 0.95, 8: 0.95, 16: 0.94, 32: 0.92}
  rows = {f"rank_{r}": row({0: a, 1: a}) for r, a in acc.items()}
  rows["rank_32"]["per_seed"][2] = {"final_test_accuracy": 0.99}   # seed 2: only rank 32 ran it
  rows["offline"] = row({0: 0.9, 1: 0.9}, offline_chosen_rank=[2, 16])
  rows.update({f"rank_{r}_t050": row({0: 0.9}) for r in (2, 4, 8, 16)})  # no rank 32 at 0.5 s
  (c,) = sweep.rank_check({"rank": rows})
  assert c["budget"] == "offline" and c["seeds"] == [0, 1]
  assert c["best"] == 4 and c["acc"][32] == pytest.approx(0.92)
  assert c["chosen"] == [2, 16] and c["steps"] == [1, 2]
  assert "| offline | 2 | 93.00 | 95.00 | 95.00 | 94.00 | 92.00 | 4 | [2, 16] | [1, 2] |" in \
      sweep.rank_check_markdown([c])


def test_aggregate_first_round_latency_over_the_seeds_that_have_it():
  """Round-1 latency is averaged over the seeds that report it (a row read back from an older results
  file has none), and is None when no seed does."""
  def run(first=None):
    r = {"final_test_accuracy": 0.9, "uplink_bits": 1.0, "uplink_attempted_bits": 1.0, "profile_bits": 0.0,
         "mean_ratio": 0.5, "mean_round_latency_s": 0.5, "deadline_misses": 0, "curve": [(5, 0.9, 1.0)]}
    return r if first is None else {**r, "first_round_latency_s": first}
  assert sweep.aggregate({0: run(1.0), 1: run(), 2: run(2.0)})["first_round_latency_s"] == 1.5
  assert sweep.aggregate({0: run(), 1: run()})["first_round_latency_s"] is None

"""benchmarks/sweep_methods.py: its study as fedlora.sweep grids, the rows report.py reads, head to head
and the rank check (the running and resuming are fedlora.sweep's: tests/test_sweep.py)."""
from __future__ import annotations

import pytest

from benchmarks import sweep_methods as sweep
from benchmarks.common import parse_overrides, pop_list
from fedlora import sweep as sw



def test_pop_list_reads_comma_lists_as_parsed():
  ov = parse_overrides(["seeds=0,1,2", "seed1=3", "runs=a,b", "one=x"])
  assert pop_list(ov, "seeds", "", int) == [0, 1, 2]   # arrives as the tuple (0, 1, 2)
  assert pop_list(ov, "seed1", "", int) == [3]
  assert pop_list(ov, "runs", "") == ["a", "b"] and pop_list(ov, "one", "") == ["x"]
  assert pop_list(ov, "absent", "0,5", int) == [0, 5] and ov == {}


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


def test_aggregate_first_round_latency_over_the_seeds_that_have_it():
  """Round-1 latency is averaged over the seeds that report it (a row read back from an older results
  file has none), and is None when no seed does."""
  def run(first=None):
    r = {"final_test_accuracy": 0.9, "uplink_bits": 1.0, "uplink_attempted_bits": 1.0, "profile_bits": 0.0,
         "mean_ratio": 0.5, "mean_round_latency_s": 0.5, "deadline_misses": 0, "curve": [(5, 0.9, 1.0)]}
    return r if first is None else {**r, "first_round_latency_s": first}
  assert sweep.aggregate({0: run(1.0), 1: run(), 2: run(2.0)})["first_round_latency_s"] == 1.5
  assert sweep.aggregate({0: run(), 1: run()})["first_round_latency_s"] is None



def test_the_study_is_one_labelled_point_per_row_and_rows_come_back_in_grid_order():
  """STUDY's points are the grid's rows (label <group>/<label>, method.name and the row's overrides);
  groups_of turns run records back into the rows report.py reads: mean ± std over seeds, per seed."""
  every = sweep.grid()
  points = sw.expand(sweep.study(every))
  assert [p["label"] for p in points] == list(dict.fromkeys(f"{g}/{l}" for g, l, _, _ in every))
  g, l, m, ov = every[0]
  assert points[0]["overrides"] == {"method.name": m, **ov}
  def rec(point, seed, acc):
    return {"point": point, "seed": seed, "workdir": f"w/{point}-{seed}", "final_test_accuracy": acc,
            "uplink_bits": 8.0, "uplink_attempted_bits": 8.0, "profile_bits": 0.0, "mean_ratio": 0.25,
            "mean_round_latency_s": 0.5, "deadline_misses": 0, "curve": [[5, acc, 8.0]]}
  rows = sweep.groups_of([rec("score/cosine_delta", 1, 0.8), rec("main/svd_r4", 0, 0.9),
                          rec("main/svd_r4", 1, 0.7), rec("not/in_grid", 0, 0.1)])
  assert list(rows) == ["main", "score"] and list(rows["main"]) == ["svd_r4"]
  r = rows["main"]["svd_r4"]
  assert r["seeds"] == [0, 1] and r["acc_mean"] == pytest.approx(0.8) and r["acc_std"] == pytest.approx(0.1)
  assert set(r["per_seed"]) == {"0", "1"} and r["workdirs"]["1"] == "w/main/svd_r4-1"

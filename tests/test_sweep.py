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

"""What a run trusts is checked: the folder it writes into, the data it resumes on, the keys it lets
change on resume, the metrics its summary is derived from, the inputs the model can take, and the
settings that have no effect. Each test failed before these checks existed."""
import csv
import hashlib
import json
import os

import numpy as np
import pytest

from conftest import ROOT, tiny_config
from fedlora.section import ConfigError

TINY = os.path.join(ROOT, "configs", "tiny.py")
FAST = ["--config.model.num_layers=1", "--config.data.max_length=16", "--config.fed.local_steps=1",
        "--config.fed.batch_size=2", "--config.eval.batch_size=16", "--config.fed.rounds=1"]


def cli(*args):
  from fedlora import cli as c
  return c.main(["fedlora", "--config", TINY, *FAST, *args])


def tree_hash(folder) -> dict:
  out = {}
  for dp, _, files in os.walk(folder):
    for f in files:
      p = os.path.join(dp, f)
      out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
  return out


def write_csv(path, rows, header=("text", "label")):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def csv_rows(n=60, labels=("pos", "neg", "mid")):
  words = ["good", "bad", "fine", "great", "awful", "okay", "nice", "poor", "plain", "superb"]
  return [(f"{words[i % 10]} film number {i} was {words[(3 * i) % 10]}", labels[i % len(labels)])
          for i in range(n)]


def test_a_folder_that_holds_no_run_is_refused_and_left_untouched(tmp_path, capsys):
  """A model folder (config.json + weights) as the workdir: refused, nothing in it changed."""
  w = tmp_path / "model"
  w.mkdir()
  (w / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 4}))
  (w / "model.safetensors").write_bytes(b"\0" * 64)
  before = tree_hash(w)
  assert cli(f"--config.workdir={w}") == 2
  err = capsys.readouterr().err
  assert "is not empty and holds no fedlora run" in err and "model.safetensors" in err
  assert tree_hash(w) == before


def test_changed_data_is_refused_naming_the_file(tmp_path, capsys):
  data, w = tmp_path / "d.csv", tmp_path / "w"
  write_csv(data, csv_rows())
  args = ["--config.data.source=csv", f"--config.data.path={data}", "--config.data.max_examples=0",
          f"--config.workdir={w}"]
  assert cli(*args) == 0
  write_csv(data, csv_rows()[:-1] + [("a brand new row", "pos")])  # one row edited
  before = tree_hash(w)
  assert cli(*args, "--config.fed.rounds=2") == 2
  err = capsys.readouterr().err
  assert "holds a run on other data" in err and str(data) in err
  assert tree_hash(w) == before


def test_raising_rounds_under_a_cosine_schedule_is_refused(tmp_path, capsys):
  w = tmp_path / "w"
  assert cli(f"--config.workdir={w}", "--config.client.lr_schedule=cosine") == 0
  before = tree_hash(w)
  assert cli(f"--config.workdir={w}", "--config.client.lr_schedule=cosine", "--config.fed.rounds=2") == 2
  assert "client.lr_schedule='cosine' depends on the number of rounds" in capsys.readouterr().err
  assert tree_hash(w) == before


def test_resumable_keys_leave_the_result_of_a_fresh_run(tmp_path):
  """Resumed with the resumable keys changed == fresh with them (metrics of every round). The chunk,
  memory and mesh keys and model.grad_barrier have their own tests (test_fed, test_models, test_run)."""
  change = ["--config.fed.rounds=2", "--config.eval.every=2", "--config.checkpoint.every=2",
            "--config.checkpoint.keep=1", "--config.eval.batch_size=8", "--config.progress=True"]
  w1, w2 = tmp_path / "resumed", tmp_path / "fresh"
  assert cli(f"--config.workdir={w1}") == 0
  assert cli(f"--config.workdir={w1}", *change) == 0
  assert cli(f"--config.workdir={w2}", *change) == 0
  from fedlora.utils.metrics import read_metrics
  drop = ("round_seconds", "eval_seconds")
  a = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(str(w1 / "metrics.jsonl"))]
  b = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(str(w2 / "metrics.jsonl"))]
  assert a[-1]["round"] == 2 and len(a) == len(b)
  for ra, rb in zip(a, b):
    for k in set(ra) & set(rb):
      if not k.startswith("test_"):  # evaluation cadence is what changed; the training is not
        assert ra[k] == rb[k], k
  assert a[-1]["test_accuracy"] == b[-1]["test_accuracy"]


def test_a_torn_metrics_line_is_reported_not_frozen(tmp_path, capsys):
  w = tmp_path / "w"
  assert cli(f"--config.workdir={w}", "--config.fed.rounds=2") == 0
  m = w / "metrics.jsonl"
  lines = m.read_text().splitlines()
  m.write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")  # torn last record
  assert cli(f"--config.workdir={w}", "--config.fed.rounds=2") == 3
  assert "summary.json lacks round(s) [2]" in capsys.readouterr().err
  summary = json.loads((w / "summary.json").read_text())
  assert summary["metric_rounds_missing"] == [2]


def test_generation_settings_are_refused_before_anything_runs(tmp_path):
  w = tmp_path / "w"
  from fedlora import cli as c
  code = c.main(["fedlora", "--config", os.path.join(ROOT, "configs", "lm_instruct.py:tiny"),
                 "--config.eval.max_new_tokens=0", "--config.eval.print_samples=2",
                 f"--config.workdir={w}"])
  assert code == 2 and not w.exists()


def test_rows_longer_than_the_position_table_are_refused_at_setup(tmp_path):
  """A position table shorter than data.max_length (the tokenizer allows more): named at setup."""
  dst = copy_model(tmp_path, max_position_embeddings=64)
  from fedlora.train import build
  with pytest.raises(ConfigError, match=r"config\.data\.max_length=100 is not allowed .*64 positions"):
    build(tiny_config(**{"model.path": str(dst), "data.max_length": 100, "model.num_layers": 1}))


def copy_model(tmp_path, **config_changes):
  """The tiny experiment's model folder, copied with its config.json changed."""
  import shutil
  from fedlora.config import typed
  from fedlora.utils.model_path import resolve_model_path
  src = resolve_model_path(typed(tiny_config()).model)
  dst = tmp_path / "model"
  shutil.copytree(src, dst)
  cfg = json.loads((dst / "config.json").read_text())
  (dst / "config.json").write_text(json.dumps(dict(cfg, **config_changes)))
  return dst


def test_token_ids_beyond_the_vocabulary_are_refused_at_setup(tmp_path):
  """A tokenizer that is not the model's: ids >= vocab_size are named before any training."""
  from fedlora.train import build
  dst = copy_model(tmp_path, vocab_size=1000)  # smaller than the tokenizer's
  with pytest.raises(ValueError, match=r"token id \d+, but the model .* has a vocabulary of 1000"):
    build(tiny_config(**{"model.path": str(dst), "model.num_layers": 1}))


def test_labels_are_stripped_folded_on_request_and_near_duplicates_named(tmp_path):
  from fedlora.data.sources import load_dataset_with_report
  from fedlora.run.errors import RunWarning
  data = tmp_path / "d.csv"
  write_csv(data, [("a", " pos"), ("b", "pos "), ("c", "Pos"), ("d", "neg"), ("e", "neg")])
  with pytest.warns(RunWarning, match=r"differ only in case.*\['Pos', 'pos'\]"):
    ds, _ = load_dataset_with_report({"source": "csv", "path": str(data)})
  assert ds.features["label"].names == ["Pos", "neg", "pos"]  # spaces gone, case kept apart
  ds, _ = load_dataset_with_report({"source": "csv", "path": str(data), "label_case_fold": True})
  assert ds.features["label"].names == ["neg", "pos"]
  assert [ds.features["label"].int2str(i) for i in ds["label"]] == ["pos", "pos", "pos", "neg", "neg"]


def test_duplicate_csv_columns_are_an_error(tmp_path):
  from fedlora.data.sources import load_dataset_with_report
  data = tmp_path / "d.csv"
  write_csv(data, [("a", "pos", "x")], header=("text", "label", "label"))
  with pytest.raises(ValueError, match=r"duplicate column name\(s\) \['label'\]"):
    load_dataset_with_report({"source": "csv", "path": str(data)})


def test_missing_classes_and_truncation_are_reported(tmp_path):
  from fedlora.data.clients import warn_missing_classes
  from fedlora.run.errors import RunWarning
  with pytest.warns(RunWarning, match=r"\['c'\] have no example in the test split"):
    warn_missing_classes(["a", "b", "c"], [0, 1, 2], [0, 1])
  from fedlora.data.tokenize import count_truncated, load_tokenizer
  from fedlora.config import typed
  from fedlora.utils.model_path import resolve_model_path
  tok = load_tokenizer(resolve_model_path(typed(tiny_config()).model))
  assert count_truncated(["one two", "one two three four five six seven eight nine ten"], tok, 6) == 1


def test_settings_without_effect_are_warned(tmp_path, capsys):
  w = tmp_path / "w"
  assert cli(f"--config.workdir={w}", "--config.server.momentum=0.5",
             "--config.method.allocation=tsfa") == 0
  err = capsys.readouterr().err
  assert "config.server.momentum=0.5 has no effect" in err
  assert "config.method.allocation is set but has no effect without the uplink" in err
  summary = json.loads((w / "summary.json").read_text())
  assert summary["data_stats"]["truncated_examples"] > 0  # BBC articles at 16 tokens
  assert np.isfinite(summary["final_test_accuracy"])

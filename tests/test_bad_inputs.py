"""Data and model folders as users have them (issue 6): each bad input is one clear error naming the
file and the fix, or a documented, counted drop. The full probe over the CLI (subprocesses, exit codes,
no tracebacks) is benchmarks/probe_bad_inputs.py; these are its fast in-process subset."""
import json
import os
import shutil

import pytest

from conftest import ROOT, tiny_config
from fedlora import cli
from fedlora.data.sources import load_dataset_with_report
from fedlora.models import load_pretrained
from fedlora.run.errors import RunWarning
from fedlora.section import ConfigError
from fedlora.utils.model_path import resolve_model_path

FIX = os.path.join(ROOT, "tests", "fixtures")
TINY = os.path.join(ROOT, "configs/tiny.py")


def _load(path, tmp_path, **kw):
  c = tiny_config(**{"data.source": "csv", "data.path": str(path)})
  c.data.cache_dir = None
  d = c.data.to_dict()
  d["cache_dir"] = str(tmp_path / "cache")
  d.update(kw)
  return load_dataset_with_report(d)


# ---- data -----------------------------------------------------------------------------------------

def test_undecodable_csv_names_file_offset_and_option(tmp_path):
  f = tmp_path / "d.csv"
  raw = "text,label\nhello,a\n".encode() + "caf\xe9 au lait,b\n".encode("latin-1")
  f.write_bytes(raw)
  with pytest.raises(ValueError) as e:
    _load(f, tmp_path)
  msg = str(e.value)
  assert "d.csv" in msg and f"offset {raw.index(0xE9)}" in msg and "data.encoding" in msg
  ds, dropped = _load(f, tmp_path, encoding="latin-1")
  assert ds["text"] == ["hello", "café au lait"] and dropped == {}


def test_malformed_csv_names_the_file(tmp_path):
  f = tmp_path / "bad.csv"
  f.write_text("text,label\nhello,a\none,two,three,four\nbye,b\n")
  with pytest.raises(ValueError, match=r"could not parse '.*bad.csv' as csv.*fields"):
    _load(f, tmp_path)


def test_missing_labels_are_an_error_naming_rows(tmp_path):
  f = tmp_path / "d.csv"
  f.write_text("text,label\nhello,a\nworld,\nfoo,b\n")
  with pytest.raises(ValueError, match=r"1 missing .*row\(s\) 2.*fill or remove"):
    _load(f, tmp_path)
  f.write_text("text,label\nhello,1\nworld,\nfoo,0\n")  # numeric column with a hole (NaN)
  with pytest.raises(ValueError, match=r"1 missing .*row\(s\) 2"):
    _load(f, tmp_path)


def test_empty_texts_are_dropped_and_counted(tmp_path):
  f = tmp_path / "d.csv"
  f.write_text('text,label\nhello,a\n"   ",b\nfoo,b\n,a\nbar,a\n')
  with pytest.warns(RunWarning, match=r"dropped 2 row\(s\).*row\(s\) 2, 4"):
    ds, dropped = _load(f, tmp_path)
  assert dropped == {"empty_text": 2} and ds["text"] == ["hello", "foo", "bar"]
  assert ds.features["label"].names == ["a", "b"] and ds["label"] == [0, 1, 0]


def test_single_class_and_fractional_labels_are_errors(tmp_path):
  f = tmp_path / "d.csv"
  f.write_text('text,label\nhello,a\n" ",b\nfoo,a\n')  # one class left after the drop
  with pytest.raises(ValueError, match="fewer than 2 classes"), pytest.warns(RunWarning):
    _load(f, tmp_path)
  f.write_text("text,label\nhello,0.5\nworld,1.0\n")
  with pytest.raises(ValueError, match=r"non-integer numbers \(e.g. 0.5 in row\(s\) 1\)"):
    _load(f, tmp_path)
  f.write_text("text,label\nhello,0.0\nworld,1.0\n")  # integer-valued floats are class ids
  ds, _ = _load(f, tmp_path)
  assert ds.features["label"].names == ["0", "1"]


def test_cli_data_error_is_one_paragraph(tmp_path, capsys):
  f = tmp_path / "d.csv"
  f.write_bytes(b"text,label\n\xff\xfe oops,a\n")
  code = cli.main(["fedlora", "--config", TINY, "--config.data.source=csv",
                     f"--config.data.path={f}", f"--config.workdir={tmp_path / 'w'}"])
  err = capsys.readouterr().err
  assert code == 2 and "offset 11" in err and "Traceback" not in err and err.count("\n") == 1


def test_summary_counts_dropped_rows(tmp_path, capsys):
  f = tmp_path / "d.csv"
  rows = [f"sample text number {i} about {'sport' if i % 2 else 'money'},{i % 2}" for i in range(60)]
  rows[5] = ",1"
  rows[17] = '"  ",1'
  f.write_text("text,label\n" + "\n".join(rows) + "\n")
  code = cli.main(["fedlora", "--config", TINY, "--config.data.source=csv",
                     f"--config.data.path={f}", f"--config.workdir={tmp_path / 'w'}",
                     "--config.fed.rounds=1"])
  assert code == 0, capsys.readouterr().err
  s = json.loads((tmp_path / "w" / "summary.json").read_text())
  assert s["data_dropped_rows"] == {"empty_text": 2}


# ---- model folders ---------------------------------------------------------------------------------

def _copy(tmp_path, name="tiny_roberta"):
  dst = tmp_path / name
  shutil.copytree(os.path.join(FIX, name), dst)
  return dst


def test_truncated_safetensors_names_the_file(tmp_path):
  d = _copy(tmp_path)
  f = d / "model.safetensors"
  f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  with pytest.raises(ValueError, match=r"model.safetensors' is truncated or corrupt.*re-download"):
    load_pretrained(d, num_labels=2)


def test_empty_folder_and_invalid_config_json_are_named_before_the_tokenizer(tmp_path):
  (tmp_path / "empty").mkdir()
  c = tiny_config(**{"model.path": str(tmp_path / "empty")})
  with pytest.raises(ConfigError, match="has no config.json"):
    resolve_model_path(c.model)
  d = _copy(tmp_path)
  (d / "config.json").write_text('{"model_type": "roberta",')
  c = tiny_config(**{"model.path": str(d)})
  with pytest.raises(ConfigError, match="config.json' is not valid JSON"):
    resolve_model_path(c.model)


def test_causal_lm_for_classification_says_an_encoder_is_needed():
  with pytest.raises(ValueError) as e:
    load_pretrained(os.path.join(FIX, "tiny_llama"), num_labels=2)
  msg = str(e.value)
  assert "causal LM" in msg and "needs an encoder" in msg and "'bert', 'roberta'" in msg
  assert "num_labels=None" not in msg

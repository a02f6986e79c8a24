"""benchmarks/report.py: results tables generated from the results JSON, never edited by hand."""
from __future__ import annotations

import json
import os

import pytest

from benchmarks import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = f"# x\n\nintro\n\n{report.BEGIN}\nstale block\n{report.END}\n\nafter\n"

THROUGHPUT = {"regimes": {
    "default": {"config": {"clients_per_round": 10, "local_steps": 5, "batch_size": 8, "max_length": 128},
                "vmapped": {"client_steps_per_s": 1.5, "compile_plus_first_s": 40.0},
                "python_loop": {"client_steps_per_s": 2.0, "compile_plus_first_s": 30.0},
                "speedup_vmapped_over_loop": 0.75},
    "small_clients": {"config": {"clients_per_round": 10, "local_steps": 5, "batch_size": 2, "max_length": 32},
                      "vmapped": {"client_steps_per_s": 40.0, "compile_plus_first_s": 8.0},
                      "python_loop": {"client_steps_per_s": 25.0, "compile_plus_first_s": 6.0},
                      "speedup_vmapped_over_loop": 1.6}},
    "environment": {"backend": "cpu", "cpu_count": 2, "jax": "0.10.2"}}
REMAT = {"rows": {"none": {"per_client_bytes": 300 * 2 ** 20, "shared_bytes": 4 * 2 ** 20,
                           "one_client": {"total": 304 * 2 ** 20}},
                  "block": {"per_client_bytes": 72 * 2 ** 20, "shared_bytes": 48 * 2 ** 20,
                            "one_client": {"total": 120 * 2 ** 20}}}}


def fake_results(tmp_path, **files):
  folder = tmp_path / "results"
  folder.mkdir()
  for stem, data in files.items():
    (folder / f"{stem}.json").write_text(json.dumps(data))
  readme = tmp_path / "README.md"
  readme.write_text(README)
  return folder, readme, tmp_path / "results.md"


def args(folder, readme, out, *extra):
  return ["--results", str(folder), "--readme", str(readme), "--out", str(out), *extra]


def test_writes_the_tables_and_the_readme_block_from_the_json(tmp_path, capsys):
  folder, readme, out = fake_results(tmp_path, round_throughput=THROUGHPUT, remat_memory=REMAT)
  assert report.main(args(folder, readme, out)) == 0
  doc = out.read_text()
  # each table is the JSON's numbers, with the script and command that wrote the file
  assert "| default | 10 | 5 | 8×128 | 1.50 | 2.00 | 0.75 | 40.0 / 30.0 |" in doc
  assert "| small_clients | 10 | 5 | 2×32 | 40.00 | 25.00 | 1.60 | 8.0 / 6.0 |" in doc
  assert "| none | 300 | 4 | 304 |" in doc and "| block | 72 | 48 | 120 |" in doc
  assert "written by `benchmarks/bench_round_throughput.py`" in doc
  # a results file that is absent is listed as not measured, with the script to run
  assert "no `benchmarks/results/sweep_methods.json`; run `benchmarks/sweep_methods.py`" in doc
  # the README's block is replaced between the markers, the rest untouched, rows linking to docs/
  text = readme.read_text()
  assert text.startswith("# x\n\nintro\n\n" + report.BEGIN) and text.endswith(report.END + "\n\nafter\n")
  assert "stale block" not in text
  assert ("| vmapped / Python-loop client phase, small / default clients | 1.60× / 0.75× | "
          "[Round throughput](docs/results.md#round-throughput) |") in text
  # a second run changes nothing, and --check agrees
  assert report.main(args(folder, readme, out)) == 0
  assert out.read_text() == doc and readme.read_text() == text
  assert report.main(args(folder, readme, out, "--check")) == 0


def test_a_missing_field_is_reported_not_skipped(tmp_path, capsys):
  broken = json.loads(json.dumps(THROUGHPUT))
  del broken["regimes"]["small_clients"]["python_loop"]["client_steps_per_s"]
  folder, readme, out = fake_results(tmp_path, round_throughput=broken, remat_memory=REMAT)
  assert report.main(args(folder, readme, out)) == 1
  err = capsys.readouterr().err
  assert ("round_throughput.json lacks field 'python_loop.client_steps_per_s', needed by the table "
          "'Round throughput'") in err
  doc = out.read_text()
  assert "**Not generated:** benchmarks/results/round_throughput.json lacks field" in doc
  assert "| block | 72 | 48 | 120 |" in doc  # the other tables are still written


def test_check_fails_when_the_docs_drift_from_the_json(tmp_path, capsys):
  folder, readme, out = fake_results(tmp_path, remat_memory=REMAT)
  assert report.main(args(folder, readme, out)) == 0
  out.write_text(out.read_text().replace("| block | 72 |", "| block | 70 |"))
  assert report.main(args(folder, readme, out, "--check")) == 1
  assert "differs from what benchmarks/report.py writes" in capsys.readouterr().err
  assert "| block | 70 |" in out.read_text()  # --check writes nothing
  assert report.main(args(folder, readme, out)) == 0
  readme.write_text(readme.read_text().replace("(docs/results.md)", "(elsewhere)"))
  assert report.main(args(folder, readme, out, "--check")) == 1


def test_arguments_are_validated(tmp_path, capsys):
  folder, readme, out = fake_results(tmp_path, remat_memory=REMAT)
  with pytest.raises(SystemExit) as e:
    report.main(args(tmp_path / "nope", readme, out))
  assert e.value.code == 2 and "is not a folder" in capsys.readouterr().err
  readme.write_text("no markers here\n")
  with pytest.raises(SystemExit) as e:
    report.main(args(folder, readme, out))
  assert e.value.code == 2 and report.BEGIN in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    report.main(["--help"])
  assert e.value.code == 0 and "--check" in capsys.readouterr().out


def test_committed_docs_match_the_committed_results():
  assert report.main(["--check"]) == 0, "run: python benchmarks/report.py"

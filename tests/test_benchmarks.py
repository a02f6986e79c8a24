"""Every benchmark script: `--help`, a bad argument (one `error:` line, exit code 2, no traceback), and a
smoke run of its real code path at tiny sizes into a temporary results file, with the committed
benchmarks/results/ files byte-identical afterwards.

The scripts run in this process (`main(argv)`), so the imports, the tokenised data and XLA's compile
cache (tests/conftest.py) are shared: the config-based scripts all train the SMOKE config of
benchmarks/common.py (1 MiniLM layer, 16 tokens, 4 clients, 1 round of 1 step), the others their
smallest shapes. benchmarks/probe_bad_inputs.py has its own tests (tests/test_bad_inputs.py), the
prepare_*.py scripts theirs (tests/test_prepare.py); report.py is tests/test_report.py's.
"""
import glob
import hashlib
import importlib
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

SCRIPTS = ("bench_client_scaling", "bench_cpu_step", "bench_csi_error", "bench_default_recipe", "bench_gguf_load",
           "bench_hetrank", "bench_llm", "bench_llm_client", "bench_lm", "bench_methods_e2e", "bench_remat_memory",
           "bench_round_throughput",
           "bench_skew", "bench_soft_alignment", "bench_soft_vs_svd", "bench_tsfa_solver",
           "bench_update_capture", "sweep_methods")


def test_every_script_is_listed():
  """A new benchmark script gets these tests too (or is named here as tested elsewhere)."""
  found = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))}
  elsewhere = {"__init__", "common", "assets", "report", "probe_bad_inputs"}
  elsewhere |= {n for n in found if n.startswith("prepare_")}
  assert found - elsewhere == set(SCRIPTS)


def call(script: str, argv: list, capsys) -> tuple:
  """(exit code, stdout, stderr) of `benchmarks/<script>.py argv`, run in this process."""
  mod = importlib.import_module(f"benchmarks.{script}")
  try:
    ret = mod.main(list(argv))  # None, 0, or (bench_gguf_load) the results
    rc = ret if isinstance(ret, int) else 0
  except SystemExit as e:
    rc = e.code
  out, err = capsys.readouterr()
  return rc, out, err


def digests() -> dict:
  return {p: hashlib.sha256(open(p, "rb").read()).hexdigest()
          for p in sorted(glob.glob(os.path.join(RESULTS, "*")))}


@pytest.fixture(scope="module")
def committed():
  """The committed results' digests before this module's runs (each smoke test compares after)."""
  return digests()


def smoke(script: str, argv: list, out: str, capsys, committed) -> dict:
  """Runs the script with smoke=1 into `out`; returns the results file (and checks the committed
  results were not touched, nor runs/bench/)."""
  scratch = os.path.join(ROOT, "runs", "bench", f"{script}.json")
  before = os.path.exists(scratch) and os.path.getmtime(scratch)
  flag = ["--smoke", "--out", out] if script in ("bench_soft_vs_svd", "bench_tsfa_solver") else \
      ["smoke=1", f"out={out}"]
  rc, stdout, err = call(script, flag + argv, capsys)
  assert rc == 0, err[-3000:]
  assert digests() == committed
  assert (os.path.exists(scratch) and os.path.getmtime(scratch)) == before
  with open(out) as f:
    return json.load(f)


# ---- --help ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_the_docstring(script, capsys):
  mod = importlib.import_module(f"benchmarks.{script}")
  rc, out, err = call(script, ["--help"], capsys)
  assert rc == 0, err
  first = mod.__doc__.strip().splitlines()[0]
  assert first in out
  assert "replace" in out  # how the committed results are (re)written


def test_help_as_a_script():
  """The real entry point (`python benchmarks/<name>.py --help`) of the script whose imports broke."""
  p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_lm.py"), "--help"],
                     capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
  assert p.returncode == 0, p.stderr[-2000:]
  assert "Causal-LM federated round" in p.stdout


# ---- bad arguments -----------------------------------------------------------------------------------

BAD = [  # (script, argv, text the error line must hold)
    ("bench_client_scaling", ["only=smal/K"], "smal/K"),
    ("bench_client_scaling", ["steps=x"], "'x'"),
    ("bench_cpu_step", ["parts=atention"], "atention"),
    ("bench_cpu_step", ["regimes=big"], "big"),
    ("bench_csi_error", ["plans=robustt"], "robustt"),
    ("bench_csi_error", ["miss_prob=1.5"], "miss_prob=1.5"),
    ("bench_default_recipe", ["runs=idd"], "idd"),
    ("bench_default_recipe", ["seeds=1.5"], "1.5"),
    ("bench_default_recipe", ["fed.roundz=3"], "fed.roundz"),
    ("bench_gguf_load", ["batch=x"], "'x'"),
    ("bench_gguf_load", ["bach=2"], "bach"),
    ("bench_hetrank", ["runs=het_flor"], "het_flor"),
    ("bench_hetrank", ["ranks=2,x"], "'x'"),
    ("bench_llm", ["seeds=x"], "'x'"),
    ("bench_llm", ["runs=dom"], "dom"),
    ("bench_llm_client", ["parts=sped"], "sped"),
    ("bench_llm_client", ["ks=0"], "ks=[0]"),
    ("bench_llm_client", ["remat=blok"], "blok"),
    ("bench_lm", ["seq_len=1.5"], "1.5"),
    ("bench_lm", ["sequence=8"], "sequence"),
    ("bench_methods_e2e", ["methods=sofft"], "sofft"),
    ("bench_methods_e2e", ["server.name=fedsgd"], "fedsgd"),
    ("bench_remat_memory", ["remats=blok"], "blok"),
    ("bench_round_throughput", ["regimes=smal"], "smal"),
    ("bench_round_throughput", ["repeats=x"], "'x'"),
    ("bench_skew", ["settings=dir1"], "dir1"),
    ("bench_skew", ["seeds=x"], "'x'"),
    ("bench_skew", ["recipes=fedadm"], "fedadm"),
    ("bench_soft_alignment", ["group=mian"], "mian"),
    ("bench_soft_alignment", ["ratio=0"], "ratio=0"),
    ("bench_soft_vs_svd", ["--ratio", "2"], "2.0"),
    ("bench_soft_vs_svd", ["--quik"], "--quik"),
    ("bench_tsfa_solver", ["--quik"], "--quik"),
    ("bench_update_capture", ["seed=x"], "'x'"),
    ("bench_update_capture", ["compressors=sotf"], "sotf"),
    ("sweep_methods", ["groups=mian"], "mian"),
    ("sweep_methods", ["seeds=x"], "'x'"),
    ("sweep_methods", ["workers=0"], "workers=0"),
    ("sweep_methods", ["smoke=1", "replace=1"], "replace=1"),
]


@pytest.mark.parametrize("script,argv,named", BAD, ids=[f"{s}:{' '.join(a)}" for s, a, _ in BAD])
def test_bad_argument_is_one_error_line(script, argv, named, capsys, committed):
  rc, out, err = call(script, argv, capsys)
  assert rc == 2, (out, err)
  lines = [ln for ln in err.splitlines() if ln.strip()]
  assert len([ln for ln in lines if "error:" in ln]) == 1, err
  assert lines[-1].startswith("error:") and named in lines[-1], err
  assert "Traceback" not in err + out
  assert digests() == committed


# ---- nothing measured, nothing written -------------------------------------------------------------

def test_nothing_measured_writes_nothing(tmp_path, capsys):
  from benchmarks import common
  common.parse_overrides([f"out={tmp_path / 'x.json'}"])
  assert common.write_result("x", {"args": {"repeats": 3}, "overrides": {"fed.rounds": 2}}) is None
  assert not (tmp_path / "x.json").exists()
  assert common.write_result("x", {"args": {}, "rows": {"a": 1.5}}) == str(tmp_path / "x.json")
  # a script whose inputs are all missing (a sweep results file whose run folder is gone)
  out = tmp_path / "alignment.json"
  sweep = tmp_path / "sweep.json"
  sweep.write_text(json.dumps({"groups": {"score": {"gram_delta": {"folder": str(tmp_path / "gone")}}}}))
  rc, _, err = call("bench_soft_alignment", [f"out={out}", f"sweep={sweep}", "labels=gram_delta"], capsys)
  assert rc == 2 and "nothing measured" in err
  assert not out.exists()


# ---- smoke runs --------------------------------------------------------------------------------------

def test_lm(tmp_path, capsys, committed):
  r = smoke("bench_lm", [], str(tmp_path / "r.json"), capsys, committed)
  (tiny,) = r["results"]  # smoke: the tiny checkpoint only
  assert tiny["model"] == "tiny" and [x["clients"] for x in tiny["runs"]] == [1, 2]
  assert all(x["tokens_per_s"] > 0 and x["steady_s"] > 0 for x in tiny["runs"])
  assert tiny["trainable_params"] > 0 and "per_client_temp_bytes" in tiny


def test_llm_client(tmp_path, capsys, committed):
  """Every part on the tiny random Llama: the vmapped phase equals the loop's updates, the remat
  part's per-client bytes are the K=1 -> K=2 increase, the matmul peak is the best shape's rate."""
  r = smoke("bench_llm_client", [], str(tmp_path / "r.json"), capsys, committed)
  assert r["model"]["file"] == "tiny_llama3" and r["step_flops"] > 0
  assert set(r["speed"]) == {"K=1", "K=2"} and set(r["loadavg"]) == {"matmul", "speed", "dtype", "remat"}
  for row in r["speed"].values():
    vm = [v for v in row["variants"].values() if v["mode"] == "vmap"]
    assert any(v["as_the_round_runs"] for v in vm) and "loop" in row["variants"]
    for v in vm:
      assert v["vs_loop"]["update_max_abs_diff"] <= 1e-5 * max(1.0, v["vs_loop"]["update_max_abs"])
      assert v["xla_temp_bytes"] > 0 and v["tokens_per_s"] == pytest.approx(512 * v["client_steps_per_s"])
  mm = r["matmul"]
  assert mm["peak_flops_per_s"] == max(mm["flops_per_s"].values()) and mm["rows"] == 512
  for name, m in r["remat"]["memory"].items():
    assert m["per_client_temp_bytes"] == m["temp_bytes_K2"] - m["temp_bytes_K1"], name
  assert r["dtype"]["clients"] == 2 and r["dtype"]["bfloat16_vs_float32"]["update_max_abs_diff"] >= 0.0


def test_remat_memory(tmp_path, capsys, committed):
  r = smoke("bench_remat_memory", ["remats=none"], str(tmp_path / "r.json"), capsys, committed)
  row = r["rows"]["none"]
  assert row["per_client_bytes"] > 0 and row["two_clients"]["total"] > row["one_client"]["total"]


def test_round_throughput(tmp_path, capsys, committed):
  r = smoke("bench_round_throughput", ["repeats=1", "regimes=default"], str(tmp_path / "r.json"),
            capsys, committed)
  res = r["regimes"]["default"]
  assert res["config"]["clients_per_round"] == 2 and res["config"]["max_length"] == 16
  assert res["vmapped"]["client_steps_per_s"] > 0 and res["python_loop"]["client_steps_per_s"] > 0


def test_default_recipe(tmp_path, capsys, committed):
  r = smoke("bench_default_recipe", ["runs=iid", "seeds=0", f"workdirs={tmp_path / 'w'}"],
            str(tmp_path / "r.json"), capsys, committed)
  (row,) = r["runs"]["iid"]
  assert 0.0 <= row["final_test_accuracy"] <= 1.0 and row["cum_uplink_bytes"] > 0
  assert r["summary"]["iid"]["seeds"] == [0] and r["recipe"] == {"client.scaffold": True}


def test_methods_e2e(tmp_path, capsys, committed):
  out = tmp_path / "r.json"
  r = smoke("bench_methods_e2e", ["methods=soft_tsfa", f"workdirs={tmp_path / 'w'}"], str(out), capsys,
            committed)
  row = r["runs"]["soft_tsfa"]
  assert row["method"] == "soft" and row["cum_uplink_bits"] > 0 and 0 < row["mean_ratio"] <= 1
  assert row["mean_round_latency_s"] > 0 and len(row["curve"]) == 1
  assert (tmp_path / "r.png").exists()  # the plot beside the results file, not the committed one


def test_hetrank(tmp_path, capsys, committed):
  r = smoke("bench_hetrank", ["runs=het_hetlora", f"workdirs={tmp_path / 'w'}"], str(tmp_path / "r.json"),
            capsys, committed)
  (row,) = r["runs"]["het_hetlora"]
  assert row["overrides"]["lora.client_ranks"] == [2, 4, 8, 16] and row["cum_uplink_bytes"] > 0
  assert 0.0 <= row["final_test_accuracy"] <= 1.0


def test_skew(tmp_path, capsys, committed):
  r = smoke("bench_skew", ["settings=tiny", "recipes=fedavg", "seeds=0", "combo=0",
                           f"workdirs={tmp_path / 'w'}"], str(tmp_path / "r.json"), capsys, committed)
  assert r["summary"]["tiny/fedavg"]["n"] == 1 and r["size"]["fed.rounds"] == 1
  assert 0.0 <= r["runs"]["tiny/fedavg"][0]["final_test_accuracy"] <= 1.0
  assert "| tiny | fedavg | 1 |" in (tmp_path / "r.md").read_text()


def test_llm(tmp_path, capsys, committed):
  r = smoke("bench_llm", ["config=" + os.path.join(ROOT, "configs", "tiny.py"), "runs=iid", "seeds=0",
                          f"workdirs={tmp_path / 'w'}"], str(tmp_path / "r.json"), capsys, committed)
  assert r["shape"] == {"rounds": 1, "clients_per_round": 2, "local_steps": 1, "max_examples": 240}
  assert r["accuracy"]["iid"]["seeds"] == 1
  assert 0.0 <= r["runs"]["iid"]["0"]["final_test_accuracy"] <= 1.0


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
  """One smoke run of sweep_methods (main/soft_r4, seed 0, through fedlora.sweep): its results file, which
  bench_update_capture and bench_soft_alignment read (their trained factors are its checkpoint)."""
  d = tmp_path_factory.mktemp("sweep")
  return d, ["groups=main", "runs=soft_r4", "seeds=0", f"workdirs={d / 'w'}"]


def test_sweep_methods_then_update_capture_and_soft_alignment(sweep_run, tmp_path, capsys, committed):
  """The sweep's smoke run, then the two scripts that read its checkpoints, on it."""
  d, argv = sweep_run
  r = smoke("sweep_methods", argv, str(d / "sweep.json"), capsys, committed)
  row = r["groups"]["main"]["soft_r4"]
  assert row["seeds"] == [0] and 0.0 <= row["acc_mean"] <= 1.0 and row["uplink_bits_mean"] > 0
  assert r["common_overrides"]["fed.rounds"] == 1
  assert "soft_r4" in (d / "sweep.md").read_text() and (d / "sweep.png").exists()

  u = smoke("bench_update_capture", [f"sweep={d / 'sweep.json'}"], str(tmp_path / "u.json"), capsys,
            committed)
  assert u["round"] == 1 and u["clients"] == 2 and u["ratios"] == [0.25]
  for tag in ("init", "trained"):
    kept = u["results"][tag]["0.25"]["soft"]["kept_median"]
    assert 0.0 < kept <= 1.0 and math.isfinite(u["results"][tag]["0.25"]["topk"]["client_median"])

  a = smoke("bench_soft_alignment", [f"sweep={d / 'sweep.json'}", "group=main", "labels=soft_r4"],
            str(tmp_path / "a.json"), capsys, committed)
  seed = a["runs"]["soft_r4"]["per_seed"]["seed0"]
  assert seed["round"] == 1 and seed["adapters"] > 0 and 0.0 < seed["captured"]["median"] <= 1.0 + 1e-9


def test_soft_vs_svd(tmp_path, capsys, committed):
  r = smoke("bench_soft_vs_svd", [], str(tmp_path / "r.json"), capsys, committed)
  (row,) = r["rows"]
  assert (row["d_in"], row["d_out"], row["r"]) == (64, 96, 4)
  assert row["soft"]["median_ms"] > 0 and row["svd"]["median_ms"] > 0 and row["soft"]["bits"] > 0


def test_csi_error_solver_mode(tmp_path, capsys, committed):
  """64 rounds of 4 clients per σ: robust plans miss their own planned latency far less often."""
  r = smoke("bench_csi_error", ["sigmas=0,0.2"], str(tmp_path / "r.json"), capsys, committed)
  rows = r["rows"]
  assert set(rows) == {"plain/sigma=0", "robust/sigma=0", "plain/sigma=0.2", "robust/sigma=0.2"}
  assert rows["plain/sigma=0"]["miss_own_planned_latency"] == 0.0  # perfect CSI realises the plan
  assert rows["robust/sigma=0.2"]["miss_own_planned_latency"] < rows["plain/sigma=0.2"]["miss_own_planned_latency"]


def test_tsfa_solver(tmp_path, capsys, committed):
  r = smoke("bench_tsfa_solver", [], str(tmp_path / "r.json"), capsys, committed)
  (s,) = r["summary"]
  assert s["clients"] == 10 and s["instances"] == 1
  assert abs(r["rows"][0]["rel_gap"]) < 1e-2  # the solver is within 1 % of the better reference
  assert r["vmap_batch"]["scenarios"] == 2 and r["vmap_batch"]["run_ms"] > 0


def test_gguf_load(tmp_path, capsys, committed):
  """The real SmolLM2 GGUF file (its load is what is measured), a forward of 1 x 4 tokens."""
  r = smoke("bench_gguf_load", [], str(tmp_path / "r.json"), capsys, committed)
  assert 100e6 < r["params"] < 200e6 and r["load_pretrained_s"] > 0
  assert r["forward"]["batch"] == 1 and r["forward"]["seq_len"] == 4 and r["forward"]["steady_s"] > 0


def test_cpu_step(tmp_path, capsys, committed):
  """smoke=1 at parts attention, grad_barrier, matmul: the 'chunk' part is `step_calls(loop=False)` at
  two chunk sizes, the same builds and compiled client phase grad_barrier's 'vmap K=1' row runs here,
  so it is left out to keep this file fast (it costs two more builds)."""
  r = smoke("bench_cpu_step", ["parts=attention,grad_barrier,matmul"], str(tmp_path / "r.json"), capsys,
            committed)
  assert r["attention"]["small"]["max_abs_diff"] < 1e-4  # the two layouts agree
  for name in ("small/vmap K=1", "small/loop"):
    row = r["grad_barrier"][name]
    assert row["max_abs_diff"] < 1e-5 and row["fused_instructions"]["true"] > 0
  assert set(r["matmul"]["[M,384]@[384,384]"]) == {"64", "256"}


def test_client_scaling(tmp_path, capsys, committed):
  """End to end: the two matmul-peak processes and one worker process (one row)."""
  r = smoke("bench_client_scaling", ["only=small/K=1/vmap-chunked"], str(tmp_path / "r.json"), capsys,
            committed)
  row = r["runs"]["small/K=1/vmap-chunked"]
  assert "error" not in row, row.get("error")
  assert row["chunk"] == 1 and row["client_steps_per_s"] > 0 and row["spec"]["smoke"] is True
  assert r["matmul_peak"]["float32"]["peak_flops_per_s"] > 0

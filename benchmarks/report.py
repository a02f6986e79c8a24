"""Results tables from the benchmark result files: docs/results.md and the README's headline block.

Reads `benchmarks/results/*.json` (nothing else: no run folders, no training, no jax) and writes

  docs/results.md   every results table, each generated from one results file, with the script and
                    command that produced it;
  README.md         the short headline table between `<!-- results:begin -->` and
                    `<!-- results:end -->`, each row linking to its table in docs/results.md.

A results file that lacks a field a table needs is reported (stderr, and in docs/results.md in place
of that table) and the script exits 1; a results file that is absent is listed as not measured.

  python benchmarks/report.py [--results DIR] [--out FILE] [--readme FILE] [--check]

`--check` writes nothing: it exits 1 if either file differs from what the script would write (the
committed docs never drift from the JSON; tests/test_report.py runs it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
DASH = "–"


class Missing(Exception):
  """A field a table needs is absent from its results file (`path`: dotted keys)."""

  def __init__(self, path: str):
    super().__init__(path)
    self.path = path


def need(obj, *path):
  """`obj[path[0]][path[1]]...`; raises Missing naming the dotted path when a key is absent."""
  for i, key in enumerate(path):
    if isinstance(obj, dict) and key in obj:
      obj = obj[key]
    elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
      obj = obj[key]
    else:
      raise Missing(".".join(str(k) for k in path[:i + 1]))
  return obj


def f(x, fmt: str = ".2f") -> str:
  """A number formatted with `fmt`; '–' for None (a value a run records as absent, e.g. no latency)."""
  if x is None:
    return DASH
  if isinstance(x, float) and math.isinf(x):
    return "inf"
  return format(x, fmt)


def pct(x, nd: int = 2) -> str:
  return DASH if x is None else f"{100 * x:.{nd}f}"


def pm(mean_std, scale: float = 100.0, nd: int = 2) -> str:
  """'mean ± std' of a [mean, std] pair, scaled (accuracies are stored as fractions)."""
  m, s = mean_std
  return f"{scale * m:.{nd}f} ± {scale * s:.{nd}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def anchor(title: str) -> str:
  """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to '-'."""
  return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def overrides_text(ov: dict) -> str:
  return ", ".join(f"{k}={f(v, '') if isinstance(v, float) else v}" for k, v in ov.items()) or DASH


def environment_line(d: dict) -> list[str]:
  env = d.get("environment") or d.get("env")
  if not isinstance(env, dict):
    return []
  parts = [f"backend {env['backend']}" if "backend" in env else None,
           f"{env['cpu_count']} CPU cores" if "cpu_count" in env else None,
           f"jax {env['jax']}" if "jax" in env else None]
  parts = [p for p in parts if p]
  return [f"Measured with {', '.join(parts)}."] if parts else []


# ---------------------------------------------------------------- the method comparison (sweep_methods)

def sweep_ideal(d: dict, group: str) -> dict | None:
  """The reference of a group's Δ and bits columns (as sweep_methods.group_ideal): the group's own
  `ideal_<group>` row if it has one, else main/ideal."""
  groups = need(d, "groups")
  return groups.get(group, {}).get(f"ideal_{group}") or groups.get("main", {}).get("ideal")


def seed_diffs(row: dict, ref: dict) -> list[float]:
  """Per-seed final accuracy difference row − ref in points, over the seeds both finished."""
  rs, fs = need(row, "per_seed"), need(ref, "per_seed")
  common = sorted(set(rs) & set(fs), key=int)
  return [100 * (need(rs, s, "final_test_accuracy") - need(fs, s, "final_test_accuracy")) for s in common]


def paired_text(row: dict, ref: dict | None) -> str:
  """'mean ± std (n)' of the per-seed differences to `ref` (population std, as sweep_methods)."""
  if ref is None or row is ref:
    return DASH
  d = seed_diffs(row, ref)
  if not d:
    return DASH
  return f"{statistics.fmean(d):+.2f} ± {statistics.pstdev(d):.2f} ({len(d)})"


def ranks_text(x) -> str:
  return ", ".join(str(v) for v in x) if isinstance(x, list) else str(x)


def sweep_command(d: dict, group: str = "G") -> str:
  names = {"fed.rounds": "rounds", "data.max_length": "max_length", "eval.every": "eval_every"}
  co = need(d, "common_overrides")
  args = " ".join(f"{names.get(k, k)}={v}" for k, v in co.items())
  return f"python benchmarks/sweep_methods.py groups={group} seeds=S {args}"


def sweep_groups(d: dict) -> list[tuple[str, list[str]]]:
  out = []
  for group, rows in need(d, "groups").items():
    ideal = sweep_ideal(d, group)
    body = []
    for label, r in rows.items():
      if "offline_chosen_rank" in r:
        label = f"{label} (chose r = {ranks_text(r['offline_chosen_rank'])})"
      bits = need(r, "uplink_bits_mean")
      body.append([
          label, need(r, "method"), overrides_text(need(r, "overrides")), len(need(r, "seeds")),
          f"{pct(need(r, 'acc_mean'))} ± {pct(need(r, 'acc_std'))}", paired_text(r, ideal),
          f"{bits / need(ideal, 'uplink_bits_mean'):.3f}" if ideal else DASH, f(bits / 1e6, ".1f"),
          f(need(r, "mean_ratio"), ".3f"), f(need(r, "mean_round_latency_s"), ".3f"),
          f(need(r, "first_round_latency_s"), ".3f"), f(need(r, "deadline_misses"), ".1f"),
          f(need(r, "uplink_attempted_bits_mean") / 1e6, ".1f")])
    header = ["run", "method", "overrides", "seeds", "final acc % (mean ± std)",
              "Δ vs ideal, paired (pts, n)", "uplink × ideal", "uplink Mbit", "mean ρ", "mean τ (s)",
              "round-1 τ (s)", "misses", "attempted Mbit"]
    out.append((group, table(header, body)))
  return out


def sweep_head_to_head(d: dict) -> list[str]:
  rows = [[need(h, "row"), need(h, "ref"), need(h, "n"),
           f"{need(h, 'mean'):+.2f} ± {f(need(h, 'se'))}", f(need(h, "bits_ratio"), ".3f")]
          for h in need(d, "head_to_head")]
  return table(["row", "reference", "seeds", "row − reference (pts, mean ± s.e.)",
                "bits row / reference"], rows)


def sweep_rank_check(d: dict) -> list[str]:
  checks = need(d, "rank_check")
  ranks = sorted({int(r) for c in checks for r in need(c, "acc")})
  rows = []
  for c in checks:
    acc = need(c, "acc")
    rows.append([need(c, "budget"), ",".join(str(s) for s in need(c, "seeds"))]
                + [pct(acc.get(str(r))) for r in ranks]
                + [need(c, "best"), ", ".join(str(x) for x in need(c, "chosen")),
                   ", ".join(str(x) for x in need(c, "steps"))])
  return table(["budget", "seeds"] + [f"rank {r}: acc %" for r in ranks]
               + ["best rank", "offline choice per seed", "grid steps from best"], rows)


def sec_sweep(d: dict) -> list[str]:
  lines = [f"Every row is `configs/wireless_compare.py` with the overrides shown, common overrides "
           f"`{overrides_text(need(d, 'common_overrides'))}`; seeds found: "
           f"{', '.join(str(s) for s in need(d, 'seeds'))}. Δ: per-seed difference to the group's "
           f"ideal run (its own `ideal_<group>` row, else main/ideal), mean ± std over the shared seeds. "
           f"Groups are described in the script's docstring.", "",
           "### Head to head", ""] + sweep_head_to_head(d)
  lines += ["", "### Offline stage against the rank sweep", ""] + sweep_rank_check(d)
  for group, t in sweep_groups(d):
    lines += ["", f"### Group {group}", ""] + t
  return lines


# ---------------------------------------------------------------- label skew and the default recipe

def sec_skew(d: dict) -> list[str]:
  rows = []
  for key, s in need(d, "summary").items():
    setting, recipe = key.split("/", 1)
    rows.append([setting, recipe, need(s, "n"), pm(need(s, "final_test_accuracy")),
                 pm(need(s, "best_test_accuracy")), pm(need(s, "final_test_balanced_accuracy")),
                 pm(need(s, "final_test_macro_f1")), pm(need(s, "final_test_client_accuracy_worst10")),
                 f(need(s, "uplink_mbit", 0), ".1f")])
  recipes = "; ".join(f"{k}: `{overrides_text(v)}`" if v else f"{k}: no overrides"
                      for k, v in need(d, "recipes").items())
  lines = [f"Size overrides: `{overrides_text(need(d, 'size'))}`. Recipes: {recipes}.", ""]
  return lines + table(["setting", "recipe", "seeds", "final acc %", "best acc %", "balanced acc %",
                        "macro-F1 %", "worst-decile client acc %", "uplink Mbit"], rows)


def sec_default_recipe(d: dict) -> list[str]:
  rows = []
  for run, s in need(d, "summary").items():
    rows.append([run, ",".join(str(x) for x in need(s, "seeds")), pm(need(s, "final_test_accuracy")),
                 pm(need(s, "best_test_accuracy")), pm(need(s, "final_test_balanced_accuracy")),
                 f(need(s, "cum_uplink_bytes", 0) / 1e6, ".1f")])
  lines = [f"Recipe under test: `{overrides_text(need(d, 'recipe'))}`; runs named `fedavg_*` are plain "
           f"FedAvg. Mean ± std over seeds.", ""]
  lines += table(["run", "seeds", "final acc %", "best acc %", "balanced acc %", "uplink MB"], rows)
  return lines + ["", f"Skewed / IID of the means: {need(d, 'skewed_over_iid_of_means'):.3f}."]


# ---------------------------------------------------------------- throughput, scaling, memory

def sec_client_scaling(d: dict) -> list[str]:
  rows = []
  for name, r in need(d, "runs").items():
    peak = need(r, "matmul_peak", "float32", "peak_flops_per_s")
    achieved = need(r, "achieved_flops_per_s")
    steps = need(r, "client_steps")
    cpu = need(r, "per_call", "user_cpu_s") + need(r, "per_call", "system_cpu_s")
    rows.append([name, need(r, "spec", "regime"), need(r, "spec", "K"), need(r, "spec", "mode"),
                 need(r, "chunk"), f(need(r, "client_steps_per_s"), ".2f"), f(achieved / 1e9, ".0f"),
                 f(peak / 1e9, ".0f"), f"{100 * achieved / peak:.0f}",
                 f(need(r, "memory", "host_peak_rss_bytes") / 2 ** 30, ".2f"),
                 f(need(r, "per_call", "minor_page_faults"), ".0f"), f(cpu / steps, ".3f"),
                 "glibc defaults" if need(r, "glibc_tunables") == "" else "launchers'"])
  lines = ["One subprocess per row; rows re-measured with `only=`/`skip=` replace theirs and keep the "
           "others, so each row's '% of peak' is against the f32 matmul peak of its own invocation.", ""]
  return lines + table(["row", "regime", "K", "mode", "chunk", "client-steps/s", "GFLOP/s",
                "f32 matmul peak GFLOP/s", "% of peak", "peak RSS GiB", "minor page faults / call",
                "CPU s / client-step", "allocator"], rows)


def sec_cpu_step(d: dict) -> list[str]:
  att = []
  for regime, a in need(d, "attention").items():
    t = need(a, "times_s")
    ms = lambda k: f"{1e3 * need(t, k, 1):.2f}"  # noqa: E731  (median: [min, median])
    att.append([regime, "×".join(str(x) for x in need(a, "shape_BLHD")),
                f"{ms('heads_first/forward')} / {ms('heads_last/forward')}", f(need(a, "forward_speedup")),
                f"{ms('heads_first/forward+backward')} / {ms('heads_last/forward+backward')}",
                f(need(a, "forward_backward_speedup")), f(need(a, "max_abs_diff"), "g")])
  gb = []
  for name, g in need(d, "grad_barrier").items():
    gb.append([name, f"{need(g, 'fused_instructions', 'false')} / {need(g, 'fused_instructions', 'true')}",
               f"{need(g, 'largest_fusion', 'false')} / {need(g, 'largest_fusion', 'true')}",
               f"{need(g, 's_per_client_step', 'false', 1):.3f} / {need(g, 's_per_client_step', 'true', 1):.3f}",
               f(need(g, "speedup_median")), f(need(g, "max_abs_diff"), "g")])
  mm = need(d, "matmul")
  sizes = sorted({int(m) for v in mm.values() for m in v})
  mat = [[shape] + [f(v.get(str(m), None) and v[str(m)] / 1e9, ".0f") for m in sizes]
         for shape, v in mm.items()]
  ch = []
  for regime, c in need(d, "chunk").items():
    for chunk, r in c.items():
      ch.append([regime, chunk, need(r, "tokens_per_chunk"), f(need(r, "client_steps_per_s")),
                 f(need(r, "client_steps_per_s_best"))])
  return (["Parts re-measured with `parts=` replace theirs and keep the others.", "",
           "### Attention layout (heads first vs heads last)", "", "Median ms, heads first / heads last.", ""]
          + table(["regime", "B×L×H×D", "forward ms", "speedup", "forward + backward ms",
                          "speedup", "max |diff|"], att)
          + ["", "### model.grad_barrier off / on", ""]
          + table(["step", "fused instructions", "largest fusion", "s per client-step (median)",
                   "speedup", "max |diff|"], gb)
          + ["", "### Matmul rate by rows M (jitted f32, GFLOP/s)", ""]
          + table(["shape"] + [f"M = {m}" for m in sizes], mat)
          + ["", "### Chunk size (client phase, E = 1)", ""]
          + table(["regime", "chunk", "tokens per chunk", "client-steps/s (median)", "best"], ch))


def sec_round_throughput(d: dict) -> list[str]:
  rows = []
  for regime, r in need(d, "regimes").items():
    c = need(r, "config")
    rows.append([regime, need(c, "clients_per_round"), need(c, "local_steps"),
                 f"{need(c, 'batch_size')}×{need(c, 'max_length')}",
                 f(need(r, "vmapped", "client_steps_per_s")), f(need(r, "python_loop", "client_steps_per_s")),
                 f(need(r, "speedup_vmapped_over_loop")),
                 f"{need(r, 'vmapped', 'compile_plus_first_s'):.1f} / "
                 f"{need(r, 'python_loop', 'compile_plus_first_s'):.1f}"])
  return table(["regime", "K", "E", "B × L", "vmapped client-steps/s", "loop client-steps/s",
                "vmapped / loop", "compile + first call s (vmapped / loop)"], rows)


def sec_remat(d: dict) -> list[str]:
  rows = [[remat, f(need(r, "per_client_bytes") / 2 ** 20, ".0f"), f(need(r, "shared_bytes") / 2 ** 20, ".0f"),
           f(need(r, "one_client", "total") / 2 ** 20, ".0f")] for remat, r in need(d, "rows").items()]
  return table(["model.remat", "MiB each more client adds", "MiB shared by a chunk",
                "MiB for one client (XLA total)"], rows)


def sec_lm(d: dict) -> list[str]:
  rows = []
  for m in need(d, "results"):
    for r in need(m, "runs"):
      rows.append([need(m, "model"), f"{need(m, 'frozen_params'):,}", f"{need(m, 'trainable_params'):,}",
                   f"{need(m, 'local_steps')} × {need(m, 'batch_size')} × {need(m, 'seq_len')}",
                   need(m, "dtype"), need(r, "clients"), f(need(r, "compile_s"), ".1f"),
                   f(need(r, "steady_s"), ".3f"), f(need(r, "tokens_per_s"), ".1f"),
                   f(need(r, "xla_temp_bytes") / 2 ** 20, ".1f"),
                   f(need(m, "per_client_temp_bytes") / 2 ** 20, ".1f"),
                   f(need(m, "frozen_bytes_shared") / 2 ** 20, ".1f")])
  return table(["model", "frozen params", "trainable params", "E × B × L", "dtype", "K", "compile s",
                "steady s", "tokens/s", "XLA temp MiB", "temp MiB per client", "frozen MiB (shared)"], rows)


# ---------------------------------------------------------------- compressors and the TSFA solver

def sec_tsfa_solver(d: dict) -> list[str]:
  rows = [[need(s, "clients"), need(s, "instances"), need(s, "reference"), f(need(s, "run_ms"), ".2f"),
           need(s, "iterations"), f(need(s, "max_rel_gap"), ".1e"), f(need(s, "max_gap_vs_slsqp"), ".1e"),
           f(need(s, "compile_s"), ".2f")] for s in need(d, "summary")]
  lines = table(["clients", "instances", "reference", "ms per solve", "iterations", "max relative gap",
                 "max gap vs SLSQP", "compile s"], rows)
  b = d.get("vmap_batch")
  if b:
    lines += ["", f"Vmapped batch of {need(b, 'scenarios')} scenarios of {need(b, 'clients')} clients: "
                  f"{need(b, 'run_ms'):.1f} ms ({need(b, 'run_ms_per_scenario'):.1f} ms per scenario)."]
  return lines


def sec_soft_vs_svd(d: dict) -> list[str]:
  rows = [[f"{need(r, 'd_in')}×{need(r, 'd_out')}", need(r, "r"), f(need(r, "ratio")),
           f(need(r, "soft", "median_ms"), ".3f"), f(need(r, "svd", "median_ms"), ".3f"),
           f(need(r, "svd", "min_ms"), ".3f"), f(need(r, "speedup"), ".1f"),
           f"{need(r, 'soft', 'bits'):.0f} / {need(r, 'svd', 'bits'):.0f}"] for r in need(d, "rows")]
  return table(["d_in × d_out", "r", "ρ", "SOFT ms (median)", "SVD ms (median)", "SVD ms (min)",
                "SVD / SOFT time", "bits SOFT / SVD"], rows)


def sec_gguf_load(d: dict) -> list[str]:
  fw = need(d, "forward")
  rows = [[need(d, "file"), f"{need(d, 'file_mib'):.1f}", f"{need(d, 'params') / 1e6:.1f} M",
           f"{need(d, 'load_pretrained_s'):.1f}", f"{need(d, 'tokenizer_s'):.1f}",
           f"{need(d, 'peak_rss_after_load_mib'):.0f}",
           f"{need(fw, 'batch')}×{need(fw, 'seq_len')} {need(fw, 'dtype')}: {need(fw, 'steady_s'):.2f} s "
           f"({need(fw, 'tokens_per_s'):.0f} tokens/s)"]]
  return table(["file", "MiB", "parameters", "load s", "tokenizer s", "peak RSS MiB", "forward (steady)"],
               rows)


def llm_seconds_per_round(d: dict, run: str) -> float:
  """Mean wall seconds of one training round of `run` (CPU; its runs' train_seconds_all_rounds)."""
  secs = [need(v, "train_seconds_all_rounds") for v in need(d, "runs", run).values()]
  return statistics.fmean(secs) / need(d, "shape", "rounds")


def sec_llm(d: dict) -> list[str]:
  rows = [[run, f"{100 * need(a, 'mean'):.2f} ± {100 * need(a, 'std'):.2f}",
           f"{100 * statistics.fmean(need(v, 'final_test_macro_f1') for v in need(d, 'runs', run).values()):.2f}",
           f"{llm_seconds_per_round(d, run):.0f}", need(a, "seeds")]
          for run, a in need(d, "accuracy").items()]
  zero = d.get("zero_shot_accuracy")
  ratio = d.get("domain_over_centralized")
  lines = [f"Zero-shot (the pretrained model, before round 1): "
           f"{'n/a' if zero is None else f'{100 * zero:.2f} %'}; federated by domain / centralized: "
           f"{'n/a' if ratio is None else f'{100 * ratio:.1f} %'}; shape {need(d, 'shape')}; "
           f"{d.get('machine', 'CPU')}.", ""]
  return lines + table(["run", "test accuracy % (mean ± std)", "macro-F1 % (mean)", "s / round",
                        "seeds"], rows)


def sec_fedlora_sweep(d: dict) -> list[str]:
  """A results file of `python -m fedlora.sweep`: per point mean ± std and the paired differences."""
  paired = {need(q, "point"): q for q in need(d, "paired")}
  refs = {need(q, "reference") for q in paired.values()}
  rows = []
  for p in need(d, "points"):
    m, sd, label = need(p, "mean"), need(p, "std"), need(p, "label")
    q = paired.get(label)
    diff = ("reference" if label in refs else "" if q is None else
            f"{100 * need(q, 'mean', 'final_test_accuracy'):+.2f} ± {100 * need(q, 'std', 'final_test_accuracy'):.2f}")
    rows.append([label, f"{100 * need(m, 'final_test_accuracy'):.2f} ± {100 * need(sd, 'final_test_accuracy'):.2f}",
                 f"{need(m, 'uplink_bits') / 8e6:.2f}", diff, ",".join(str(x) for x in need(p, "seeds"))])
  return table(["point", "test accuracy % (mean ± std)", "uplink MB", "− reference, points (paired)",
                "seeds"], rows)


def sec_csi_error(d: dict) -> list[str]:
  a, rows = need(d, "args"), need(d, "rows")
  out = []
  for sigma in need(a, "sigmas"):
    pl, rb = (need(rows, f"{p}/sigma={sigma:g}") for p in ("plain", "robust"))
    out.append([f"{sigma:g}"] + [f"{need(pl, k):.3f} → {need(rb, k):.3f}" for k in (
        "miss_own_planned_latency", "miss_round_planned_latency", "miss_deadline")]
        + [f"{need(pl, 'mean_planned_round_latency_s'):.3f} → {need(rb, 'mean_planned_round_latency_s'):.3f}"])
  return [f"TSFA plans on CSI estimates with error σ; robust plans at miss_prob = {need(a, 'miss_prob')}; "
          f"{need(a, 'draws')} rounds of {need(a, 'clients')} clients per σ, τ̄ = {need(a, 'latency_budget_s')} s, "
          f"deadline {need(a, 'deadline_s')} s. Each cell: plain → robust.", ""] + table(
      ["σ", "misses own planned latency", "misses round's planned latency", "misses deadline",
       "planned round latency s"], out)


def sec_update_capture(d: dict) -> list[str]:
  rows = []
  for stage, by_ratio in need(d, "results").items():
    for ratio, comps in by_ratio.items():
      for comp, c in comps.items():
        rows.append([stage, ratio, comp, f(need(c, "kept_median")), f(need(c, "client_median")),
                     f(need(c, "aggregate_median"))])
  lines = [f"Sweep run `{need(d, 'label')}`, seed {need(d, 'seed')}, {need(d, 'clients')} clients; "
           f"'trained' = its factors after round {f(need(d, 'round'), '')}; median over adapters.", ""]
  return lines + table(["global factors", "ρ", "compressor", "factor-update energy sent",
                        "client product-change error", "aggregate product-change error"], rows)


def sec_soft_alignment(d: dict) -> list[str]:
  runs = need(d, "runs")
  keys = ["b_cos", "a_off", "s_err", "captured"]
  if all("b_zero" in need(r, "mean_over_seeds") for r in runs.values()):
    keys.append("b_zero")
  rows = []
  for label, r in runs.items():
    worst = min(need(s, "captured", "min") for s in need(r, "per_seed").values())
    rows.append([label, len(need(r, "per_seed"))] + [f(need(r, "mean_over_seeds", k), ".3f") for k in keys]
                + [f(worst, ".3f")])
  lines = [f"Sweep group `{need(d, 'group')}`, ρ = {need(d, 'ratio')}; median over adapters, mean over "
           f"seeds (worst: the lowest adapter of any seed).", ""]
  return lines + table(["run", "seeds"] + keys + ["captured, worst adapter"], rows)


def sec_methods_e2e(d: dict) -> list[str]:
  rows = [[label, need(r, "method"), pct(need(r, "final_test_accuracy")),
           f(need(r, "cum_uplink_bits") / 1e6, ".1f"), f(need(r, "mean_ratio")),
           f(need(r, "mean_round_latency_s"), ".3f"), need(r, "deadline_misses")]
          for label, r in need(d, "runs").items()]
  lines = [f"`configs/wireless_compare.py` with `{overrides_text(need(d, 'overrides'))}`, latency budget "
           f"τ̄ = {need(d, 'latency_budget_s')} s. Plot: `benchmarks/results/methods_e2e.png`.", ""]
  return lines + table(["run", "method", "final acc %", "uplink Mbit", "mean ρ", "mean round latency (s)",
                        "deadline misses"], rows)


def sec_probe(d: dict) -> list[str]:
  def cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")
  rows = [[need(p, "probe"), f"{need(p, 'exit_code')} ({need(p, 'expected')})",
           "yes" if need(p, "traceback") else "no", "ok" if need(p, "ok") else "FAILED",
           f"`{cell(need(p, 'message'))}`"] for p in need(d, "probes")]
  lines = [f"{need(d, 'ok')} of {need(d, 'total')} probes behave as expected.", ""]
  return lines + table(["probe", "exit code (expected)", "traceback", "check", "message (first line)"], rows)


# ---------------------------------------------------------------- sections: file, script, command, table

def update_capture_command(d: dict, stem: str) -> str:
  group, label = need(d, "label").split("/", 1)
  args = [f"label={label}", f"group={group}", f"seed={need(d, 'seed')}"]
  if need(d, "round") is None:
    args.append("trained=0")
  args += [f"{k}={v}" for k, v in d.get("overrides", {}).items()]
  if stem != "update_capture":
    args.append(f"out={stem}")
  return "python benchmarks/bench_update_capture.py " + " ".join(args)


def soft_alignment_command(d: dict, stem: str) -> str:
  args = [f"group={need(d, 'group')}", f"labels={','.join(need(d, 'runs'))}", f"ratio={need(d, 'ratio')}"]
  if stem != "soft_alignment":
    args.append(f"out={stem}")
  return "python benchmarks/bench_soft_alignment.py " + " ".join(args)


def e2e_command(d: dict) -> str:
  return "python benchmarks/bench_methods_e2e.py " + " ".join(
      f"{k}={v}" for k, v in need(d, "overrides").items())


# (title, results file stem, script, command(d, stem), table(d))
SECTIONS = (
    ("Method comparison", "sweep_methods", "sweep_methods.py", lambda d, s: sweep_command(d), sec_sweep),
    ("End-to-end methods under one latency budget", "methods_e2e", "bench_methods_e2e.py",
     lambda d, s: e2e_command(d), sec_methods_e2e),
    ("Update capture", "update_capture", "bench_update_capture.py", update_capture_command,
     sec_update_capture),
    ("Update capture, graded init", "update_capture_graded", "bench_update_capture.py",
     update_capture_command, sec_update_capture),
    ("Update capture, server re-orthogonalisation", "update_capture_reorth", "bench_update_capture.py",
     update_capture_command, sec_update_capture),
    ("Soft alignment", "soft_alignment", "bench_soft_alignment.py", soft_alignment_command,
     sec_soft_alignment),
    ("Soft alignment, graded init", "soft_alignment_graded", "bench_soft_alignment.py",
     soft_alignment_command, sec_soft_alignment),
    ("Skew recipes", "skew", "bench_skew.py", lambda d, s: need(d, "command"), sec_skew),
    ("Default recipe", "default_recipe", "bench_default_recipe.py", lambda d, s: need(d, "command"),
     sec_default_recipe),
    ("Round throughput", "round_throughput", "bench_round_throughput.py",
     lambda d, s: "python benchmarks/bench_round_throughput.py", sec_round_throughput),
    ("Client scaling", "client_scaling", "bench_client_scaling.py",
     lambda d, s: "python benchmarks/bench_client_scaling.py", sec_client_scaling),
    ("CPU step", "cpu_step", "bench_cpu_step.py",
     lambda d, s: "python benchmarks/bench_cpu_step.py " + " ".join(
         f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in need(d, "args").items()),
     sec_cpu_step),
    ("Remat memory", "remat_memory", "bench_remat_memory.py",
     lambda d, s: "python benchmarks/bench_remat_memory.py", sec_remat),
    ("Causal LM client phase", "lm", "bench_lm.py", lambda d, s: "python benchmarks/bench_lm.py", sec_lm),
    ("TSFA solver", "tsfa_solver", "bench_tsfa_solver.py",
     lambda d, s: "python benchmarks/bench_tsfa_solver.py", sec_tsfa_solver),
    ("SOFT vs SVD", "soft_vs_svd", "bench_soft_vs_svd.py", lambda d, s: "python benchmarks/bench_soft_vs_svd.py",
     sec_soft_vs_svd),
    ("GGUF load (SmolLM2)", "gguf_load", "bench_gguf_load.py",
     lambda d, s: "python benchmarks/bench_gguf_load.py replace=1", sec_gguf_load),
    ("Real LLM on MultiEmo (SmolLM2)", "llm_lm_smollm2", "bench_llm.py",
     lambda d, s: "python benchmarks/bench_llm.py replace=1", sec_llm),
    ("Real LLM on MultiEmo (Gemma 3 270M)", "llm_lm_gemma3", "bench_llm.py",
     lambda d, s: "python benchmarks/bench_llm.py config=configs/lm_gemma3.py runs=domain,centralized "
                  f"seeds={','.join(str(k) for k in need(d, 'runs', 'domain'))} replace=1", sec_llm),
    ("LLM method comparison (SmolLM2, MultiEmo by domain)", "llm_methods", "studies/llm_methods.py",
     lambda d, s: "python benchmarks/studies/llm_methods.py (python -m fedlora.sweep with its ARGS)",
     sec_fedlora_sweep),
    ("TSFA under CSI error (solver)", "csi_error_solver", "bench_csi_error.py",
     lambda d, s: "python benchmarks/bench_csi_error.py mode=solver replace=1", sec_csi_error),
    ("Probe of bad inputs", "probe_bad_inputs", "probe_bad_inputs.py",
     lambda d, s: "python benchmarks/probe_bad_inputs.py", sec_probe),
)


# ---------------------------------------------------------------- headline figures (README block)

def sweep_row(d: dict, group: str, label: str) -> dict:
  return need(d, "groups", group, label)


def h2h(d: dict, row: str, ref: str) -> dict:
  for h in need(d, "head_to_head"):
    if need(h, "row") == row and need(h, "ref") == ref:
      return h
  raise Missing(f"head_to_head[{row} vs {ref}]")


def of_ideal(d: dict, group: str, label: str) -> str:
  """'A % of the ideal run's accuracy (shared seeds) with B % of its bits'."""
  r, ideal = sweep_row(d, group, label), sweep_row(d, "main", "ideal")
  common = sorted(set(need(r, "per_seed")) & set(need(ideal, "per_seed")), key=int)
  acc = statistics.fmean(need(r, "per_seed", s, "final_test_accuracy") for s in common)
  ref = statistics.fmean(need(ideal, "per_seed", s, "final_test_accuracy") for s in common)
  bits = need(r, "uplink_bits_mean") / need(ideal, "uplink_bits_mean")
  return (f"{100 * acc:.2f} %, {100 * acc / ref:.1f} % of the ideal run's accuracy with "
          f"{100 * bits:.1f} % of its bits ({len(common)} seeds)")


def h2h_text(d: dict, row: str, ref: str) -> str:
  h = h2h(d, row, ref)
  return f"{need(h, 'mean'):+.2f} ± {f(need(h, 'se'))} points ({need(h, 'n')} seeds, paired)"


def acc_pm(a: dict) -> str:
  return f"{100 * need(a, 'mean'):.1f} ± {100 * need(a, 'std'):.1f}"


def llm_headline(d: dict) -> str:
  a = need(d, "accuracy")
  return (f"{100 * need(d, 'zero_shot_accuracy'):.1f} / {acc_pm(need(a, 'domain'))} / "
          f"{acc_pm(need(a, 'centralized'))} % ({need(a, 'domain', 'seeds')} seeds, "
          f"{need(d, 'shape', 'rounds')} rounds, {llm_seconds_per_round(d, 'domain'):.0f} s a round on CPU)")


def sweep_vs_reference(d: dict, label: str) -> str:
  """'+x ± y points (n seeds, paired) with z % of the reference's uplink bits' of a fedlora.sweep file."""
  q = next((q for q in need(d, "paired") if need(q, "point") == label), None)
  if q is None:
    raise Missing(f"paired[{label}]")
  bits = need(q, "mean", "uplink_bits")
  ref = next(p for p in need(d, "points") if need(p, "label") == need(q, "reference"))
  share = 1 + bits / need(ref, "mean", "uplink_bits")
  return (f"{100 * need(q, 'mean', 'final_test_accuracy'):+.2f} ± {100 * need(q, 'std', 'final_test_accuracy'):.2f} "
          f"points ({len(need(q, 'seeds'))} seeds, paired), {100 * share:.1f} % of its uplink bits")


def headline(res: dict) -> list[tuple[str, str, str]]:
  """(what, figure, section title) rows; a row whose results file is absent is left out."""
  rows = []

  def add(stem, title, what, fn):
    if stem in res:
      rows.append((what, fn(res[stem]), title))

  add("default_recipe", "Default recipe", "default experiment (SCAFFOLD): final accuracy, Dirichlet(0.1) / IID",
      lambda d: f"{pm(need(d, 'summary', 'dir01', 'final_test_accuracy'))} / "
                f"{pm(need(d, 'summary', 'iid', 'final_test_accuracy'))} %")
  add("skew", "Skew recipes", "Dirichlet(0.1) over 50 clients: SCAFFOLD vs FedAvg",
      lambda d: f"{pm(need(d, 'summary', 'dir01/scaffold', 'final_test_accuracy'))} vs "
                f"{pm(need(d, 'summary', 'dir01/fedavg', 'final_test_accuracy'))} %")
  add("sweep_methods", "Method comparison", "SOFT ρ = 1/4 − SVD truncation ρ = 1/4",
      lambda d: h2h_text(d, "main/soft_r4", "main/svd_r4"))
  add("sweep_methods", "Method comparison", "SOFT + error feedback − SVD truncation, ρ = 1/4",
      lambda d: h2h_text(d, "ef/ef_gram_delta", "main/svd_r4"))
  add("sweep_methods", "Method comparison", "SOFT + TSFA online stage, τ̄ = 0.5 s, rank 8",
      lambda d: of_ideal(d, "main", "soft_tsfa_t050"))
  add("sweep_methods", "Method comparison", "both TSFA stages, τ̄ = 0.5 s",
      lambda d: of_ideal(d, "rank", "offline_t050")
      + f", rank chosen per seed: {ranks_text(need(sweep_row(d, 'rank', 'offline_t050'), 'offline_chosen_rank'))}")
  add("llm_lm_smollm2", "Real LLM on MultiEmo (SmolLM2)",
      "SmolLM2-135M on MultiEmo, 20 clients by domain: zero-shot / federated / centralized LoRA", llm_headline)
  add("llm_methods", "LLM method comparison (SmolLM2, MultiEmo by domain)",
      "SmolLM2: SOFT ρ = 1/4 − ideal (dense rank 8)", lambda d: sweep_vs_reference(d, "soft_r4"))
  add("round_throughput", "Round throughput", "vmapped / Python-loop client phase, small / default clients",
      lambda d: f"{need(d, 'regimes', 'small_clients', 'speedup_vmapped_over_loop'):.2f}× / "
                f"{need(d, 'regimes', 'default', 'speedup_vmapped_over_loop'):.2f}×")
  add("client_scaling", "Client scaling", "K = 1,000 small clients in one round",
      lambda d: (lambda r: f"chunks of {need(r, 'chunk')}, {need(r, 'client_steps_per_s'):.1f} client-steps/s, "
                           f"peak RSS {need(r, 'memory', 'host_peak_rss_bytes') / 2 ** 30:.2f} GiB")(
          need(d, "runs", "small/K=1000/vmap-chunked")))
  add("tsfa_solver", "TSFA solver", "TSFA solver per round, 1,000 clients",
      lambda d: (lambda s: f"{need(s, 'run_ms'):.0f} ms, relative gap {need(s, 'max_rel_gap'):.1e}")(
          next((s for s in need(d, "summary") if need(s, "clients") == 1000), None) or need(d, "summary", -1)))
  add("soft_vs_svd", "SOFT vs SVD", "SOFT vs SVD truncation per adapter, 4096×4096, r = 8",
      lambda d: (lambda r: f"{need(r, 'soft', 'median_ms'):.2f} vs {need(r, 'svd', 'median_ms'):.2f} ms")(
          next(r for r in need(d, "rows") if (need(r, "d_in"), need(r, "d_out"), need(r, "r")) == (4096, 4096, 8))))
  return rows


# ---------------------------------------------------------------- writing and checking

def load(results: str) -> tuple[dict, list[str]]:
  """{stem: parsed JSON} of every results file SECTIONS names that exists; problems for unreadable ones."""
  res, problems = {}, []
  for stem in dict.fromkeys(s[1] for s in SECTIONS):
    path = os.path.join(results, stem + ".json")
    if not os.path.exists(path):
      continue
    try:
      with open(path, encoding="utf-8") as fh:
        res[stem] = json.load(fh)
    except (OSError, ValueError) as e:
      problems.append(f"{path}: cannot be read as JSON ({e})")
  return res, problems


def results_md(res: dict, problems: list[str]) -> str:
  lines = ["# Results", "",
           "Generated by `python benchmarks/report.py` from `benchmarks/results/*.json`; do not edit by hand "
           "(`python benchmarks/report.py --check` fails when this file and the JSON disagree). Each table "
           "names the script and command that wrote its results file. What the figures show is discussed in "
           "[findings.md](findings.md), the method in [method.md](method.md), scaling in "
           "[scaling.md](scaling.md).", ""]
  toc, body, absent = [], [], []
  for title, stem, script, command, build in SECTIONS:
    if stem not in res:
      absent.append(f"- {title}: no `benchmarks/results/{stem}.json`; run `benchmarks/{script}`.")
      continue
    d = res[stem]
    toc.append(f"- [{title}](#{anchor(title)})")
    try:
      block = (["", f"## {title}", "",
                f"From `benchmarks/results/{stem}.json`, written by `benchmarks/{script}`: `{command(d, stem)}`."]
               + environment_line(d) + [""] + build(d))
    except Missing as e:
      msg = f"benchmarks/results/{stem}.json lacks field '{e.path}', needed by the table '{title}'"
      problems.append(msg)
      block = ["", f"## {title}", "", f"**Not generated:** {msg}."]
    body += block
  lines += toc
  if absent:
    lines += ["", "Not measured yet:"] + absent
  return "\n".join(lines + body) + "\n"


def readme_block(res: dict, problems: list[str]) -> str:
  try:
    rows = headline(res)
  except Missing as e:
    problems.append(f"a headline figure needs field '{e.path}', absent from its results file")
    rows = []
  body = table(["what", "figure", "table"],
               [[w, fig, f"[{t}](docs/results.md#{anchor(t)})"] for w, fig, t in rows])
  return "\n".join([BEGIN, *body, "", "All tables: [docs/results.md](docs/results.md) "
                    "(generated by `python benchmarks/report.py`).", END])


def splice(readme: str, block: str, name: str) -> str:
  """`readme` with the text between the markers (inclusive) replaced by `block`."""
  if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
    raise ValueError(f"{name} must hold '{BEGIN}' once, followed by '{END}' once")
  return readme[:readme.index(BEGIN)] + block + readme[readme.index(END) + len(END):]


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(
      prog="python benchmarks/report.py",
      description="Write docs/results.md and the README's headline-results block from benchmarks/results/*.json.")
  p.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"),
                 help="folder of results files (default: benchmarks/results)")
  p.add_argument("--out", default=os.path.join(ROOT, "docs", "results.md"), help="results document to write")
  p.add_argument("--readme", default=os.path.join(ROOT, "README.md"),
                 help=f"README whose block between {BEGIN} and {END} is rewritten")
  p.add_argument("--check", action="store_true",
                 help="write nothing; exit 1 if --out or the README block differ from what would be written")
  a = p.parse_args(argv)
  if not os.path.isdir(a.results):
    p.error(f"--results {a.results!r} is not a folder")
  if not os.path.isfile(a.readme):
    p.error(f"--readme {a.readme!r} is not a file")
  if not os.path.isdir(os.path.dirname(os.path.abspath(a.out))):
    p.error(f"--out {a.out!r}: its folder does not exist")

  res, problems = load(a.results)
  doc = results_md(res, problems)
  with open(a.readme, encoding="utf-8") as fh:
    readme = fh.read()
  try:
    new_readme = splice(readme, readme_block(res, problems), a.readme)
  except ValueError as e:
    p.error(str(e))
  for msg in problems:
    print(f"error: {msg}", file=sys.stderr)

  if a.check:
    stale = []
    old_doc = open(a.out, encoding="utf-8").read() if os.path.exists(a.out) else None
    if old_doc != doc:
      stale.append(a.out)
    if readme != new_readme:
      stale.append(f"{a.readme} (the block between {BEGIN} and {END})")
    for s in stale:
      print(f"error: {s} differs from what benchmarks/report.py writes; run python benchmarks/report.py",
            file=sys.stderr)
    return 1 if stale or problems else 0

  with open(a.out, "w", encoding="utf-8") as fh:
    fh.write(doc)
  if new_readme != readme:
    with open(a.readme, "w", encoding="utf-8") as fh:
      fh.write(new_readme)
  print(f"wrote {a.out} ({len(res)} results files) and the results block of {a.readme}")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())

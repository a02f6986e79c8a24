"""Figures of a sweep's results file: `python -m fedlora.sweep.figures RESULTS.json [--out-dir DIR]`.

  <stem>.png          final accuracy (mean ± std over seeds) against cumulative uplink bits, one
                      marker per point, coloured by method.name when it varies; the Pareto front
                      (no other point has more accuracy with fewer bits) drawn as a line
  <stem>-<key>.png    for each swept numeric key (two or more values, e.g. tsfa.online.latency_budget,
                      wireless.channel.tx_power_dbm, wireless.channel.csi_error_std,
                      fed.clients_per_round, lora.rank): accuracy, mean round latency and deadline
                      misses against it, mean ± std error bars, one line per value of the other keys

Files go beside the results file (or --out-dir). `draw(results, path)` is the same as a function.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys


def _num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def numeric_axes(points: list[dict]) -> list[str]:
  """Keys whose values over the points are all numbers (finite) and take two or more values."""
  keys = []
  for k in dict.fromkeys(k for p in points for k in p["overrides"]):
    vals = [p["overrides"].get(k) for p in points if k in p["overrides"]]
    if all(_num(v) for v in vals) and len(set(vals)) >= 2:
      keys.append(k)
  return keys


def pareto(xs: list[float], ys: list[float]) -> list[int]:
  """Indices of the points no other point beats (fewer or equal bits and more accuracy, or equal
  accuracy with fewer bits), by increasing bits."""
  order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
  front, best = [], -math.inf
  for i in order:
    if ys[i] > best:
      front.append(i)
      best = ys[i]
  return front


def draw(res: dict, results_path: str, out_dir: str | None = None) -> list[str]:
  """Writes the figures (module docstring) of `res` (a results file's content); returns their paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  out_dir = out_dir or os.path.dirname(os.path.abspath(results_path))
  stem = os.path.splitext(os.path.basename(results_path))[0]
  pts = [p for p in res["points"] if p["seeds"] and p["mean"].get("final_test_accuracy") is not None]
  paths = []
  if not pts:
    return paths
  # accuracy against uplink bits, with the Pareto front
  fig, ax = plt.subplots(figsize=(6.4, 4.6))
  methods = [p["overrides"].get("method.name") for p in pts]
  colour = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(methods))}
  xs = [p["mean"]["uplink_bits"] / 1e6 for p in pts]
  ys = [100 * p["mean"]["final_test_accuracy"] for p in pts]
  for p, m, x, y in zip(pts, methods, xs, ys):
    ax.errorbar(x, y, yerr=100 * p["std"]["final_test_accuracy"], xerr=p["std"]["uplink_bits"] / 1e6,
                fmt="o", ms=5, capsize=2, color=colour[m])
    ax.annotate(p["label"], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
  front = pareto(xs, ys)
  ax.plot([xs[i] for i in front], [ys[i] for i in front], "k--", lw=1, label="Pareto front")
  for m, c in colour.items():
    if m is not None:
      ax.plot([], [], "o", color=c, label=m)
  if min(xs) > 0 and max(xs) / min(xs) > 20:
    ax.set_xscale("log")
  ax.set_xlabel("cumulative uplink (Mbit)"), ax.set_ylabel("final test accuracy (%)")
  ax.set_title(f"{res.get('config', '')}: mean ± std over seeds"), ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, f"{stem}.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)
  # each numeric swept key: accuracy, latency and deadline misses against it
  panels = [("final_test_accuracy", "final test accuracy (%)", 100), ("mean_round_latency_s",
            "mean round latency (s)", 1), ("deadline_misses", "deadline misses (sum over rounds)", 1)]
  for key in numeric_axes(pts):
    use = [m for m in panels if any(p["mean"].get(m[0]) is not None for p in pts)]
    fig, axes = plt.subplots(1, len(use), figsize=(4.6 * len(use), 3.8), squeeze=False)
    lines: dict = {}
    for p in pts:
      if key in p["overrides"]:
        rest = ", ".join(f"{k}={v}" for k, v in p["overrides"].items() if k != key) or "all"
        lines.setdefault(rest, []).append(p)
    for ax, (m, name, scale) in zip(axes[0], use):
      for rest, ps in lines.items():
        ps = sorted((p for p in ps if p["mean"].get(m) is not None), key=lambda p: p["overrides"][key])
        if ps:
          ax.errorbar([p["overrides"][key] for p in ps], [scale * p["mean"][m] for p in ps],
                      yerr=[scale * (p["std"][m] or 0.0) for p in ps], marker="o", ms=4, capsize=2,
                      label=rest)
      ax.set_xlabel(key), ax.set_ylabel(name), ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, f"{stem}-{key}.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
  return paths


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m fedlora.sweep.figures", description=__doc__)
  p.add_argument("results", help="a results file of python -m fedlora.sweep")
  p.add_argument("--out-dir", help="folder of the figures (default: beside the results file)")
  a = p.parse_args(argv)
  try:
    with open(a.results) as f:
      res = json.load(f)
    if not isinstance(res, dict) or "points" not in res:
      raise ValueError("no 'points': not a results file of python -m fedlora.sweep")
  except (OSError, ValueError) as e:
    print(f"error: {a.results}: {e}", file=sys.stderr)
    return 2
  if a.out_dir and not os.path.isdir(a.out_dir):
    print(f"error: --out-dir {a.out_dir!r} is not a folder", file=sys.stderr)
    return 2
  for path in draw(res, a.results, a.out_dir):
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""python -m fedlora.sweep --config FILE[:VARIANT] (--grid KEY=V1,V2 ... | --study FILE.py)
                          [--seeds 0,1,2] [--workers N] [--dir DIR] [--out results.json]
                          [--reference KEY=VALUE,...] [--set KEY=VALUE ...] [--no-figures]

Runs every point of the grid (the cartesian product of the --grid axes; --study: the list of grids a
Python file defines as STUDY) for every seed, each as `python -m fedlora` in its own workdir
DIR/<point>-s<seed> (log: DIR/logs/), at most N at a time; a finished run is read back, never repeated.
Every run's config is validated before the first starts. Writes the results file (every run's key
figures, per point mean ± std over seeds, per-seed differences to the --reference point) and its
figures beside it (python -m fedlora.sweep.figures RESULTS redraws them). Exit status: 0, 1 when a run
failed (each named with its log), 2 for a bad sweep (nothing run). Guide: docs/sweeps.md.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m fedlora.sweep", description=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="config file, FILE.py or FILE.py:VARIANT")
  p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                 help="one axis of the grid (repeat for more axes; their cartesian product)")
  p.add_argument("--study", help="a Python file whose STUDY is a list of grids ({key: [values]}; the "
                 "--grid axes, if any, are added to every grid)")
  p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
  p.add_argument("--workers", type=int, default=1, help="runs at a time, each its own process (default 1)")
  p.add_argument("--dir", help="sweep folder holding the workdirs (default runs/sweep-<config name>)")
  p.add_argument("--out", help="results file (default <dir>/results.json)")
  p.add_argument("--reference", action="append", default=[], metavar="KEY=VALUE,...",
                 help="the reference point of the paired differences, e.g. method.name=ideal")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a config override of every run (repeat for more)")
  p.add_argument("--no-figures", action="store_true", help="write the results file only")
  return p


def main(argv=None) -> int:
  from fedlora import sweep as sw
  args = parser().parse_args(argv)
  try:
    grid = {}
    for g in args.grid:
      axis = sw.parse_grid_arg(g)
      if set(axis) & set(grid):
        raise sw.SweepError(f"--grid {g!r}: key given twice")
      grid.update(axis)
    grids = [{**g, **grid} for g in sw.load_study(args.study)] if args.study else [grid]
    try:
      seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
      raise sw.SweepError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds):
      raise sw.SweepError(f"--seeds {args.seeds!r}: a seed given twice")
    name = os.path.splitext(os.path.basename(args.config.split(":", 1)[0]))[0]
    variant = args.config.split(":", 1)[1] if ":" in args.config else ""
    sweep_dir = args.dir or os.path.join("runs", f"sweep-{name}{'-' + variant if variant else ''}")
    out = args.out or os.path.join(sweep_dir, "results.json")
    res = sw.sweep(args.config, grids, seeds, sweep_dir, out, sets=sw.parse_assignments(args.set, "--set"),
                   workers=args.workers,
                   reference=sw.parse_assignments(args.reference, "--reference") or None,
                   echo=lambda m: print(m, flush=True))
  except (sw.SweepError, ValueError) as e:  # ConfigError (a ValueError) from the config file itself
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("error: interrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  c = res["counts"]
  print(f"ran {c['ran']}, read back {c['read_back']}, failed {c['failed']} of {c['planned']} runs; "
        f"results: {out}", flush=True)
  if not args.no_figures:
    from fedlora.sweep.figures import draw
    for path in draw(res, out):
      print(f"figure: {path}")
  for f in res["failed"]:
    print(f"error: {f['point']} seed {f['seed']} failed (exit {f['rc']}); log: {f['log']}", file=sys.stderr)
  return 1 if res["failed"] else 0


if __name__ == "__main__":
  sys.exit(main())

"""Time SOFT sparsification against the 'svd' baseline, per adapter, on realistic layer shapes.

Both paths are the real compressors (`get_compressor('soft'|'svd', {})`) applied to a trainable
tree holding one adapter `lora_a [d_in, r]`, `lora_b [r, d_out]` at ratio ρ (default 0.25), jitted.
Compile time (AOT `lower().compile()`) is reported apart from run time; runs are timed with
`block_until_ready` after warm-up runs, and the median over repeats is reported.

Repeats: 3 warm-ups and 20 repeats for both (`svd_repeats`; the full-product SVD used by 'svd'
before 2026-12-01 took ~10 s at 4096×4096 and had 0 / 2).

LAPACK (OpenBLAS, behind the CPU SVD/QR) is pinned to one thread unless OPENBLAS_NUM_THREADS is set:
in a first run on a shared 2-core host, single SVDs were intermittently 10-50x slower while other
processes were busy (38 s instead of 0.73 s for 1024x4096; likely OpenBLAS worker threads contending for
the shared cores), whereas one thread gave the same 0.73 s on a quiet host. Timings on a shared host
remain noisy: the SVD column also reports the minimum.
Load averages at start/end are recorded in the JSON.

  python benchmarks/bench_soft_vs_svd.py [--ratio 0.25] [--quick] [--smoke] [--out PATH | --replace]

--ratio: ρ in (0, 1]; --quick: only the 768×768 shape; --smoke: one 64×96 adapter of rank 4, 1 warm-up
and 2 repeats. Writes the results file (environment + one row per (shape, rank)): runs/bench/
soft_vs_svd.json, --out PATH, or with --replace the committed one. The committed results:
  python benchmarks/bench_soft_vs_svd.py --replace
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before jax/scipy load OpenBLAS (see docstring)

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import argument_parser, fail, smoke, write_result  # noqa: E402
from fedlora.compress import get_compressor  # noqa: E402

SHAPES = ((768, 768), (1024, 4096), (4096, 4096))
RANKS = (8, 16, 32, 64)


def svd_repeats(d_in: int, d_out: int) -> tuple[int, int]:
  """(warm-ups, repeats) of the SVD baseline: SOFT's 3 / 20 (since 2026-12-01 'svd' takes the SVD of
  the r×r core of the product, milliseconds at every shape; before, the full product's SVD took ~10 s
  at 4096×4096 and got 0 / 2)."""
  return 3, 20


def make_inputs(d_in: int, d_out: int, r: int, seed: int = 0):
  """Round-t-like inputs: global factors (a0 kaiming-uniform, b0 small) and a small update."""
  rng = np.random.default_rng(seed)
  bound = 1.0 / np.sqrt(d_in)
  a0 = rng.uniform(-bound, bound, size=(d_in, r)).astype(np.float32)
  b0 = (0.01 * rng.normal(size=(r, d_out))).astype(np.float32)
  da = (1e-3 * rng.normal(size=(d_in, r))).astype(np.float32)
  db = (1e-3 * rng.normal(size=(r, d_out))).astype(np.float32)
  ref = {"layer": {"lora_a": jnp.asarray(a0), "lora_b": jnp.asarray(b0)}}
  delta = {"layer": {"lora_a": jnp.asarray(da), "lora_b": jnp.asarray(db)}}
  return delta, ref


def time_compressor(name: str, delta, ref, ratio: float, warmup: int, repeats: int) -> dict:
  comp = get_compressor(name, {})
  key = jax.random.PRNGKey(0)
  fn = jax.jit(lambda d, rho, g: comp.update((), d, rho, key, g))
  rho = jnp.float32(ratio)
  t0 = time.perf_counter()
  compiled = fn.lower(delta, rho, ref).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    jax.block_until_ready(compiled(delta, rho, ref))
  times = []
  out = None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(delta, rho, ref))
    times.append(time.perf_counter() - t0)
  return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
          "compile_s": compile_s, "warmup": warmup, "repeats": repeats,
          "bits": float(out.bits)}


def main(argv=None) -> int:
  ap = argument_parser(__doc__)
  ap.add_argument("--ratio", type=float, default=0.25, help="sparsification ratio ρ in (0, 1]")
  ap.add_argument("--quick", action="store_true", help="only the 768x768 shape")
  args = ap.parse_args(argv)
  if not 0.0 < args.ratio <= 1.0:
    fail(f"--ratio={args.ratio}: a number in (0, 1]")
  shapes = SHAPES[:1] if args.quick else SHAPES
  ranks, reps = RANKS, (3, 20)
  if smoke():
    shapes, ranks, reps = ((64, 96),), (4,), (1, 2)
  t_start = time.perf_counter()
  load_start = os.getloadavg()
  rows = []
  hdr = (f"{'d_in x d_out':>13} {'r':>3} | {'SOFT ms':>9} {'(comp s)':>8} | {'SVD ms':>10} "
         f"{'min ms':>10} {'(comp s)':>8} {'reps':>4} | {'speed-up':>9}")
  print(f"SOFT vs SVD baseline, per adapter, ratio={args.ratio}, backend={jax.default_backend()}, "
        f"cpus={os.cpu_count()}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
        f"load avg {load_start[0]:.2f}")
  print(hdr)
  print("-" * len(hdr))
  for d_in, d_out in shapes:
    for r in ranks:
      delta, ref = make_inputs(d_in, d_out, r)
      soft = time_compressor("soft", delta, ref, args.ratio, warmup=reps[0], repeats=reps[1])
      w, n = reps if smoke() else svd_repeats(d_in, d_out)
      svd = time_compressor("svd", delta, ref, args.ratio, warmup=w, repeats=n)
      speedup = svd["median_ms"] / soft["median_ms"]
      rows.append({"d_in": d_in, "d_out": d_out, "r": r, "ratio": args.ratio,
                   "soft": soft, "svd": svd, "speedup": speedup})
      print(f"{d_in:>5} x {d_out:<5} {r:>3} | {soft['median_ms']:>9.3f} {soft['compile_s']:>8.2f} | "
            f"{svd['median_ms']:>10.1f} {svd['min_ms']:>10.1f} {svd['compile_s']:>8.2f} {n:>4} | {speedup:>8.0f}x", flush=True)
  total = time.perf_counter() - t_start
  print(f"total wall time {total:.1f} s, load avg {os.getloadavg()[0]:.2f}; both: {reps[0]} warm-ups + "
        f"{reps[1]} repeats")
  result = {
      "benchmark": "soft_vs_svd",
      "description": "per-adapter compressor update time (jitted, median of repeats, "
                     "block_until_ready); compile time separate",
      "env": {"jax": jax.__version__, "backend": jax.default_backend(),
              "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
              "python": platform.python_version(), "machine": platform.machine(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
              "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
      "repeat_policy": {"soft": {"warmup": reps[0], "repeats": reps[1]},
                        "svd": {"warmup": reps[0], "repeats": reps[1]}},
      "total_wall_s": total,
      "rows": rows,
  }
  print(f"wrote {write_result('soft_vs_svd', result)}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

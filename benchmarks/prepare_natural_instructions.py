"""Writes BIG-bench's Natural Instructions (61 crowdsourcing tasks: Quoref, MC-TACO, CosmosQA, DROP,
Winogrande, QASC, MultiRC, ROPES, ...) as instruction -> output pairs in `OUT/natural_instructions.jsonl`.

Source: the BIG-bench sdist `bigbench==1.0.0` (358.2 MB; read as a tarball, never installed).
`bigbench/benchmark_tasks/natural_instructions/subtaskNNN_<name>/task.json` holds a `task_prefix`
(the crowdsourcing definition, things to avoid, emphasis, and a closing `Prompt: ...`) and
`examples`, each an `input` with a list of acceptable `target`s (193,250 examples in all).

Each example becomes one row:
  instruction   the task prefix, a blank line, the input, a blank line and `Output:` (see PROMPT)
  output        the first non-empty target (stripped)
  targets       every non-empty target (stripped), for a metric that accepts any of them
  subtask       the subtask folder name, e.g. 'subtask001_quoref_question_generation'
At most --per_subtask examples are kept per subtask (0 = all): a uniform sample without
replacement drawn with --seed, kept in source order. Rows: subtasks sorted by name, then source
order. Examples with an empty input or no non-empty target are dropped and counted.

  python benchmarks/prepare_natural_instructions.py [--out runs/data] [--sdist bigbench-1.0.0.tar.gz]
      [--per_subtask 500] [--seed 0] [--download_dir runs/downloads] [--force]

Use it with the causal-LM task: `data.source='json'`, `data.prompt_column='instruction'`,
`data.response_column='output'`, `data.category_column='subtask'`.
"""
from __future__ import annotations

import collections
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.assets import (BIGBENCH, existing_file, fetch, nonneg_int, parser,  # noqa: E402
                               tar_members, write_jsonl)

TASK_DIR = "bigbench/benchmark_tasks/natural_instructions"
PROMPT = "{prefix}\n\n{input}\n\nOutput:\n"


def subtask_rows(name: str, task: dict, per_subtask: int, seed: int) -> tuple[list[dict], collections.Counter, int]:
  """(rows, dropped counts, examples in the source) of one subtask."""
  prefix = (task.get("task_prefix") or task.get("description") or "").strip()
  if not prefix:
    raise SystemExit(f"error: {TASK_DIR}/{name}/task.json has neither task_prefix nor description")
  rows, dropped = [], collections.Counter()
  for ex in task["examples"]:
    text = (ex.get("input") or "").strip()
    target = ex.get("target")
    targets = [target] if isinstance(target, str) else list(target or [])
    targets = [t.strip() for t in targets if isinstance(t, str) and t.strip()]
    if not text:
      dropped["empty input"] += 1
    elif not targets:
      dropped["no non-empty target"] += 1
    else:
      rows.append({"instruction": PROMPT.format(prefix=prefix, input=text), "output": targets[0],
                   "targets": targets, "subtask": name})
  if per_subtask and len(rows) > per_subtask:
    # The seed is mixed with the subtask's name, so each subtask draws its own sample and adding or
    # removing a subtask does not change the others.
    rng = np.random.default_rng([seed, *name.encode("utf-8")])
    keep = np.sort(rng.choice(len(rows), size=per_subtask, replace=False))
    rows = [rows[i] for i in keep]
  return rows, dropped, len(task["examples"])


def prepare(sdist: str, per_subtask: int, seed: int) -> tuple[list[dict], dict, dict]:
  """(rows, dropped counts by reason, {subtask: (source examples, rows kept)})."""
  by_name, dropped, sizes = {}, collections.Counter(), {}
  for path, raw in tar_members(sdist, rf"{TASK_DIR}/subtask[^/]+/task\.json"):
    name = path.split("/")[-2]
    rows, drop, total = subtask_rows(name, json.loads(raw.decode("utf-8")), per_subtask, seed)
    by_name[name], sizes[name] = rows, (total, len(rows))
    dropped.update(drop)
  if not by_name:
    raise SystemExit(f"error: {sdist} has no {TASK_DIR}/subtask*/task.json; is it the bigbench sdist?")
  rows = [r for name in sorted(by_name) for r in by_name[name]]
  return rows, dict(dropped), dict(sorted(sizes.items()))


def main(argv=None):
  p = parser(__doc__)
  p.add_argument("--sdist", type=existing_file, default=None,
                 help="bigbench-1.0.0.tar.gz already on disk (default: fetch it into --download_dir)")
  p.add_argument("--per_subtask", type=nonneg_int, default=500,
                 help="examples kept per subtask, a seeded sample (default 500; 0 = all)")
  p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the per-subtask sample")
  args = p.parse_args(argv)
  sdist = fetch(BIGBENCH, args.sdist, args.download_dir)
  rows, dropped, sizes = prepare(sdist, args.per_subtask, args.seed)
  out = os.path.join(args.out, "natural_instructions.jsonl")
  status = write_jsonl(out, rows, force=args.force)
  width = max(len(n) for n in sizes)
  print(f"{'subtask':<{width}}  {'source':>7}  {'kept':>6}")
  for name, (total, kept) in sizes.items():
    print(f"{name:<{width}}  {total:>7,}  {kept:>6,}")
  total = sum(t for t, _ in sizes.values())
  print(f"{len(rows):,} rows from {len(sizes)} subtasks ({total:,} examples in the source) -> {out} "
        f"({status}); dropped {dropped or 0}")
  return out


if __name__ == "__main__":
  main()

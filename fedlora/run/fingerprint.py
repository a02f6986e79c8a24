"""The run fingerprint: a hash of every config value that shapes the results.

Keys that may change when a run is resumed (how long it runs, how often it evaluates or saves, where
and on what mesh it runs, how it reports) are listed once, in `RESUMABLE_KEYS` (`a.*` = a whole
section). Everything else — model, data, LoRA, method, optimiser, seed, channel, ... including keys
added later — is part of the fingerprint, so a workdir's results always belong to its config.

A key added after runs were recorded, at the value that reproduces what every run did before it
existed, is left out (`ADDED_KEYS`): such a run's fingerprint is the one its workdir already holds,
so its folder, resume and results stay valid; at any other value the key is in the fingerprint.
`same_config(stored, fp)` compares a stored fingerprint with this one after applying that rule to
the stored items too (a config that held such a key at that value before it was listed matches).
"""
from __future__ import annotations

import fnmatch
import hashlib
import json

RESUMABLE_KEYS = (
    "workdir",        # where the run lives (moving a workdir is fine)
    "resume",         # the resume policy itself
    "debug",          # tracebacks
    "progress",       # progress bar
    "tracking",       # where the records also go (metrics.jsonl always; tensorboard, wandb)
    "fed.rounds",     # more rounds = continue; fewer than finished is refused (see fedlora.run.workdir)
    "eval.every",     # evaluation does not change the training state
    "eval.batch_size",
    "eval.zero_shot",  # an evaluation before round 1; training is the same
    "checkpoint.*",   # how often / how many checkpoints
    "mesh.*",         # devices the clients are mapped over (resume restores onto any mesh)
    "fed.client_chunk",      # how the sampled clients are chunked (same result, tests/test_fed.py)
    "fed.memory_budget_gb",  # the budget the automatic chunk is sized for (same result)
    "fed.cpu_chunk_tokens",  # the automatic chunk's CPU cap (same result)
    "model.grad_barrier",    # where XLA:CPU materialises a gradient (same values, tests/test_models.py)
)

# key -> the value that reproduces the behaviour from before the key existed (tests/test_run.py)
ADDED_KEYS = {
    "server.mean": "all",  # the FedAvg mean over all delivered uploads
    "server.aggregation": "fedavg",  # ΔA and ΔB averaged separately
    "lora.client_ranks": (),  # every client has lora.rank
    "lora.client_ranks_by": "client",  # read only with client_ranks
    "method.reorth": False,  # no server re-orthogonalisation
    "lora.init_decay": 0.5,  # read only by lora.init='graded'
    "tsfa.online.initial_queue": 0.0,  # TSFA's queue starts empty
    "tsfa.online.robust": False,  # TSFA plans on the CSI estimates
    "tsfa.online.miss_prob": 0.05,  # read only with tsfa.online.robust=True
    # keys every config holds since the sections declare them (some configs held them before):
    "data.cache_dir": "",  # the datasets builders' own cache
    "data.partition_seed": -1,  # the partition seed is data.split_seed
    "data.prompt_column": "instruction",  # causal-LM columns, read only by task causal_lm
    "data.response_column": "output",
    "data.messages_column": "",
    "data.category_column": "",
    "data.packing": False,
    "eval.max_new_tokens": 32,  # causal-LM evaluation settings, read only by task causal_lm
    "eval.print_samples": 3,
    "eval.temperature": 0.0,
    "wireless.channel.downlink_tx_power_dbm": 43.0,  # the channel's built-in downlink power
    "data.label_case_fold": False,  # string labels that differ in case are separate classes
    "task.prompt_template": "",  # task lm_classification's keys, read by no other task
    "task.label_words": (),
}


def flatten(tree, prefix: str = "") -> dict:
  """`{'a.b.c': value}` of a nested dict / ConfigDict, values made JSON-plain (tuples -> lists)."""
  if hasattr(tree, "to_dict"):
    tree = tree.to_dict()
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if hasattr(v, "to_dict") or isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = json.loads(json.dumps(v, default=str))  # tuple -> list, inf stays inf
  return out


def is_resumable(key: str) -> bool:
  return any(fnmatch.fnmatchcase(key, pat) for pat in RESUMABLE_KEYS)


def _plain(v):
  return json.loads(json.dumps(v, default=str))  # tuple -> list, as flatten stores values


def fingerprint_items(config) -> dict:
  """The flattened config minus `RESUMABLE_KEYS` and the `ADDED_KEYS` at their earlier behaviour."""
  return {k: v for k, v in sorted(flatten(config).items())
          if not is_resumable(k) and not (k in ADDED_KEYS and v == _plain(ADDED_KEYS[k]))}


def fingerprint_hash(items: dict) -> str:
  return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(config) -> dict:
  """`{'hash': 16 hex digits, 'items': {key: value}}`, what `fingerprint.json` and checkpoints hold."""
  items = fingerprint_items(config)
  return {"hash": fingerprint_hash(items), "items": items}


def same_config(stored: dict, fp: dict) -> bool:
  """Whether a stored fingerprint (`{'hash', 'items'}`) is this config's (module docstring)."""
  if stored.get("hash") == fp["hash"]:
    return True
  return fingerprint_hash(fingerprint_items(stored.get("items", {}))) == fp["hash"]


_ABSENT = "<absent>"


def differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
  """`[(key, old value, new value)]` of two fingerprints' items (a missing key shows as <absent>)."""
  old = fingerprint_items(old)
  keys = sorted(set(old) | set(new))
  return [(k, old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in keys
          if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


def describe_differences(diff, limit: int = 12) -> str:
  parts = [f"{k}: {o!r} -> {n!r}" for k, o, n in diff[:limit]]
  if len(diff) > limit:
    parts.append(f"... and {len(diff) - limit} more")
  return "; ".join(parts)


# ---- the data's own fingerprint (its content, not its path) -------------------------------------

def data_fingerprint(files: list[str], arrays: dict) -> dict:
  """`{'files': {path: sha256 of its bytes}, 'arrays': sha256}` of the data a run trains and tests
  on: the files its source read and the prepared arrays (tokens, labels, client sizes), so a changed
  file or a change in how it is prepared is found on resume, whatever the path says."""
  out = {}
  for p in files:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
      for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    out[p] = h.hexdigest()[:16]
  h = hashlib.sha256()
  for k in sorted(arrays):
    a = arrays[k]
    h.update(k.encode())
    h.update(json.dumps(a, sort_keys=True, default=str).encode() if isinstance(a, (list, dict, str))
             else _array_bytes(a))
  return {"files": out, "arrays": h.hexdigest()[:16]}


def _array_bytes(a) -> bytes:
  import numpy as np
  a = np.ascontiguousarray(np.asarray(a))
  return str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()


def data_differences(old: dict, new: dict) -> str:
  """What changed between two data fingerprints, for the refusal message ('' when nothing did)."""
  if old == new:
    return ""
  of, nf = old.get("files", {}), new.get("files", {})
  changed = sorted(p for p in set(of) & set(nf) if of[p] != nf[p])
  parts = []
  if changed:
    parts.append(f"file(s) changed since the run started: {changed[:5]}")
  gone, added = sorted(set(of) - set(nf)), sorted(set(nf) - set(of))
  if gone or added:
    parts.append(f"files read then but not now: {gone[:5]}; now but not then: {added[:5]}")
  if not parts:
    parts.append("the same files, prepared differently (tokenizer, data.* keys or fedlora's data "
                 "code changed), so the arrays differ")
  return "; ".join(parts)

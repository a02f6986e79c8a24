"""Instruction data for the causal-LM task: local file -> (prompt, response) token ids -> fixed-shape
arrays -> per-client stacked arrays.

Source (`config.data`): `source` in 'json' (also JSONL) | 'csv' | 'parquet' | 'disk' (`save_to_disk`
folder) with `path`; either `prompt_column` + `response_column`, or `messages_column` (a list of
`{'role', 'content'}` turns whose LAST turn is the response): it is rendered with the tokenizer's
chat template when the tokenizer has one (rendered by `jinja2`), else as plain `role: content` lines
ending in `assistant: `. An optional `category_column` drives the non-IID split.

Tokens: prompt = `tokenizer(prompt)` (with the tokenizer's special tokens, e.g. BOS; a chat-template
prompt already holds them), response = `tokenizer(response, add_special_tokens=False) + [EOS]`.
Longer than `max_length`: the response keeps at most `max_length - 1` tokens (cut on the right) and
the prompt is cut FROM THE LEFT to fill the rest; both are counted (`truncated_prompts`,
`truncated_responses`).

Rows (`data.packing`): False -> one example per row, right-padded; True -> examples packed greedily
in order into rows of `max_length` (never split; each row's examples get segment ids 1, 2, ... in
`attention_mask` and restart `position_ids` at 0). Arrays `[rows, L]` int32: `input_ids`,
`attention_mask` (segment ids, 0 = pad), `loss_mask` (1 on response tokens: the tokens learned),
`position_ids`.

Clients: the examples (not rows) are partitioned with `fedlora.data.partition` over the category ids
('dirichlet' needs `category_column`; 'quantity' and 'iid' do not), then each client's examples are
padded or packed into its own rows and stacked (`stack_client_rows`). The held-out split (stratified
by category when there is one) is always padded, plus left-padded prompts and the reference answers
for generation (exact match).
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple, Sequence

import numpy as np

class Example(NamedTuple):
  prompt: list   # token ids
  response: list  # token ids, ending in EOS unless truncated


def files_sources() -> tuple:
  """The registered sources that read a user's `data.path` (what instruction data needs)."""
  from fedlora.data.readers import READERS
  return tuple(n for n, e in READERS.entries().items() if e.obj.files)


def load_instruct_dataset(data_cfg) -> Any:
  """The raw `datasets.Dataset` of `config.data` with its columns checked."""
  from fedlora.data.readers import READERS
  source, path = data_cfg.source, data_cfg.path
  reader = READERS.get(source).obj
  if not reader.files:
    raise ValueError(f"config.data.source={source!r} is not allowed for task causal_lm: a source "
                     f"reading data.path, one of {files_sources()}")
  if not path or not os.path.exists(path):
    raise ValueError(f"config.data.path={path!r}: no such file or folder (source {source!r})")
  ds = reader.read(data_cfg)
  if data_cfg.messages_column:
    need = [data_cfg.messages_column]
  else:
    need = [data_cfg.prompt_column, data_cfg.response_column]
  if data_cfg.category_column:
    need.append(data_cfg.category_column)
  missing = [c for c in need if c not in ds.column_names]
  if missing:
    raise ValueError(f"column(s) {missing} not found in {path!r}; available columns: {ds.column_names} "
                     "(set data.prompt_column / data.response_column, or data.messages_column, and "
                     "data.category_column)")
  if len(ds) == 0:
    raise ValueError(f"dataset from {path!r} is empty (0 examples)")
  return ds


def render_messages(messages: Sequence[dict], tokenizer) -> tuple[str, str]:
  """(prompt text, response text) of a conversation whose last turn is the response."""
  if not isinstance(messages, (list, tuple)) or len(messages) < 2:
    raise ValueError(f"a messages entry must be a list of >= 2 turns, got {messages!r:.200}")
  for m in messages:
    if not isinstance(m, dict) or "role" not in m or "content" not in m:
      raise ValueError(f"a message must be a dict with 'role' and 'content', got {m!r:.200}")
  *context, last = messages
  if getattr(tokenizer, "chat_template", None):
    full = tokenizer.apply_chat_template(list(messages), tokenize=False)
    prompt = tokenizer.apply_chat_template(list(context), tokenize=False, add_generation_prompt=True)
    if not full.startswith(prompt):
      raise ValueError("the chat template does not render the conversation as its prompt followed by the "
                       f"last turn (prompt {prompt[-80:]!r}, full {full[-120:]!r})")
    return prompt, full[len(prompt):]
  prompt = "".join(f"{m['role']}: {m['content']}\n" for m in context) + f"{last['role']}: "
  return prompt, str(last["content"])


def texts_from_dataset(ds, data_cfg, tokenizer) -> tuple[list[str], list[str], bool]:
  """(prompts, responses, templated): templated prompts already hold the special tokens."""
  if data_cfg.messages_column:
    pairs = [render_messages(m, tokenizer) for m in ds[data_cfg.messages_column]]
    templated = bool(getattr(tokenizer, "chat_template", None))
    return [p for p, _ in pairs], [r for _, r in pairs], templated
  def as_text(v):  # CSV readers turn numeric answers into ints: keep them as their text
    return str(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
  prompts = [as_text(v) for v in ds[data_cfg.prompt_column]]
  responses = [as_text(v) for v in ds[data_cfg.response_column]]
  bad = [i for i, (p, r) in enumerate(zip(prompts, responses)) if not isinstance(p, str) or not isinstance(r, str)]
  if bad:
    raise ValueError(f"{len(bad)} rows have a non-string/missing prompt or response (first: row {bad[0]})")
  return prompts, responses, False


def tokenize_examples(prompts, responses, tokenizer, max_length: int, eos_id: int,
                      templated: bool = False) -> tuple[list[Example], dict]:
  """Token ids per example, truncated to `max_length` as the module doc says; and the counts."""
  out, cut_p, cut_r = tokenize_examples_flags(prompts, responses, tokenizer, max_length, eos_id, templated)
  return out, {"truncated_prompts": int(cut_p.sum()), "truncated_responses": int(cut_r.sum())}


def tokenize_examples_flags(prompts, responses, tokenizer, max_length: int, eos_id: int,
                            templated: bool = False) -> tuple[list[Example], np.ndarray, np.ndarray]:
  """`tokenize_examples` with per-example flags instead of counts: (examples, prompt cut `[n]` bool,
  response cut `[n]` bool)."""
  if max_length < 2:
    raise ValueError(f"max_length={max_length} must be >= 2 (a prompt token and a response token)")
  p_ids = tokenizer(list(prompts), add_special_tokens=not templated)["input_ids"]
  r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
  out = []
  cut_p, cut_r = np.zeros((len(p_ids),), bool), np.zeros((len(p_ids),), bool)
  for i, (p, r) in enumerate(zip(p_ids, r_ids)):
    p, r = list(p), list(r) + [eos_id]
    if len(r) > max_length - 1:
      r, cut_r[i] = r[:max_length - 1], True
    if len(p) + len(r) > max_length:
      p, cut_p[i] = p[len(p) + len(r) - max_length:], True
    out.append(Example(p, r))
  return out, cut_p, cut_r


def pad_rows(examples: Sequence[Example], max_length: int, pad_id: int) -> dict[str, np.ndarray]:
  """One right-padded row per example: arrays `[n, L]` (see the module doc)."""
  n = len(examples)
  ids = np.full((n, max_length), pad_id, np.int32)
  seg, lm, pos = (np.zeros((n, max_length), np.int32) for _ in range(3))
  for i, (p, r) in enumerate(examples):
    t = len(p) + len(r)
    ids[i, :t] = p + r
    seg[i, :t] = 1
    lm[i, len(p):t] = 1
    pos[i, :t] = np.arange(t)
  return {"input_ids": ids, "attention_mask": seg, "loss_mask": lm, "position_ids": pos}


def pack_rows(examples: Sequence[Example], max_length: int, pad_id: int) -> dict[str, np.ndarray]:
  """Examples packed greedily, in order, into rows of `max_length` (never split): `[rows, L]`."""
  rows: list[list[Example]] = []
  used = max_length + 1
  for ex in examples:
    t = len(ex.prompt) + len(ex.response)
    if t > max_length:
      raise ValueError(f"an example has {t} tokens > max_length={max_length} (truncate first)")
    if used + t > max_length:
      rows.append([])
      used = 0
    rows[-1].append(ex)
    used += t
  n = len(rows)
  ids = np.full((n, max_length), pad_id, np.int32)
  seg, lm, pos = (np.zeros((n, max_length), np.int32) for _ in range(3))
  for i, row in enumerate(rows):
    o = 0
    for s, (p, r) in enumerate(row, start=1):
      t = len(p) + len(r)
      ids[i, o:o + t] = p + r
      seg[i, o:o + t] = s
      lm[i, o + len(p):o + t] = 1
      pos[i, o:o + t] = np.arange(t)
      o += t
  return {"input_ids": ids, "attention_mask": seg, "loss_mask": lm, "position_ids": pos}


def generation_arrays(examples: Sequence[Example], max_length: int, pad_id: int, eos_id: int,
                      max_new_tokens: int) -> dict[str, np.ndarray]:
  """Left-padded prompts `prompt_ids/prompt_mask [n, L]` and the reference answers
  `answer_ids [n, max_new_tokens]` (the response without EOS, padded with -1), with
  `answer_fits [n]` = 1 where the whole answer + EOS fits in `max_new_tokens` (exact match is
  scored on those only)."""
  n = len(examples)
  pid = np.full((n, max_length), pad_id, np.int32)
  pm = np.zeros((n, max_length), np.int32)
  ans = np.full((n, max(max_new_tokens, 1)), -1, np.int32)
  fits = np.zeros((n,), np.int32)
  for i, (p, r) in enumerate(examples):
    pid[i, max_length - len(p):] = p
    pm[i, max_length - len(p):] = 1
    body = r[:-1] if r and r[-1] == eos_id else r
    if len(body) + 1 <= max_new_tokens and r and r[-1] == eos_id:
      fits[i] = 1
      ans[i, :len(body)] = body
  return {"prompt_ids": pid, "prompt_mask": pm, "answer_ids": ans, "answer_fits": fits}


class InstructData(NamedTuple):
  clients: Any          # ClientData: input_ids, attention_mask, loss_mask, position_ids [C, n_max, L]
  test: dict            # padded held-out rows [n, L] (+ prompt_ids/prompt_mask/answer_ids/answer_fits)
  parts: list           # per-client example indices into the training split
  categories: list      # category names (['all'] without a category column)
  histogram: np.ndarray  # [C, categories] examples per client and category
  stats: dict           # counts: examples, rows, truncations, tokens


def prepare_instruct_data(data_cfg, tokenizer, *, pad_id: int, eos_id: int,
                          max_new_tokens: int = 0, hosted=None) -> InstructData:
  """Load -> (subset) -> split -> tokenise -> partition -> pad/pack per client -> stack.

  `hosted` (`[H]` client ids, multi-process runs): split and partition use the categories only (the
  same on every process); only the held-out split and the hosted clients' training examples are
  tokenised, and `clients` holds the hosted clients (arrays `[H, n_h, ...]`, rows padded to the
  largest HOSTED client: packed row counts are only known after tokenising, the trainer pads to the
  global largest). `stats` then counts the held-out split (+ the global example counts) and
  `stats['per_client']` holds the hosted clients' own counts `{key: [H]}` (truncations, rows,
  response tokens), which the trainer sums over all clients of all processes."""
  from fedlora.data.clients import stack_client_rows
  from fedlora.data.partition import describe
  from fedlora.data.split import split_indices

  ds = load_instruct_dataset(data_cfg)
  if data_cfg.category_column:
    raw = [str(c) for c in ds[data_cfg.category_column]]
    names = sorted(set(raw))
    cats = np.asarray([names.index(c) for c in raw], np.int64)
  else:
    names, cats = ["all"], np.zeros((len(ds),), np.int64)
  if data_cfg.partition == "dirichlet" and not data_cfg.category_column:
    raise ValueError("config.data.partition='dirichlet' needs data.category_column (the Dirichlet is over "
                     "categories); use 'quantity' or 'iid' for data without one")
  keep = np.arange(len(ds))
  if data_cfg.max_examples and data_cfg.max_examples < len(ds):
    _, keep = split_indices(cats, data_cfg.max_examples / len(ds), data_cfg.split_seed)
    keep = np.sort(keep)
  prompts, responses, templated = texts_from_dataset(ds, data_cfg, tokenizer)
  if hosted is not None:
    return _prepare_hosted(data_cfg, tokenizer, prompts, responses, templated, keep, cats[keep], names,
                           pad_id=pad_id, eos_id=eos_id, max_new_tokens=max_new_tokens, hosted=hosted)
  examples, stats = tokenize_examples([prompts[i] for i in keep], [responses[i] for i in keep], tokenizer,
                                      data_cfg.max_length, eos_id, templated)
  cats = cats[keep]
  train_idx, test_idx, parts = _split_and_partition(data_cfg, cats)
  rows = pack_rows if data_cfg.packing else pad_rows
  per_client = [rows([examples[train_idx[j]] for j in p], data_cfg.max_length, pad_id) for p in parts]
  clients = stack_client_rows(per_client)
  test_ex = [examples[i] for i in test_idx]
  test = pad_rows(test_ex, data_cfg.max_length, pad_id)
  if max_new_tokens:
    test.update(generation_arrays(test_ex, data_cfg.max_length, pad_id, eos_id, max_new_tokens))
  stats.update(examples=len(examples), train_examples=int(len(train_idx)), test_examples=int(len(test_idx)),
               train_rows=int(clients.num_examples.sum()),
               response_tokens=int(sum(int(a["loss_mask"].sum()) for a in per_client)))
  return InstructData(clients, test, parts, names, describe(parts, cats[train_idx], len(names)), stats)


def _split_and_partition(data_cfg, cats: np.ndarray):
  """(train_idx, test_idx, parts) from the category ids alone."""
  from fedlora.data.partition import partition_from_config
  from fedlora.data.split import split_indices
  train_idx, test_idx = split_indices(cats, data_cfg.test_fraction, data_cfg.split_seed)
  parts = partition_from_config(cats[train_idx], data_cfg)
  return train_idx, test_idx, parts


def _prepare_hosted(data_cfg, tokenizer, prompts, responses, templated, keep, cats, names, *, pad_id,
                    eos_id, max_new_tokens, hosted) -> InstructData:
  """`prepare_instruct_data` for the hosted clients only (see its docstring)."""
  from fedlora.data.clients import hosted_examples, stack_client_rows
  from fedlora.data.partition import describe
  train_idx, test_idx, parts = _split_and_partition(data_cfg, cats)
  need, local = hosted_examples(parts, hosted)         # indices into train_idx
  src = keep[train_idx[need]]
  train_ex, cut_p, cut_r = tokenize_examples_flags([prompts[i] for i in src], [responses[i] for i in src],
                                                   tokenizer, data_cfg.max_length, eos_id, templated)
  rows = pack_rows if data_cfg.packing else pad_rows
  per_client = [rows([train_ex[j] for j in lp], data_cfg.max_length, pad_id) for lp in local]
  clients = stack_client_rows(per_client)
  src = keep[test_idx]
  test_ex, stats = tokenize_examples([prompts[i] for i in src], [responses[i] for i in src], tokenizer,
                                     data_cfg.max_length, eos_id, templated)
  test = pad_rows(test_ex, data_cfg.max_length, pad_id)
  if max_new_tokens:
    test.update(generation_arrays(test_ex, data_cfg.max_length, pad_id, eos_id, max_new_tokens))
  stats.update(examples=int(len(keep)), train_examples=int(len(train_idx)),
               test_examples=int(len(test_idx)), train_rows=0, response_tokens=0)
  stats["per_client"] = {
      "truncated_prompts": np.array([int(cut_p[lp].sum()) for lp in local], np.int64),
      "truncated_responses": np.array([int(cut_r[lp].sum()) for lp in local], np.int64),
      "train_rows": np.asarray(clients.num_examples, np.int64),
      "response_tokens": np.array([int(a["loss_mask"].sum()) for a in per_client], np.int64)}
  stats["hosted_examples"] = int(need.size)
  return InstructData(clients, test, parts, names, describe(parts, cats[train_idx], len(names)), stats)

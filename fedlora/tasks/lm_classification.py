"""'lm_classification': classification as generation with a causal LM (lm-evaluation-harness style).

Any labelled file a classification run reads (`data.source`, `data.text_column`, `data.label_column`)
becomes a causal-LM task: each example is a prompt (the text through `task.prompt_template`, or the
tokenizer's chat template) followed by its label word (`task.label_words`, default: the label
strings). The loss is the cross-entropy of the label word's tokens only; accuracy is the argmax over
the classes of each label word's log-likelihood given the prompt (every class scored, teacher
forced), and balanced accuracy, macro-F1 and the per-client metrics follow as for the encoder. The
LM head is computed only at the positions that predict a label token (`[B, W]` of `[B, L]`), never
for every position: vocabularies are 49k-262k.

Rows (`data.max_length` = L tokens): the prompt, cut from the left when prompt + label word exceed
L (counted: `data_stats.truncated_prompts`), then the label word's tokens, then padding. Clients are
made by any partition over the class labels, or by `data.partition='column'` over
`data.category_column` (e.g. the domain).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from fedlora.section import Section
from fedlora.tasks.base import TASKS, Task, TaskData, nothing_after_training
from fedlora.tasks.classification import summarize
from fedlora.tasks.skew_metrics import confusion_counts, skew_metrics

BATCH = {"input_ids": "[B, L] int32", "attention_mask": "[B, L] int32 (1 = token, 0 = pad)",
         "position_ids": "[B, L] int32", "target_pos": "[B, W] int32 positions whose logits predict",
         "target_ids": "[B, W] int32 label-word tokens", "target_w": "[B, W] float32 (1 = real token)",
         "labels": "[B] int32"}
RAW_TEMPLATE = "{text}\nAnswer:"  # without a chat template: the label word follows after a space


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'lm_classification' (section `task`).

  prompt_template: the prompt of an example, with `{text}` (and optionally `{labels}`, the label
                   words joined by ', '); '' = the tokenizer's chat template (a user turn asking for
                   one of the label words), or "{text}\\nAnswer:" when it has none
  label_words:     the word each class is answered with, in the order of the sorted label strings
                   (() = the label strings themselves)
  """
  SECTION = "task"
  prompt_template: str = ""
  label_words: tuple = ()

  def check(self) -> None:
    self.need(isinstance(self.prompt_template, str) and (
        not self.prompt_template or "{text}" in self.prompt_template), "prompt_template",
        "'' or a string holding {text}")
    self.need(isinstance(self.label_words, tuple) and all(isinstance(w, str) and w.strip()
                                                          for w in self.label_words),
              "label_words", "a tuple of non-empty strings (() = the label strings)")


def render(text: str, words: list, template: str, tokenizer) -> tuple[str, str]:
  """(prompt, label-word prefix): the chat template when `template` is '' and the tokenizer has
  one (the answer then follows directly), else the raw template (the answer after a space)."""
  if not template and getattr(tokenizer, "chat_template", None):
    ask = f"{text}\n\nAnswer with one of: {', '.join(words)}."
    return tokenizer.apply_chat_template([{"role": "user", "content": ask}], tokenize=False,
                                         add_generation_prompt=True), ""
  return (template or RAW_TEMPLATE).format(text=text, labels=", ".join(words)), " "


def encode(texts, labels, words, template, tokenizer, max_length: int):
  """Prompt + label-word rows of every example for every class. Returns (arrays with a class axis
  `[n, C, L]` / `[n, C, W]`, number of prompts cut from the left)."""
  chat = not template and bool(getattr(tokenizer, "chat_template", None))
  word_ids = []
  for w in words:
    ids = tokenizer(("" if chat else " ") + w, add_special_tokens=False)["input_ids"]
    if not ids:
      raise ValueError(f"task.label_words entry {w!r} tokenises to nothing")
    word_ids.append(ids)
  width = max(len(i) for i in word_ids)
  if width >= max_length:
    raise ValueError(f"data.max_length={max_length} leaves no room for a prompt before a label word "
                     f"of {width} tokens")
  n, c = len(texts), len(words)
  out = {k: np.zeros((n, c, max_length), np.int32) for k in ("input_ids", "attention_mask", "position_ids")}
  out.update(target_pos=np.zeros((n, c, width), np.int32), target_ids=np.zeros((n, c, width), np.int32),
             target_w=np.zeros((n, c, width), np.float32))
  cut = 0
  for i, text in enumerate(texts):
    prompt, _ = render(text, words, template, tokenizer)
    p = tokenizer(prompt, add_special_tokens=not chat)["input_ids"]  # a chat template holds its own
    for k, wi in enumerate(word_ids):
      room = max_length - len(wi)
      pk = p[-room:] if len(p) > room else p
      cut += int(k == 0 and len(p) > room)
      row = pk + wi
      out["input_ids"][i, k, :len(row)] = row
      out["attention_mask"][i, k, :len(row)] = 1
      out["position_ids"][i, k, :len(row)] = np.arange(len(row))
      start = len(pk)  # the logits at position t predict token t + 1
      out["target_pos"][i, k, :len(wi)] = np.arange(start - 1, start - 1 + len(wi))
      out["target_ids"][i, k, :len(wi)] = wi
      out["target_w"][i, k, :len(wi)] = 1.0
  out["labels"] = np.asarray(labels, np.int32)
  return out, cut


def gold(arrays: dict) -> dict:
  """The rows of each example's own class: `[n, ...]` from the `[n, C, ...]` arrays."""
  lab = arrays["labels"]
  return {k: (v[np.arange(lab.shape[0]), lab] if v.ndim >= 2 and k != "labels" else v)
          for k, v in arrays.items()}


def prepare_data(config, tokenizer, hf_config, hosted=None):
  """Labelled rows -> stratified split -> prompt + label-word rows -> clients."""
  from fedlora.data.clients import stack_clients, warn_missing_classes
  from fedlora.data.partition import describe, partition_from_config
  from fedlora.data.sources import load_dataset_with_report
  from fedlora.data.split import split_indices
  if hosted is not None:
    raise ValueError("task 'lm_classification' runs in one process (mesh.num_processes=1)")
  d, opts = config.data, config.task.options("lm_classification")
  ds, dropped = load_dataset_with_report(d)
  names = list(ds.features["label"].names)
  words = list(opts.label_words) or names
  if len(words) != len(names):
    raise ValueError(f"config.task.label_words={tuple(opts.label_words)!r} has {len(words)} words but "
                     f"the data has {len(names)} classes {names}: one word per class, in that order")
  labels = np.asarray(ds["label"], np.int64)
  keep = np.arange(len(ds))
  if d.max_examples and d.max_examples < len(ds):
    keep = np.sort(split_indices(labels, d.max_examples / len(ds), d.split_seed)[1])
  train_idx, test_idx = split_indices(labels[keep], d.test_fraction, d.split_seed)
  train_idx, test_idx = keep[train_idx], keep[test_idx]
  warn_missing_classes(names, labels[train_idx], labels[test_idx])
  groups = np.asarray(ds["category"])[train_idx] if "category" in ds.column_names else None
  parts = partition_from_config(labels[train_idx].astype(np.int32), d, groups=groups)
  texts = ds["text"]
  enc = lambda idx: encode([texts[i] for i in idx], labels[idx], words, opts.prompt_template,  # noqa: E731
                           tokenizer, d.max_length)
  train, cut_train = enc(train_idx)
  test, cut_test = enc(test_idx)
  clients = stack_clients(gold(train), parts)
  stats = {"examples": int(len(keep)), "truncated_prompts": cut_train + cut_test,
           "label_word_tokens": [int(w) for w in test["target_w"][0].sum(-1)] if len(test_idx) else []}
  return TaskData(clients, test, {"label_names": names, "label_words": words, "parts": parts,
                                  "histogram": describe(parts, labels[train_idx], len(names)),
                                  "data_dropped": dropped, "stats": stats})


def label_logprobs(parts, trainable, frozen, batch, key=None):
  """`[B, W]` log-probabilities of the label-word tokens (the head only at `target_pos`)."""
  logits = parts.module(trainable, frozen)(batch["input_ids"], batch["attention_mask"],
                                           position_ids=batch["position_ids"], key=key,
                                           positions=batch["target_pos"]).astype(jnp.float32)
  lp = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(lp, batch["target_ids"][..., None], -1)[..., 0], logits


def make_loss(parts, penalty=None, penalty_weight: float = 0.0):
  """`loss_fn(trainable, frozen, batch, key) -> (loss, {'ce', 'acc'})`: the mean CE of the label
  word's tokens; 'acc' = the share of examples whose label word is every token's argmax."""
  def loss_fn(trainable, frozen, batch, key):
    lp, logits = label_logprobs(parts, trainable, frozen, batch, key)
    w = batch["target_w"]
    ce = -(lp * w).sum() / jnp.maximum(w.sum(), 1.0)
    hit = (logits.argmax(-1) == batch["target_ids"]) | (w == 0)
    loss = ce if penalty is None or penalty_weight <= 0 else ce + penalty_weight * penalty(trainable)
    return loss, {"ce": ce, "acc": hit.all(-1).mean()}
  return loss_fn


def shared_prompt(test: dict) -> bool:
  """True when every example's class rows are one row but for the label word's last token: the
  words have one length W and share their first W - 1 tokens (e.g. every word one token). One
  forward pass per example then scores every class exactly (`make_eval`), instead of C."""
  w, ids, pos = test["target_w"], test["target_ids"], test["target_pos"]
  if not w.size or not (w == 1).all():
    return False  # words of different lengths (padded targets)
  n, c, width = ids.shape
  inp = test["input_ids"].copy()
  inp[np.arange(n)[:, None], np.arange(c)[None, :], pos[:, :, -1] + 1] = 0  # the last word token
  same = lambda x: bool((x == x[:, :1]).all())  # noqa: E731
  return (same(inp) and same(ids[:, :, :-1]) and same(pos) and same(test["attention_mask"])
          and same(test["position_ids"]))


def make_eval(parts, config, data, tokenizer):
  """`evaluate(trainable, frozen, test) -> {'accuracy', 'loss', skew metrics}`: every class's label
  word scored for every test example (`[n, C, ...]` rows, batched by eval.batch_size examples).
  When the classes' rows differ only in the label word's last token (`shared_prompt`: e.g. every
  label word one token), one row per example is run and the last position's log-softmax is read
  at every class's token: the same scores at 1/C of the cost."""
  bs, names, hist = config.eval.batch_size, data.info["label_names"], data.info.get("histogram")
  c = len(names)
  fast = shared_prompt(data.test) if data.test["labels"].shape[0] else False

  def one_class_per_row(trainable, frozen, b):  # [b, C, ...] rows -> [b, C] log-likelihoods
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in b.items()}
    lp, _ = label_logprobs(parts, trainable, frozen, flat)
    return (lp * flat["target_w"]).sum(-1).reshape(b["target_w"].shape[:2])

  def one_row_all_classes(trainable, frozen, b):  # class 0's row: the prompt is every class's
    row = {k: v[:, 0] for k, v in b.items()}
    logits = parts.module(trainable, frozen)(row["input_ids"], row["attention_mask"],
                                             position_ids=row["position_ids"],
                                             positions=row["target_pos"]).astype(jnp.float32)
    lp = jax.nn.log_softmax(logits, axis=-1)  # [b, W, V]
    shared = jnp.take_along_axis(lp[:, :-1], row["target_ids"][:, :-1, None], -1)[..., 0].sum(-1)
    last = jnp.take_along_axis(lp[:, -1], b["target_ids"][:, :, -1], -1)  # [b, C]
    return shared[:, None] + last

  @jax.jit
  def scores(trainable, frozen, batches):
    def one(_, b):
      ll = (one_row_all_classes if fast else one_class_per_row)(trainable, frozen, b)
      return None, (ll, b["target_w"].sum(-1))
    _, (ll, n_tok) = jax.lax.scan(one, None, batches)
    return ll.reshape((-1, c)), n_tok.reshape((-1, c))

  def evaluate(trainable, frozen, test):
    n = test["labels"].shape[0]
    nb = -(-n // bs)
    pad = nb * bs - n
    keys = [k for k in test if k != "labels"]
    batches = {k: np.concatenate([test[k], np.zeros((pad,) + test[k].shape[1:], test[k].dtype)])
               .reshape((nb, bs) + test[k].shape[1:]) for k in keys}
    ll, n_tok = (np.asarray(x)[:n] for x in scores(trainable, frozen, batches))
    y = test["labels"]
    pred = ll.argmax(-1)
    out = {"accuracy": float((pred == y).mean()),
           "loss": float(-ll[np.arange(n), y].sum() / max(n_tok[np.arange(n), y].sum(), 1.0))}
    conf = np.asarray(confusion_counts(jnp.asarray(y), jnp.asarray(pred), jnp.ones(n), c))
    if hist is not None:
      out.update(skew_metrics(conf, hist))
    return out
  return evaluate


def validate_config(c) -> None:
  """Reads labelled rows like classification; nothing else to refuse before the data is read."""


TASKS.register("lm_classification", options=Options)(Task(
    name="lm_classification", head="causal_lm", batch=BATCH, validate=validate_config,
    prepare_data=prepare_data, model_kwargs=lambda config, data: {},
    make_loss=lambda parts, config, penalty, weight: make_loss(parts, penalty, weight),
    make_eval=make_eval, headline="accuracy", after_training=nothing_after_training,
    summarize=summarize))

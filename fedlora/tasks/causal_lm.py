"""Causal-LM instruction tuning: next-token loss on the response tokens only, held-out loss /
perplexity, exact match of greedy generations, and a few printed samples after training.

Batch (leaves `[B, L]` int32, from `fedlora.data.instruct`): `input_ids`; `attention_mask` (segment
ids, 0 = pad; packed rows hold several segments); `loss_mask` (1 on response tokens); `position_ids`.
Token t predicts token t+1; the prediction counts when token t+1 is a response token of the same
segment, so the prompt (and padding, and the boundary between packed examples) is never learned.
The loss is the mean cross-entropy over the counted tokens of the batch.

Config (`configs/lm_instruct.py`): `data.prompt_column`/`response_column` or `messages_column`,
`data.category_column`, `data.packing`; `eval.max_new_tokens` (0 = no exact match),
`eval.print_samples`, `eval.temperature`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedlora.lora.split import ModelParts
from fedlora.tasks.base import TASKS, Task, TaskData, headline_summary

BATCH = {"input_ids": "[B, L] int32", "attention_mask": "[B, L] int32 segment ids (0 = pad)",
         "loss_mask": "[B, L] int32 (1 = response token)", "position_ids": "[B, L] int32"}


def response_token_ce(logits, batch):
  """Per-position CE of predicting token t+1 and its weight: `(ce, w, correct)`, each `[B, L-1]`."""
  ids, seg = batch["input_ids"], batch["attention_mask"]
  w = (batch["loss_mask"][:, 1:] > 0) & (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
  lg = logits[:, :-1].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(lg, ids[:, 1:])
  correct = lg.argmax(-1) == ids[:, 1:]
  return ce, w.astype(jnp.float32), correct.astype(jnp.float32)


def forward(parts: ModelParts, trainable, frozen, batch, key=None):
  return parts.module(trainable, frozen)(batch["input_ids"], batch["attention_mask"],
                                         position_ids=batch["position_ids"], key=key)


def make_loss(parts: ModelParts, penalty: Callable | None = None, penalty_weight: float = 0.0):
  """`loss_fn(trainable, frozen, batch, key) -> (loss, {'ce', 'acc', 'tokens'})`; 'acc' is next-token
  accuracy on the response tokens."""
  def loss_fn(trainable, frozen, batch, key):
    ce, w, correct = response_token_ce(forward(parts, trainable, frozen, batch, key), batch)
    n = jnp.maximum(w.sum(), 1.0)
    mean_ce = (ce * w).sum() / n
    loss = mean_ce
    if penalty is not None and penalty_weight > 0:
      loss = loss + penalty_weight * penalty(trainable)
    return loss, {"ce": mean_ce, "acc": (correct * w).sum() / n, "tokens": w.sum()}
  return loss_fn


def _batched(arrays: dict, keys, batch_size: int):
  """Host-side: the arrays padded with zero rows to a multiple of batch_size, `[nb, bs, ...]`."""
  n = arrays[keys[0]].shape[0]
  nb = -(-n // batch_size)
  pad = nb * batch_size - n

  def prep(x):
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    return x.reshape((nb, batch_size) + x.shape[1:])
  return {k: prep(arrays[k]) for k in keys}, n


def make_eval(parts: ModelParts, batch_size: int, *, max_new_tokens: int = 0, eos_id: int | None = None,
              pad_id: int = 0):
  """`evaluate(trainable, frozen, test) -> {'loss', 'perplexity'[, 'exact_match', 'exact_match_n']}`.

  loss: mean CE over every held-out response token (padding rows weigh 0), perplexity = exp(loss).
  exact_match: fraction of held-out examples whose greedy generation (KV cache, up to
  `max_new_tokens`) is exactly the reference answer followed by EOS, over the examples whose answer
  fits (`answer_fits`; their count is `exact_match_n`).
  """
  from fedlora.models.generate import make_generate

  @jax.jit
  def _loss(trainable, frozen, batches):
    def one(_, b):
      ce, w, _ = response_token_ce(forward(parts, trainable, frozen, b), b)
      return None, ((ce * w).sum(), w.sum())
    _, (s, n) = jax.lax.scan(one, None, batches)
    return s.sum(), n.sum()

  gen = (make_generate(parts.module, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id)
         if max_new_tokens else None)

  def evaluate(trainable, frozen, test):
    batches, _ = _batched(test, list(BATCH), batch_size)
    s, n = _loss(trainable, frozen, batches)
    loss = float(s) / max(float(n), 1.0)
    out = {"loss": loss, "perplexity": float(np.exp(min(loss, 80.0)))}
    if gen is not None:
      fits = test["answer_fits"].astype(bool)
      sub = {k: test[k][fits] for k in ("prompt_ids", "prompt_mask", "answer_ids")}
      hits = 0
      if fits.any():
        b, n_ex = _batched(sub, ["prompt_ids", "prompt_mask"], batch_size)
        toks = np.concatenate([np.asarray(gen(trainable, frozen, b["prompt_ids"][i], b["prompt_mask"][i],
                                              jax.random.PRNGKey(0)))
                               for i in range(b["prompt_ids"].shape[0])])[:n_ex]
        hits = int(exact_matches(toks, sub["answer_ids"], eos_id).sum())
      out["exact_match"] = hits / max(int(fits.sum()), 1)
      out["exact_match_n"] = int(fits.sum())
    return out
  return evaluate


def exact_matches(generated: np.ndarray, answers: np.ndarray, eos_id: int) -> np.ndarray:
  """`[n]` bool: generated `[n, T]` equals answer (`[n, T']`, -1 padded) followed by EOS."""
  out = np.zeros((generated.shape[0],), bool)
  for i, (g, a) in enumerate(zip(generated, answers)):
    a = a[a >= 0]
    out[i] = len(g) > len(a) and np.array_equal(g[:len(a)], a) and g[len(a)] == eos_id
  return out


# ---- the task declaration (see fedlora.tasks.base) -----------------------------------------------------

def special_ids(config, tokenizer, hf_config: dict) -> tuple[int, int]:
  """(pad_id, eos_id) from the model family's pad-token rule and the tokenizer / config.json."""
  from fedlora.models.families import family_for
  eos = getattr(tokenizer, "eos_token_id", None)
  if eos is None:
    eos = hf_config.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) and eos else eos
  if not isinstance(eos, int):
    raise ValueError(f"the tokenizer of {config.model.path!r} has no EOS token and config.json no "
                     "eos_token_id: a response needs an end marker")
  return family_for(hf_config.get("model_type")).pad_token_id(hf_config, tokenizer), eos


def validate_config(c) -> None:
  """Instruction data is read from a user's file with prompt/response (or messages) columns; the
  label-skew partitions need a category column; printed samples need generation."""
  from fedlora.data.instruct import files_sources
  from fedlora.data.partitions import PARTITIONS
  from fedlora.section import ConfigError

  def check(ok, key, value, allowed):
    if not ok:
      raise ConfigError(f"config.{key}={value!r} is not allowed: {allowed}")
  d = c.data
  check(d.source in files_sources(), "data.source", d.source,
        f"one of {files_sources()} for task causal_lm")
  if not d.messages_column:
    check(bool(d.prompt_column) and bool(d.response_column), "data.prompt_column", d.prompt_column,
          "prompt_column and response_column must both be set unless data.messages_column is")
  label_skew = PARTITIONS.get(d.partition).options is not None and "dirichlet" in d.partition
  check(not label_skew or bool(d.category_column), "data.partition", d.partition,
        f"{d.partition!r} needs data.category_column; use 'quantity' or 'iid'")
  check(not c.eval.print_samples or c.eval.max_new_tokens > 0, "eval.print_samples",
        c.eval.print_samples, "0 when eval.max_new_tokens=0 (samples are generated)")


def prepare_data(config, tokenizer, hf_config, hosted=None):
  """Instruction data -> clients (`hosted`: only those clients' examples, see fedlora.tasks.base;
  their own counts go to `info['client_stats']` `{key: [H]}`, summed over clients by the trainer)."""
  from fedlora.data.instruct import prepare_instruct_data
  pad_id, eos_id = special_ids(config, tokenizer, hf_config)
  d = prepare_instruct_data(config.data, tokenizer, pad_id=pad_id, eos_id=eos_id,
                            max_new_tokens=config.eval.max_new_tokens, hosted=hosted)
  stats = dict(d.stats)
  hosted_info = {} if hosted is None else {"client_stats": stats.pop("per_client"),
                                           "hosted_examples": stats.pop("hosted_examples")}
  return TaskData(d.clients, d.test, {"label_names": d.categories, "histogram": d.histogram,
                                      "parts": d.parts, "stats": stats, "pad_id": pad_id, "eos_id": eos_id,
                                      **hosted_info})


def print_samples(parts, config, data, tok, trainable) -> None:
  """Prints `eval.print_samples` held-out prompts with the model's generation and the reference."""
  from fedlora.models.generate import make_generate
  n = config.eval.print_samples
  if not n or tok is None:
    return
  info, test, ev = data.info, data.test, config.eval
  max_new = ev.max_new_tokens
  gen = make_generate(parts.module, max_new_tokens=max_new, temperature=float(ev.temperature),
                      eos_id=info["eos_id"], pad_id=info["pad_id"])
  k = min(n, test["prompt_ids"].shape[0])
  toks = np.asarray(gen(trainable, parts.frozen, test["prompt_ids"][:k], test["prompt_mask"][:k],
                        jax.random.PRNGKey(config.seed)))
  if jax.process_index() != 0:  # multi-process: every process generates (collective), process 0 prints
    return
  for i in range(k):
    p = test["prompt_ids"][i][test["prompt_mask"][i] > 0]
    g = toks[i]
    g = g[: int(np.argmax(g == info["eos_id"]))] if (g == info["eos_id"]).any() else g
    ref = test["answer_ids"][i][test["answer_ids"][i] >= 0]
    print(f"--- sample {i}\nprompt:    {tok.decode(p, skip_special_tokens=True)!r}\n"
          f"generated: {tok.decode(g, skip_special_tokens=True)!r}\n"
          f"reference: {tok.decode(ref, skip_special_tokens=True)!r}")


TASKS.register("causal_lm")(Task(
    name="causal_lm", head="causal_lm", batch=BATCH, validate=validate_config, prepare_data=prepare_data,
    model_kwargs=lambda config, data: {},
    make_loss=lambda parts, config, penalty, weight: make_loss(parts, penalty, weight),
    make_eval=lambda parts, config, data, tokenizer: make_eval(
        parts, config.eval.batch_size, max_new_tokens=config.eval.max_new_tokens,
        eos_id=data.info["eos_id"], pad_id=data.info["pad_id"]),
    headline="loss", after_training=print_samples, summarize=headline_summary("loss")))

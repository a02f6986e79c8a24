"""BERT-family encoder (BERT, RoBERTa, MiniLM) with a sequence-classification head, in Flax NNX.

Module layout (the '/'-joined paths LoRA targets match, `re.search`):

  embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding, embeddings/layer_norm
  encoder/layers/<i>/attention/{query,key,value,output}       Linear (H -> H)
  encoder/layers/<i>/attention_norm                           LayerNorm (post-LN)
  encoder/layers/<i>/mlp/{intermediate,output}                Linear (H -> I, I -> H)
  encoder/layers/<i>/mlp_norm                                 LayerNorm
  pooler/dense                                                Linear (H -> H), only with pooling='cls'
  classifier                                                  Linear (H -> num_labels), the task head

Pure forward, float32, deterministic unless a `key` is given: the key drives LoRA dropout in every
`Linear` and the optional hidden dropout (`hidden_dropout`, default 0), folded per layer and site.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import nnx

from fedlora.models.config import POOLINGS, ModelConfig
from fedlora.models.families import FAMILIES
from fedlora.models.layers import (Embed, LayerNorm, Linear, activation, dot_product_attention, dropout,
                                   run_blocks, site_key)


# fold_in indices of the sub-keys of a forward key
_K_EMB, _K_ENC, _K_POOL, _K_HEAD = 0, 1, 2, 3
# per-layer sites
_S_Q, _S_K, _S_V, _S_O, _S_ATT_DROP, _S_INTER, _S_OUT, _S_MLP_DROP = range(8)


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The fields of a Hugging Face BERT/RoBERTa `config.json` this implementation uses."""
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  pad_token_id: int = 0
  model_type: str = "bert"

  @property
  def roberta_positions(self) -> bool:
    """RoBERTa numbers positions from `pad_token_id + 1`, skipping padding tokens."""
    return self.model_type == "roberta"

  @classmethod
  def from_dict(cls, cfg: dict[str, Any]) -> "BertConfig":
    pet = cfg.get("position_embedding_type", "absolute")
    if pet not in (None, "absolute"):
      raise ValueError(f"position_embedding_type={pet!r} is not supported; allowed: ['absolute']")
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in cfg.items() if k in fields and v is not None}
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in kw]
    if missing:
      raise ValueError(f"config.json lacks required BERT fields {missing}")
    c = cls(**kw)
    if c.hidden_size % c.num_attention_heads:
      raise ValueError(f"hidden_size={c.hidden_size} is not divisible by "
                       f"num_attention_heads={c.num_attention_heads}")
    activation(c.hidden_act)  # validates the name
    return c


class BertEmbeddings(nnx.Module):
  """Word + position + token-type embeddings, then LayerNorm (and hidden dropout)."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    h = cfg.hidden_size
    self.word_embeddings = Embed(cfg.vocab_size, h, rngs=rngs)
    self.position_embeddings = Embed(cfg.max_position_embeddings, h, rngs=rngs)
    self.token_type_embeddings = Embed(cfg.type_vocab_size, h, rngs=rngs)
    self.layer_norm = LayerNorm(h, cfg.layer_norm_eps)
    self.roberta_positions = cfg.roberta_positions
    self.pad_token_id = cfg.pad_token_id

  def position_ids(self, input_ids):
    """`[B, L]`: `0..L-1` (BERT), or RoBERTa's `cumsum(ids != pad) * (ids != pad) + pad`."""
    if self.roberta_positions:
      not_pad = (input_ids != self.pad_token_id).astype(jnp.int32)
      return jnp.cumsum(not_pad, axis=1) * not_pad + self.pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)

  def __call__(self, input_ids, token_type_ids=None, *, rate: float = 0.0, key=None):
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = (self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids(input_ids))
         + self.token_type_embeddings(token_type_ids))
    return dropout(self.layer_norm(x), rate, key)


class BertAttention(nnx.Module):
  """Multi-head self-attention: `query`, `key`, `value` projections and the `output` projection."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    h = cfg.hidden_size
    self.query = Linear(h, h, rngs=rngs)
    self.key = Linear(h, h, rngs=rngs)
    self.value = Linear(h, h, rngs=rngs)
    self.output = Linear(h, h, rngs=rngs)
    self.num_heads = cfg.num_attention_heads

  def __call__(self, x, mask, key=None):
    """x `[B, L, H]`, mask bool `[B, 1, 1, L]` (True = attend) -> `[B, L, H]`."""
    b, l, h = x.shape
    heads = lambda t: t.reshape(b, l, self.num_heads, h // self.num_heads)  # noqa: E731
    q = heads(self.query(x, key=site_key(key, _S_Q)))
    k = heads(self.key(x, key=site_key(key, _S_K)))
    v = heads(self.value(x, key=site_key(key, _S_V)))
    ctx = dot_product_attention(q, k, v, mask).reshape(b, l, h)
    return self.output(ctx, key=site_key(key, _S_O))


class BertMLP(nnx.Module):
  """`output(act(intermediate(x)))`."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.intermediate = Linear(cfg.hidden_size, cfg.intermediate_size, rngs=rngs)
    self.output = Linear(cfg.intermediate_size, cfg.hidden_size, rngs=rngs)
    self.hidden_act = cfg.hidden_act

  def __call__(self, x, key=None):
    y = activation(self.hidden_act)(self.intermediate(x, key=site_key(key, _S_INTER)))
    return self.output(y, key=site_key(key, _S_OUT))


class BertLayer(nnx.Module):
  """Post-LN transformer block: `x = norm(x + attn(x)); x = norm(x + mlp(x))`."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.attention = BertAttention(cfg, rngs=rngs)
    self.attention_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
    self.mlp = BertMLP(cfg, rngs=rngs)
    self.mlp_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)

  def __call__(self, x, mask, *, rate: float = 0.0, key=None):
    a = dropout(self.attention(x, mask, key), rate, site_key(key, _S_ATT_DROP))
    x = self.attention_norm(x + a)
    m = dropout(self.mlp(x, key), rate, site_key(key, _S_MLP_DROP))
    return self.mlp_norm(x + m)


class BertEncoder(nnx.Module):
  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.layers = nnx.List([BertLayer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)])

  def __call__(self, x, mask, *, rate: float = 0.0, key=None):
    return run_blocks(self.layers, getattr(self, "remat", None),
                      lambda layer, h, k: layer(h, mask, rate=rate, key=k), x, key,
                      barrier=getattr(self, "block_barrier", False))


class BertPooler(nnx.Module):
  """`tanh(dense(h[:, 0]))` (BERT's pooler on the [CLS] token)."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.dense = Linear(cfg.hidden_size, cfg.hidden_size, rngs=rngs)

  def __call__(self, hidden, key=None):
    return jnp.tanh(self.dense(hidden[:, 0], key=key))


class BertClassifier(nnx.Module):
  """BERT-family encoder + pooling + linear `classifier` head.

  Args:
    cfg: a `BertConfig` (see `BertConfig.from_dict` for a Hugging Face `config.json`).
    num_labels: classes of the task head.
    pooling: 'mean' (masked mean over tokens, sentence-transformers; default) or 'cls'
      (the BERT pooler, `tanh(dense(h[CLS]))`, as `BertForSequenceClassification`).
    hidden_dropout: dropout rate after the embeddings, each residual branch and the pooled
      output; applied only when a `key` is passed to the forward (0 = none, the default).
  """

  def __init__(self, cfg: BertConfig, num_labels: int, *, pooling: str = ModelConfig.pooling,
               hidden_dropout: float = 0.0, rngs: nnx.Rngs):
    if pooling not in POOLINGS:
      raise ValueError(f"pooling={pooling!r}: allowed values are {list(POOLINGS)}")
    if not isinstance(num_labels, int) or num_labels < 1:
      raise ValueError(f"num_labels={num_labels!r}: must be an integer >= 1")
    if not 0.0 <= hidden_dropout < 1.0:
      raise ValueError(f"hidden_dropout={hidden_dropout!r}: must be in [0, 1)")
    self.config = cfg
    self.pooling = pooling
    self.hidden_dropout = float(hidden_dropout)
    self.embeddings = BertEmbeddings(cfg, rngs=rngs)
    self.encoder = BertEncoder(cfg, rngs=rngs)
    self.pooler = BertPooler(cfg, rngs=rngs) if pooling == "cls" else None
    self.classifier = Linear(cfg.hidden_size, num_labels, rngs=rngs)

  def encode(self, input_ids, attention_mask, *, token_type_ids=None, key=None):
    """input_ids, attention_mask `[B, L]` int -> last_hidden_state `[B, L, H]` float32."""
    mask = (attention_mask > 0)[:, None, None, :]
    x = self.embeddings(input_ids, token_type_ids, rate=self.hidden_dropout,
                        key=site_key(key, _K_EMB))
    return self.encoder(x, mask, rate=self.hidden_dropout, key=site_key(key, _K_ENC))

  def pool(self, hidden, attention_mask, *, key=None):
    """last_hidden_state `[B, L, H]` -> sentence embedding `[B, H]` by `self.pooling`."""
    if self.pooling == "cls":
      return self.pooler(hidden, key=key)
    m = attention_mask.astype(hidden.dtype)[..., None]
    return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)

  def embed(self, input_ids, attention_mask, *, token_type_ids=None, key=None):
    """Pooled sentence embeddings `[B, H]` (for mean pooling: sentence-transformers' embeddings)."""
    h = self.encode(input_ids, attention_mask, token_type_ids=token_type_ids, key=key)
    return self.pool(h, attention_mask, key=site_key(key, _K_POOL))

  def __call__(self, input_ids, attention_mask, *, token_type_ids=None, key=None):
    """input_ids, attention_mask `[B, L]` int32 -> logits `[B, num_labels]`."""
    pooled = self.embed(input_ids, attention_mask, token_type_ids=token_type_ids, key=key)
    k_head = site_key(key, _K_HEAD)
    pooled = dropout(pooled, self.hidden_dropout, site_key(k_head, 0))
    return self.classifier(pooled, key=site_key(k_head, 1))


# ---- the family declaration (see fedlora.models.families) ---------------------------------------------

_BERT_RENAMES = [
    (r"^encoder\.layers\.(\d+)\.attention\.(query|key|value)$", r"encoder.layer.\1.attention.self.\2"),
    (r"^encoder\.layers\.(\d+)\.attention\.output$", r"encoder.layer.\1.attention.output.dense"),
    (r"^encoder\.layers\.(\d+)\.attention_norm$", r"encoder.layer.\1.attention.output.LayerNorm"),
    (r"^encoder\.layers\.(\d+)\.mlp\.intermediate$", r"encoder.layer.\1.intermediate.dense"),
    (r"^encoder\.layers\.(\d+)\.mlp\.output$", r"encoder.layer.\1.output.dense"),
    (r"^encoder\.layers\.(\d+)\.mlp_norm$", r"encoder.layer.\1.output.LayerNorm"),
    (r"^embeddings\.layer_norm$", r"embeddings.LayerNorm"),
]


def _bert_module_name(module: str) -> str:
  import re
  for pat, rep in _BERT_RENAMES:
    new, n = re.subn(pat, rep, module)
    if n:
      return new
  return module


def _bert_namer(tensors, options):
  import warnings
  from fedlora.models.families import LEAF_NAMES, dotted, find_prefix
  mt = options.get("model_type", "bert")
  prefix = find_prefix(tensors, "embeddings.word_embeddings.weight", ("", f"{mt}.", "bert.", "roberta."))
  missing_pooler = options.get("pooling") == "cls" and prefix + "pooler.dense.weight" not in tensors
  if missing_pooler:
    warnings.warn(f"checkpoint {options.get('source')!r} has no pooler weights ({prefix}pooler.dense.weight); "
                  "pooling='cls' uses a freshly initialised pooler", stacklevel=3)

  def name_of(path):
    if path[0] == "classifier" or (path[0] == "pooler" and missing_pooler):
      return None
    return prefix + _bert_module_name(dotted(path[:-1])) + "." + LEAF_NAMES[path[-1]]
  return name_of


def _bert_build(cfg: BertConfig, head: str, options: dict):
  return BertClassifier(cfg, options["num_labels"], pooling=options["pooling"],
                        hidden_dropout=options["hidden_dropout"], rngs=nnx.Rngs(0))


def _family():
  from fedlora.models.families import Family, default_pad_token_id, transpose_kernels
  return Family(
      name="bert", model_types=("bert", "roberta"), heads=("classifier",),
      parse_config=BertConfig.from_dict, build=_bert_build, tensor_namer=_bert_namer,
      transpose=transpose_kernels, tied_embeddings=lambda c: False,
      embedding_path="embeddings/word_embeddings/embedding", head_paths=("classifier",),
      lora_targets=("query", "value"), pad_token_id=default_pad_token_id,
      max_positions=_max_positions)


def _max_positions(hf_cfg: dict) -> int:
  """The position table's rows; RoBERTa's start at pad_token_id + 1 (fewer usable positions)."""
  n = hf_cfg.get("max_position_embeddings", 512)
  return n - (hf_cfg.get("pad_token_id", 1) + 1) if hf_cfg.get("model_type") == "roberta" else n


FAMILY = FAMILIES.register("bert")(_family())

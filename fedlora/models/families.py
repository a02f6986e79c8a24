"""Model families as plug-ins: each family declares, in its own model file, everything the loader,
the LoRA set-up and the tasks need to know about it, as one `Family` value named `FAMILY`.

Adding a family = one new file `fedlora/models/<name>.py` (the Flax NNX module + its declaration,
registered with `FAMILIES.register(name)(Family(...))`) and its test; the registry finds it by
importing the `fedlora.models` package's modules (nothing else to edit). `family_for(model_type)`
raises a ValueError naming the supported `model_type` values.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from fedlora.registry import Registry

FAMILIES = Registry("model family", "fedlora.models", "model_type")


def default_max_positions(hf_cfg: dict) -> int | None:
  """The longest sequence the model's position table holds (None: no table, e.g. pure RoPE)."""
  for key in ("max_position_embeddings", "n_positions"):
    if isinstance(hf_cfg.get(key), int):
      return hf_cfg[key]
  return None


class Family(NamedTuple):
  """One model family (e.g. Llama/Mistral/Qwen2, GPT-2, BERT/RoBERTa).

  name: registry name. model_types: the `config.json` `model_type` values it loads.
  heads: the heads it can build: 'classifier' (sequence classification) and/or 'causal_lm'.
  parse_config: HF `config.json` dict -> the family's frozen config dataclass (validates, clear errors).
  build: (family config, head, options dict) -> nnx.Module (called under `nnx.eval_shape`); options
    holds `num_labels`, `pooling`, `hidden_dropout` for classifier heads.
  tensor_namer: (tensors dict, options dict) -> name_of(path tuple) -> checkpoint tensor name, or None
    for a parameter the checkpoint does not hold (a new head: initialised N(0, 0.02) / zero bias);
    options also holds `source` (the checkpoint file or folder, for messages).
  transpose: path tuple -> whether the stored tensor is `[out, in]` (PyTorch `Linear`) and must be
    transposed to our `[in, out]` kernel (GPT-2's `Conv1D` is already `[in, out]`).
  tied_embeddings: family config -> True when the output projection is the input embedding.
  embedding_path: '/'-path of the token embedding table. head_paths: substrings of the paths of a
    freshly initialised (trainable) task head, e.g. ('classifier',); () for causal LMs.
  lora_targets: default `lora.targets` regexes (over '/'-joined Linear paths).
  pad_token_id: (HF config dict, tokenizer or None) -> the id used to pad (decoder LMs without a pad
    token pad with EOS; padding is masked out of attention and loss, so its value never matters).
  gguf: how the family reads a llama.cpp GGUF checkpoint (`GGUFSpec`), or None when it cannot.
  max_positions: HF config dict -> the longest sequence it takes (None: no limit); the trainer
    refuses longer rows before training (a position beyond the table gives NaN, not an error).
  """
  name: str
  model_types: tuple
  heads: tuple
  parse_config: Callable[[dict], Any]
  build: Callable[[Any, str, dict], Any]
  tensor_namer: Callable[[dict, dict], Callable[[tuple], str | None]]
  transpose: Callable[[tuple], bool]
  tied_embeddings: Callable[[Any], bool]
  embedding_path: str
  head_paths: tuple
  lora_targets: tuple
  pad_token_id: Callable[[dict, Any], int]
  gguf: "GGUFSpec | None" = None
  max_positions: Callable[[dict], "int | None"] = default_max_positions


class GGUFSpec(NamedTuple):
  """How a family reads a GGUF file (fedlora/models/gguf.py): the file's tensors are renamed to the
  family's Hugging Face tensor names, so the HF loading path (`tensor_namer`, `transpose`) does the rest.

  archs: the `general.architecture` values it loads (e.g. ('llama',)).
  config: GGUF metadata `{key: Python value}` -> the HF `config.json` dict (with `model_type`) that
    `Family.parse_config` accepts. The dict also holds `'gguf.tensor_shapes'`: `{tensor name:
    numpy-order shape}` (e.g. no `output.weight` = tied embeddings); the `tokenizer.ggml.*` vocabulary
    arrays are left out.
  tensor: (GGUF tensor name, float32 array in the file's numpy order, HF config dict) -> (HF tensor
    name, array) or None for a tensor the model does not use; undoes llama.cpp's conversions (e.g.
    the q/k row permutation of llama-arch models).
  """
  archs: tuple
  config: Callable[[dict], dict]
  tensor: Callable[[str, Any, dict], "tuple[str, Any] | None"]


def _discover() -> dict[str, Family]:
  fams = {n: e.obj for n, e in FAMILIES.entries().items()}
  seen = {}
  for name, fam in fams.items():
    for t in fam.model_types:
      if t in seen:
        raise ValueError(f"model families {seen[t]!r} and {name!r} both load model_type {t!r}")
      seen[t] = name
  return fams


def families() -> dict[str, Family]:
  """All registered families by name."""
  return dict(_discover())


def supported_model_types() -> list[str]:
  return [t for f in _discover().values() for t in f.model_types]


def family_for(model_type: str | None, where: str = "config.json") -> Family:
  """The family loading `model_type`; ValueError naming the supported ones otherwise."""
  for f in _discover().values():
    if model_type in f.model_types:
      return f
  raise ValueError(f"model_type={model_type!r} in {where!r} is not supported; supported: "
                   f"{supported_model_types()}")


def require_head(family: Family, head: str, task: str, where: str) -> None:
  """ValueError unless `family` builds `head` (what task `task` needs; `where`: the checkpoint)."""
  if head not in family.heads:
    raise ValueError(f"task {task!r} needs a model with a {head!r} head, but {where!r} is family "
                     f"{family.name!r} (heads {list(family.heads)}); point model.path at a matching "
                     "checkpoint or set task.name")


def default_pad_token_id(hf_cfg: dict, tokenizer=None) -> int:
  """tokenizer pad -> config pad -> tokenizer/config EOS -> 0 (decoder LMs usually have no pad)."""
  cands = []
  if tokenizer is not None:
    cands += [getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)]
  eos = hf_cfg.get("eos_token_id")
  cands += [hf_cfg.get("pad_token_id"), eos[0] if isinstance(eos, list) and eos else eos]
  for c in cands:
    if isinstance(c, int) and c >= 0:
      return c
  return 0


# ---- helpers the family files share -------------------------------------------------------------------

LEAF_NAMES = {"kernel": "weight", "bias": "bias", "scale": "weight", "embedding": "weight"}


def find_prefix(tensors: dict, anchor: str, candidates: tuple[str, ...]) -> str:
  """The name prefix ('', 'bert.', 'model.', ...) under which `anchor` is stored."""
  for p in candidates:
    if p + anchor in tensors:
      return p
  hits = sorted(k[: -len(anchor)] for k in tensors if k.endswith("." + anchor))
  if hits:
    return hits[0]
  return candidates[0]


def dotted(path: tuple) -> str:
  """('model', 'layers', 0, 'mlp') -> 'model.layers.0.mlp'."""
  return ".".join(str(p) for p in path)


def decoder_namer(tensors: dict, options: dict):
  """The `tensor_namer` of a decoder whose modules mirror the HF names under 'model.' (Llama, Gemma
  3): the checkpoint stores them under 'model.' or at the top level."""
  prefix = find_prefix(tensors, "embed_tokens.weight", ("model.", ""))

  def name_of(path):
    module = dotted(path[:-1])
    if path[0] == "model":
      module = prefix + module[len("model."):]
    return module + "." + LEAF_NAMES[path[-1]]
  return name_of


def transpose_kernels(path: tuple) -> bool:
  """PyTorch `nn.Linear` stores `[out, in]`: every `kernel` is transposed."""
  return path[-1] == "kernel"

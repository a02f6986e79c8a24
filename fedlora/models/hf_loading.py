"""Load a local Hugging Face-format folder (config.json + *.safetensors), or a llama.cpp `.gguf` file
(`fedlora.models.gguf`: its family renames the tensors to their HF names), into our NNX modules.

No torch and no hub: tensors are read with `safetensors.numpy.load_file`. The module is built
abstractly (`nnx.eval_shape`, so no random init of the pretrained weights is computed), its pure
parameter dict is filled from the checkpoint (PyTorch Linear weights `[out, in]` are transposed to
our `[in, out]` kernels), and only parameters a base checkpoint lacks — the `classifier` head (and a
missing BERT pooler, with a warning) — are initialised from `key`.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file

from fedlora.models.config import POOLINGS, ModelConfig
from fedlora.models.gguf import is_gguf_path

INDEX_FILE = "model.safetensors.index.json"
HEAD_INIT_STD = 0.02


def read_config(path) -> dict:
  """`config.json` of a model folder (or the config a `.gguf` file's family derives from its metadata)
  as a dict; FileNotFoundError/ValueError name what is wrong."""
  path = os.fspath(path)
  if is_gguf_path(path):
    from fedlora.models.gguf import read_config as read_gguf_config
    return read_gguf_config(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"model folder {path!r} does not exist (expected a local Hugging Face-format "
                            "folder with config.json and *.safetensors)")
  cfg_file = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_file):
    raise FileNotFoundError(f"model folder {path!r} has no config.json")
  try:
    with open(cfg_file) as f:
      cfg = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{cfg_file!r} is not valid JSON: {e}") from None
  if not isinstance(cfg, dict):
    raise ValueError(f"{cfg_file!r} must hold a JSON object, found {type(cfg).__name__}")
  return cfg


def safetensors_files(path) -> list[str]:
  """The checkpoint files: those named by `model.safetensors.index.json` (sharded) or all `*.safetensors`."""
  path = os.fspath(path)
  index = os.path.join(path, INDEX_FILE)
  if os.path.isfile(index):
    with open(index) as f:
      names = sorted(set(json.load(f)["weight_map"].values()))
    files = [os.path.join(path, n) for n in names]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
      raise FileNotFoundError(f"{index!r} names shard files that are missing: {missing}")
    return files
  files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".safetensors"))
  if not files:
    raise FileNotFoundError(f"model folder {path!r} has no *.safetensors file (only safetensors "
                            "checkpoints are read; convert PyTorch .bin files first)")
  return files


_RAW_DTYPES = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64,
               "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
               "BOOL": np.bool_}


def _load_raw(filename: str) -> dict[str, np.ndarray]:
  """Reads a safetensors file directly (8-byte header length, JSON header, raw little-endian data).

  Used for dtypes numpy lacks (bfloat16, the usual dtype of Llama/Qwen checkpoints), which
  `safetensors.numpy.load_file` rejects.
  """
  with open(filename, "rb") as fh:
    (n,) = struct.unpack("<Q", fh.read(8))
    header = json.loads(fh.read(n))
  data = np.memmap(filename, dtype=np.uint8, mode="r", offset=8 + n)
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _RAW_DTYPES:
      raise ValueError(f"tensor {name!r} in {filename!r} has dtype {info['dtype']!r}; "
                       f"supported: {sorted(_RAW_DTYPES)}")
    start, end = info["data_offsets"]
    out[name] = np.frombuffer(data[start:end], dtype=_RAW_DTYPES[info["dtype"]]).reshape(info["shape"])
  return out


def load_safetensors(filename: str) -> dict[str, np.ndarray]:
  """`safetensors.numpy.load_file`, falling back to a direct read for bfloat16 tensors."""
  try:
    try:
      return load_file(filename)
    except TypeError as e:  # "data type 'bfloat16' not understood"
      if "bfloat16" not in str(e):
        raise
      return _load_raw(filename)
  except (SafetensorError, struct.error, json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
    raise ValueError(f"weights file {filename!r} is truncated or corrupt ({type(e).__name__}: {e}); "
                     "re-download or re-convert the model folder") from None


def read_tensors(path) -> dict[str, np.ndarray]:
  """All tensors of the folder's safetensors files, merged (names must be unique across shards)."""
  out: dict[str, np.ndarray] = {}
  for f in safetensors_files(path):
    for k, v in load_safetensors(f).items():
      if k in out:
        raise ValueError(f"tensor {k!r} appears in more than one safetensors file (second: {f!r})")
      out[k] = v
  return out


def _leaves(tree: dict, prefix: tuple = ()):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _leaves(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def _copy(tree: dict) -> dict:
  return {k: _copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


def _set(tree: dict, path: tuple, value) -> None:
  for p in path[:-1]:
    tree = tree[p]
  tree[path[-1]] = value


def _fill(abstract: dict, tensors: dict, name_of: Callable[[tuple], str | None], init: Callable,
          source: str, transpose_rule: Callable[[tuple], bool]) -> dict:
  """Replaces every abstract leaf by its checkpoint tensor (or `init(path, shape)` when unnamed)."""
  filled = _copy(abstract)
  for path, leaf in _leaves(abstract):
    shape = tuple(leaf.shape)
    name = name_of(path)
    if name is None:
      _set(filled, path, init(path, shape))
      continue
    t = tensors.get(name)
    if t is None and name.endswith("LayerNorm.weight"):  # very old BERT conversions
      t = tensors.get(name[: -len("weight")] + "gamma")
    if t is None and name.endswith("LayerNorm.bias"):
      t = tensors.get(name[: -len("bias")] + "beta")
    ours = "/".join(str(p) for p in path)
    if t is None:
      raise ValueError(f"checkpoint {source!r} has no tensor {name!r} (needed for parameter {ours!r})")
    transpose = transpose_rule(path)
    expected = shape[::-1] if transpose else shape
    if tuple(t.shape) != expected:
      raise ValueError(f"tensor {name!r} in {source!r} has shape {tuple(t.shape)}, but config.json "
                       f"implies {expected} (for parameter {ours!r})")
    arr = np.asarray(t, dtype=np.float32)
    _set(filled, path, jnp.asarray(arr.T if transpose else arr))
  return filled


def _head_init(key):
  """`N(0, 0.02)` kernels and zero biases, each path folding its own index into `key`."""
  counter = iter(range(1 << 30))

  def init(path, shape):
    if path[-1] == "bias":
      return jnp.zeros(shape, jnp.float32)
    return HEAD_INIT_STD * jax.random.normal(jax.random.fold_in(key, next(counter)), shape, jnp.float32)
  return init


def _build(ctor: Callable[[], nnx.Module], tensors, name_of, init, source, transpose_rule) -> nnx.Module:
  abstract_model = nnx.eval_shape(ctor)
  graphdef, state = nnx.split(abstract_model)
  pure = _fill(nnx.to_pure_dict(state), tensors, name_of, init, source, transpose_rule)
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def _limit_layers(cfg: dict, num_layers: int | None) -> dict:
  if num_layers is None:
    return cfg
  field = "n_layer" if "n_layer" in cfg and "num_hidden_layers" not in cfg else "num_hidden_layers"
  total = cfg.get(field)
  if not isinstance(num_layers, int) or not 1 <= num_layers <= (total or 0):
    raise ValueError(f"num_layers={num_layers!r}: must be an integer in [1, {total}] "
                     f"(config.json {field}) or None for all")
  return {**cfg, field: num_layers,
          **({"layer_types": cfg["layer_types"][:num_layers]} if cfg.get("layer_types") else {})}


def load_pretrained(path, *, num_labels: int | None = None, pooling: str = ModelConfig.pooling,
                    key: jax.Array | None = None, num_layers: int | None = None,
                    hidden_dropout: float = 0.0) -> nnx.Module:
  """A pretrained model from a local Hugging Face-format folder.

  The family (`fedlora.models.families`) is chosen by `config.json`'s `model_type`; it names the
  tensors, says which are transposed and which head it builds.

  Args:
    path: folder with `config.json` and `*.safetensors` (sharded checkpoints via
      `model.safetensors.index.json`; tensor names may carry a 'bert.'/'roberta.'/'model.'/
      'transformer.' prefix), or a `.gguf` file whose `general.architecture` a family reads.
    num_labels: classes of the new `classifier` head; required for classifier families
      ('bert', 'roberta'), must be None for the causal LMs ('llama', 'mistral', 'qwen2', 'gpt2').
    pooling: 'mean' or 'cls' (BERT family only; see `BertClassifier`).
    key: PRNG key for the parameters the checkpoint lacks (the head: N(0, 0.02) kernel, zero bias).
    num_layers: keep only the first n transformer layers (None = all).
    hidden_dropout: BERT family hidden dropout rate, used only when a forward key is given.
  Returns:
    `BertClassifier`, `LlamaForCausalLM` or `GPT2LMHeadModel` holding float32 parameters.
  """
  from fedlora.models.families import family_for
  path = os.fspath(path)
  cfg = read_config(path)
  mt = cfg.get("model_type")
  where = path if is_gguf_path(path) else os.path.join(path, "config.json")
  family = family_for(mt, where)
  cfg = _limit_layers(cfg, num_layers)
  if "classifier" in family.heads:
    if num_labels is None:
      raise ValueError(f"num_labels is required for model_type={mt!r} (a classifier head is built)")
    if pooling not in POOLINGS:
      raise ValueError(f"pooling={pooling!r}: allowed values are {list(POOLINGS)}")
    head = "classifier"
  elif num_labels is not None:
    from fedlora.models.families import families
    encoders = [t for f in families().values() if "classifier" in f.heads for t in f.model_types]
    raise ValueError(f"model_type={mt!r} in {where!r} is a causal LM "
                     f"(family {family.name!r}: decoder-only, no classification head), but the classification "
                     f"task (num_labels={num_labels}) needs an encoder model: model_type one of {encoders} "
                     "(e.g. BERT, RoBERTa, MiniLM); point model.path at such a folder, or use "
                     "task.name='causal_lm' (configs/lm_instruct.py)")
  else:
    head = "causal_lm"
  if key is None:
    key = jax.random.PRNGKey(0)
  if is_gguf_path(path):
    from fedlora.models.gguf import read_tensors as read_gguf_tensors
    tensors, source = read_gguf_tensors(path, cfg, num_layers=num_layers), path
  else:
    files = safetensors_files(path)  # FileNotFoundError before any work
    tensors = read_tensors(path)
    source = files[0] if len(files) == 1 else path
  fcfg = family.parse_config(cfg)
  options = {"num_labels": num_labels, "pooling": pooling, "hidden_dropout": hidden_dropout,
             "model_type": mt, "source": source}
  name_of = family.tensor_namer(tensors, options)
  return _build(lambda: family.build(fcfg, head, options), tensors, name_of, _head_init(key), source,
                family.transpose)


def supported_model_types() -> list[str]:
  from fedlora.models.families import supported_model_types as s
  return s()


__all__ = ["load_pretrained", "read_config", "read_tensors", "safetensors_files", "supported_model_types"]

"""Read a llama.cpp GGUF checkpoint (one `.gguf` file: metadata, quantised tensors, tokenizer).

No torch: the file is read with `gguf.GGUFReader` (the llama.cpp project's numpy reader) and every
tensor is dequantised with `gguf.quants.dequantize` to float32. The family is chosen by the file's
`general.architecture` through `Family.gguf.archs` (`fedlora.models.families.GGUFSpec`); the family
turns the metadata into a Hugging Face `config.json` dict and renames (and un-permutes) the tensors
into their Hugging Face names, after which `fedlora.models.hf_loading` loads them exactly as it loads
a safetensors checkpoint. `load_tokenizer` builds a `transformers.PreTrainedTokenizerFast` from the
`tokenizer.ggml.*` metadata with transformers' GGUF tokenizer converter (which needs no torch).

Public:
  is_gguf_path(path)                      -> whether `path` names a `.gguf` file
  read_metadata(path)                     -> {key: plain Python value} (vocabulary arrays left out)
  read_config(path)                       -> the family's HF config dict (with `model_type`)
  read_tensors(path, cfg, dtype=...)      -> {HF tensor name: array in the file's numpy order}
  load_tokenizer(path)                    -> transformers.PreTrainedTokenizerFast
"""
from __future__ import annotations

import functools
import os
import re
import resource
import sys
import time

import numpy as np

# the ggml types of SmolLM2-135M-Instruct.Q4_1 (F32, Q8_0, Q4_1) and gemma-3-270m-q4_k_m (F32, Q5_0,
# Q8_0, Q4_K, Q6_K), plus the plain float types
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_1", "Q5_0", "Q4_K", "Q6_K")
# the key under which `GGUFSpec.config` also receives {tensor name: numpy-order shape} (the metadata
# alone does not say e.g. whether the output projection is tied to the embedding)
TENSOR_SHAPES_KEY = "gguf.tensor_shapes"
_VOCAB_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.scores",
               "tokenizer.ggml.token_type", "tokenizer.ggml.precompiled_charsmap")
_BLOCK = re.compile(r"blk\.(\d+)\.")


def is_gguf_path(path) -> bool:
  """Whether `path` names a GGUF file (by its `.gguf` suffix; the file need not exist)."""
  return os.fspath(path).lower().endswith(".gguf")


@functools.lru_cache(maxsize=1)
def _reader_class():
  import gguf

  class Reader(gguf.GGUFReader):
    """`gguf.GGUFReader` over a plain ndarray view of its read-only memory map: the same bytes, but
    the ~250k small slices taken while parsing a 49k-token vocabulary skip `np.memmap`'s per-slice
    Python hooks (several times faster)."""

    @property
    def data(self):
      return self._bytes

    @data.setter
    def data(self, value):
      self._bytes = value.view(np.ndarray) if isinstance(value, np.memmap) else value
  return Reader


@functools.lru_cache(maxsize=2)
def _cached_reader(path: str, size: int, mtime_ns: int):
  try:
    return _reader_class()(path, "r")
  except (ValueError, OSError, IndexError, KeyError) as e:  # bad magic, truncated header, unknown type
    raise ValueError(f"{path!r} is not a readable GGUF file ({type(e).__name__}: {e})") from None


def reader(path):
  """The `gguf.GGUFReader` of `path` (parsing the metadata of a 49k-token vocabulary takes seconds, so
  the last two files read are kept, keyed by size and modification time)."""
  path = os.path.realpath(os.fspath(path))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GGUF file {path!r} does not exist")
  st = os.stat(path)
  return _cached_reader(path, st.st_size, st.st_mtime_ns)


def read_metadata(path, with_vocab: bool = False) -> dict:
  """All metadata key/values as plain Python values (str, int, float, bool, lists); the large
  `tokenizer.ggml.*` vocabulary arrays only when `with_vocab`."""
  out = {}
  for key, field in reader(path).fields.items():
    if key.startswith("GGUF.") or (not with_vocab and key in _VOCAB_KEYS):
      continue
    out[key] = field.contents()
  return out


def tensor_shapes(path) -> dict[str, tuple]:
  """{tensor name: shape in numpy order (`[out, in]` for a matrix)}."""
  return {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader(path).tensors}


def _family(metadata: dict, path):
  from fedlora.models.families import families
  arch = metadata.get("general.architecture")
  specs = {a: f for f in families().values() if f.gguf is not None for a in f.gguf.archs}
  if arch not in specs:
    raise ValueError(f"GGUF file {os.fspath(path)!r} has general.architecture={arch!r}, which no model "
                     f"family reads; supported architectures: {sorted(specs)}")
  return specs[arch]


def read_config(path) -> dict:
  """The Hugging Face `config.json` dict the file's family derives from its metadata."""
  meta = read_metadata(path)
  family = _family(meta, path)
  cfg = family.gguf.config({**meta, TENSOR_SHAPES_KEY: tensor_shapes(path)})
  if cfg.get("model_type") not in family.model_types:
    raise ValueError(f"family {family.name!r} derived model_type={cfg.get('model_type')!r} from "
                     f"{os.fspath(path)!r}; expected one of {list(family.model_types)}")
  return cfg


def dequantize(tensor, dtype=np.float32) -> np.ndarray:
  """One `gguf.ReaderTensor` -> a new array of `dtype` in numpy order (`[out, in]` for a matrix)."""
  import gguf
  shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
  arr = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
  return arr.reshape(shape).astype(dtype, copy=True)


def check_types(path) -> None:
  """ValueError naming the first tensor whose ggml type is not in `SUPPORTED_TYPES`."""
  for t in reader(path).tensors:
    if t.tensor_type.name not in SUPPORTED_TYPES:
      raise ValueError(f"tensor {t.name!r} in {os.fspath(path)!r} has ggml type {t.tensor_type.name}; "
                       f"supported types: {list(SUPPORTED_TYPES)}")


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far, MiB (`ru_maxrss`: KiB on Linux, bytes on macOS)."""
  r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return r / (1 << 20) if sys.platform == "darwin" else r / 1024


def read_tensors(path, cfg: dict, *, dtype=np.float32, num_layers: int | None = None,
                 verbose: bool = True) -> dict[str, np.ndarray]:
  """Every tensor dequantised to float32, cast to `dtype`, renamed by the family's `GGUFSpec.tensor`.

  Args:
    path: the `.gguf` file.
    cfg: the HF config dict (`read_config`), handed to `GGUFSpec.tensor` (head counts for un-permuting).
    dtype: the numpy dtype of the returned arrays (e.g. np.float32, ml_dtypes.bfloat16).
    num_layers: read only blocks `blk.0` .. `blk.{num_layers-1}` (None = all).
    verbose: print one line with the load time and the peak RSS.
  Returns:
    {HF tensor name: array in the file's numpy order}; tensors the family does not use are left out.
  """
  t0 = time.perf_counter()
  path = os.fspath(path)
  rd = reader(path)
  family = _family(read_metadata(path), path)
  check_types(path)
  out: dict[str, np.ndarray] = {}
  for t in rd.tensors:
    m = _BLOCK.match(t.name)
    if num_layers is not None and m and int(m.group(1)) >= num_layers:
      continue
    mapped = family.gguf.tensor(t.name, dequantize(t), cfg)
    if mapped is None:
      continue
    name, arr = mapped
    if name in out:
      raise ValueError(f"GGUF tensors of {path!r} map to {name!r} twice (second: {t.name!r})")
    out[name] = np.asarray(arr).astype(dtype, copy=False)
  if verbose:
    print(f"gguf: read {len(out)} tensors of {os.path.basename(path)} in {time.perf_counter() - t0:.1f} s; "
          f"peak RSS {peak_rss_mib():.0f} MiB", flush=True)
  return out


def tokenizer_fields(path) -> tuple[str, dict, dict]:
  """(architecture, tokenizer dict, tokenizer config) grouped as transformers'
  `integrations/gguf/gguf_tokenizer_mapping.GGUF_TOKENIZER_MAPPING` says."""
  from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING
  meta = read_metadata(path, with_vocab=True)
  if "tokenizer.ggml.tokens" not in meta:
    raise ValueError(f"GGUF file {os.fspath(path)!r} holds no tokenizer (no tokenizer.ggml.tokens)")
  grouped = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items()
                     if f"tokenizer.{key}" in meta}
             for group, renames in GGUF_TOKENIZER_MAPPING.items()}
  tok, tok_cfg = grouped["tokenizer"], grouped["tokenizer_config"]
  if tok.get("tokenizer_type") == "llama":  # sentencepiece files without the flag: llama.cpp adds BOS
    tok_cfg.setdefault("add_bos_token", True)
  return meta.get("general.architecture"), tok, tok_cfg


def load_tokenizer(path):
  """A `transformers.PreTrainedTokenizerFast` built from the file's `tokenizer.ggml.*` metadata, with
  its bos/eos/unk/pad tokens (by the ids the metadata gives) and `tokenizer.chat_template`."""
  from transformers import PreTrainedTokenizerFast
  from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer
  arch, tok, tok_cfg = tokenizer_fields(path)
  backend, extra = convert_gguf_tokenizer(arch, tok)
  tokens = tok["tokens"]
  specials = {}
  for name in ("bos", "eos", "unk", "pad"):
    i = tok.get(f"{name}_token_id")
    if i is not None:
      if not 0 <= i < len(tokens):
        raise ValueError(f"GGUF file {os.fspath(path)!r}: {name}_token_id={i} is outside the "
                         f"vocabulary of {len(tokens)} tokens")
      specials[f"{name}_token"] = tokens[i]
  kw = {k: v for k, v in tok_cfg.items() if k in ("chat_template", "add_bos_token", "add_eos_token")}
  return PreTrainedTokenizerFast(tokenizer_object=backend, **specials, **kw, **extra)


__all__ = ["SUPPORTED_TYPES", "TENSOR_SHAPES_KEY", "dequantize", "is_gguf_path", "load_tokenizer",
           "read_config", "read_metadata", "read_tensors", "tensor_shapes"]

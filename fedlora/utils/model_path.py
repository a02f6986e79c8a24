"""Where the model is: `model.path` (a Hugging Face-format folder or a `.gguf` file), or the model an
installed asset package holds."""
from __future__ import annotations

import importlib
import importlib.util
import os

from fedlora.section import ConfigError


def resolve_model_path(model_cfg) -> str:
  """`model.path` (a Hugging Face-format folder or a `.gguf` file), or, when the path is empty, the
  model of the installed asset package `model.package`: its `get_model_path()`, else the single
  `*.gguf` file in the package folder."""
  if model_cfg.path:
    if model_cfg.path.lower().endswith(".gguf"):
      if not os.path.isfile(model_cfg.path):
        raise ConfigError(f"config.model.path={model_cfg.path!r}: no such file (a .gguf path must name a "
                          "llama.cpp GGUF checkpoint file)")
    elif not os.path.isdir(model_cfg.path):
      raise ConfigError(f"config.model.path={model_cfg.path!r}: no such folder (expected a local "
                        "Hugging Face-format folder with config.json and *.safetensors, or a .gguf file)")
    _check_model_folder(model_cfg.path, "config.model.path")
    return model_cfg.path
  if not model_cfg.package:
    raise ConfigError("config.model.path is empty: give the local Hugging Face-format model folder "
                      "(config.json, *.safetensors and the tokenizer files) or a .gguf file, e.g. "
                      "--config.model.path=/data/Qwen2.5-0.5B")
  path = _package_model_path(model_cfg.package)
  _check_model_folder(path, f"config.model.package={model_cfg.package!r}'s model")
  return path


def _package_model_path(package: str) -> str:
  """`<package>.get_model_path()`, or the single `*.gguf` in the package folder when the package has
  no such function or cannot be imported (an asset wheel installed without its own dependencies)."""
  try:
    spec = importlib.util.find_spec(package)
  except (ImportError, ValueError):
    spec = None
  if spec is None:
    raise ConfigError(f"config.model.package={package!r} is not installed and config.model.path is "
                      "empty: give a model folder or .gguf file, or install the package")
  try:
    mod = importlib.import_module(package)
  except ImportError:
    mod = None
  if mod is not None and hasattr(mod, "get_model_path"):
    return str(mod.get_model_path())
  folder = list(spec.submodule_search_locations or [])[:1] or [os.path.dirname(spec.origin or "")]
  found = sorted(f for f in os.listdir(folder[0]) if f.lower().endswith(".gguf"))
  if len(found) != 1:
    raise ConfigError(f"config.model.package={package!r} has no get_model_path() and its folder "
                      f"{folder[0]!r} holds {len(found)} .gguf files {found} (expected exactly one)")
  return os.path.join(folder[0], found[0])


def _check_model_folder(path: str, what: str) -> None:
  """config.json present and valid (or the .gguf file's metadata readable), before the tokenizer or
  any weights are read."""
  from fedlora.models.hf_loading import read_config
  try:
    read_config(path)
  except (FileNotFoundError, ValueError) as e:
    raise ConfigError(f"{what}: {e} (expected a local Hugging Face-format folder with config.json, "
                      "tokenizer files and *.safetensors, or a .gguf file)") from None

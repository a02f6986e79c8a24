"""Where the model is: `model.path`, or the folder an installed asset package holds."""
from __future__ import annotations

import importlib
import os

from fedlora.section import ConfigError


def resolve_model_path(model_cfg) -> str:
  """`model.path`, or `<model.package>.get_model_path()` when the path is empty."""
  if model_cfg.path:
    if not os.path.isdir(model_cfg.path):
      raise ConfigError(f"config.model.path={model_cfg.path!r}: no such folder (expected a local "
                        "Hugging Face-format folder with config.json and *.safetensors)")
    _check_model_folder(model_cfg.path, "config.model.path")
    return model_cfg.path
  if not model_cfg.package:
    raise ConfigError("config.model.path is empty: give the local Hugging Face-format model folder "
                      "(config.json, *.safetensors and the tokenizer files), e.g. --config.model.path=/data/Qwen2.5-0.5B")
  try:
    mod = importlib.import_module(model_cfg.package)
  except ImportError:
    raise ConfigError(f"config.model.package={model_cfg.package!r} is not installed and "
                      "config.model.path is empty: give a model folder or install the package") from None
  if not hasattr(mod, "get_model_path"):
    raise ConfigError(f"config.model.package={model_cfg.package!r} has no get_model_path()")
  path = str(mod.get_model_path())
  _check_model_folder(path, f"config.model.package={model_cfg.package!r}'s model")
  return path


def _check_model_folder(path: str, what: str) -> None:
  """config.json present and valid, before the tokenizer or any weights are read."""
  from fedlora.models.hf_loading import read_config
  try:
    read_config(path)
  except (FileNotFoundError, ValueError) as e:
    raise ConfigError(f"{what}: {e} (expected a local Hugging Face-format folder with config.json, "
                      "tokenizer files and *.safetensors)") from None

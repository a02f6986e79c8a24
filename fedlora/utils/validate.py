"""Config validation before any training: every bad value is named together with what is allowed."""
from __future__ import annotations

import codecs
import importlib
import importlib.util
import os
import re

PARTITIONS = ("iid", "dirichlet", "quantity", "client_dirichlet")
OPTIMIZERS = ("adamw", "sgd")
RESUME_MODES = ("auto", "never", "must")  # semantics: fedlora/run/workdir.py
NONFINITE_MODES = ("stop", "skip")  # semantics: fedlora/fed/guard.py


class ConfigError(ValueError):
  """A config value is not allowed; the message names the key, the value and what is allowed."""


def _check(ok: bool, key: str, value, allowed: str) -> None:
  if not ok:
    raise ConfigError(f"config.{key}={value!r} is not allowed: {allowed}")


def _int(c, key: str, lo: int, hi: int | None = None) -> None:
  v = c
  for p in key.split("."):
    v = v[p]
  ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
  _check(ok, key, v, f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))


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
  if not model_cfg.get("package"):
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


def _is_codec(name) -> bool:
  try:
    codecs.lookup(name)
    return True
  except (LookupError, TypeError):
    return False


def validate(c) -> None:
  """Raises ConfigError on the first bad value. Data-dependent checks (columns, clients vs
  examples) happen when the data is loaded, still before any training."""
  _int(c, "seed", 0)
  _check(isinstance(c.name, str) and re.fullmatch(r"[A-Za-z0-9_.+-]+", c.name) is not None, "name",
         c.name, "letters, digits and _ . + - (it names the default workdir)")
  _check(isinstance(c.workdir, str), "workdir", c.workdir, "a path ('' = runs/<name>-<method>-s<seed>)")
  _check(c.resume in RESUME_MODES, "resume", c.resume, f"one of {RESUME_MODES}")
  _check(isinstance(c.debug, bool), "debug", c.debug, "True or False")
  _check(_is_codec(c.data.encoding), "data.encoding", c.data.encoding,
         "a Python codec name such as 'utf-8', 'latin-1', 'cp1252', 'utf-16'")
  _check(c.fed.nonfinite in NONFINITE_MODES, "fed.nonfinite", c.fed.nonfinite,
         f"one of {NONFINITE_MODES}")
  _int(c, "model.num_layers", 0)
  from fedlora.models.layers import DTYPES, REMAT, remat_policies
  _check(c.model.remat in REMAT + remat_policies(), "model.remat", c.model.remat,
         f"one of {REMAT + remat_policies()}")
  _check(isinstance(c.model.grad_barrier, bool), "model.grad_barrier", c.model.grad_barrier, "True or False")
  for k in ("compute_dtype", "param_dtype"):
    _check(c.model[k] in DTYPES, f"model.{k}", c.model[k], f"one of {tuple(DTYPES)}")
  if c.data.source != "bbcnews":
    _check(bool(c.data.path) and os.path.exists(c.data.path), "data.path", c.data.path,
           f"an existing file or folder for data.source={c.data.source!r}")
  _int(c, "data.max_length", 8, 4096)
  _int(c, "data.max_examples", 0)
  _check(0.0 < c.data.test_fraction < 1.0, "data.test_fraction", c.data.test_fraction,
         "a fraction in (0, 1)")
  _check(c.data.partition in PARTITIONS, "data.partition", c.data.partition, f"one of {PARTITIONS}")
  _check(c.data.dirichlet_alpha > 0, "data.dirichlet_alpha", c.data.dirichlet_alpha, "> 0")
  _check(c.data.quantity_sigma >= 0, "data.quantity_sigma", c.data.quantity_sigma, ">= 0")
  _int(c, "data.num_clients", 1)
  _int(c, "data.min_examples_per_client", 1)
  _int(c, "fed.rounds", 1)
  _int(c, "fed.clients_per_round", 1, c.data.num_clients)
  _int(c, "fed.local_steps", 1)
  _int(c, "fed.batch_size", 1)
  _int(c, "fed.client_chunk", 0)
  _int(c, "fed.cpu_chunk_tokens", 0)
  _check(isinstance(c.fed.memory_budget_gb, (int, float)) and c.fed.memory_budget_gb >= 0,
         "fed.memory_budget_gb", c.fed.memory_budget_gb, "a number of GiB >= 0 (0 = automatic)")
  _server_and_client(c)
  _check(c.optim.name in OPTIMIZERS, "optim.name", c.optim.name, f"one of {OPTIMIZERS}")
  _check(c.optim.lr > 0, "optim.lr", c.optim.lr, "> 0")
  _check(c.optim.grad_clip >= 0, "optim.grad_clip", c.optim.grad_clip, ">= 0 (0 = off)")
  _int(c, "eval.every", 1)
  _int(c, "eval.batch_size", 1)
  _int(c, "checkpoint.every", 1)
  _int(c, "checkpoint.keep", 1)
  _int(c, "mesh.num_devices", 0)
  _int(c, "mesh.model", 1)
  _check(isinstance(c.mesh.shard_frozen, bool), "mesh.shard_frozen", c.mesh.shard_frozen, "True or False")
  _int(c, "mesh.num_processes", 0)
  _int(c, "mesh.process_id", -1)
  from fedlora.tasks import get_task, task_name  # the task checks its own keys (model head, data columns)
  get_task(task_name(c)).validate(c)


def _server_and_client(c) -> None:
  """Sections `server` (fedlora/server) and `client` (fedlora/fed/drift.py), checked by their owners."""
  from fedlora.fed.drift import validate_client
  from fedlora.server import build_server
  try:
    build_server(c.server, c.fed.rounds)
    validate_client(c.client)
  except ValueError as e:
    raise ConfigError(str(e)) from None

"""Registries find a component by name by importing the module that registers it (one file each)."""
from __future__ import annotations

import importlib


def import_if_present(module: str) -> None:
  """Import `module` (which registers components on import). A module that does not exist is no
  error here (the registry then reports the unknown name with the allowed ones); a module that
  exists but fails on a missing import of its own raises that error."""
  try:
    importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name != module:
      raise

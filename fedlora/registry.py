"""Components found by name: one mechanism for every kind.

A component (a compressor, method, task, model family, server optimiser, drift correction, client
optimiser, partition, LoRA init, schedule, data source, aggregation rule, tracker) is ONE module in
its kind's package that registers itself on import:

    from fedlora.server.registry import SERVERS

    @dataclasses.dataclass(frozen=True)
    class Options(Section):            # its own config keys, defaults and checks (optional)
      SECTION = "server"
      momentum: float = 0.9  # β in [0, 1)
      ...

    @SERVERS.register("fedavgm", options=Options)
    def build(section) -> ...: ...

Lookup (big_vision's style: the module is the registration): a registered name; else the module
`<package>.<name>` is imported; else every module of the package is imported once. A module outside
the package registers when it is imported (tests register components from test-local files). An
unknown name is a ConfigError naming the config key, the value and the registered names.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any, NamedTuple

from fedlora.section import ConfigError


class Entry(NamedTuple):
  name: str
  obj: Any              # the factory or declaration the component registered
  options: Any = None   # its options section class (fedlora.section.Section) or None


class Registry:
  """Components of one kind (`kind` names it in messages; `key` is the config key that picks one,
  e.g. 'server.name'; `package` holds the built-in ones, one module each)."""

  def __init__(self, kind: str, package: str, key: str):
    self.kind, self.package, self.key = kind, package, key
    self._entries: dict[str, Entry] = {}
    self._scanned = False

  def register(self, name: str, options=None):
    """Decorator (or call on a value): registers `obj` under `name`; returns `obj` unchanged. A name
    registered again (a module imported twice, a test-local replacement) takes the new entry."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w]*", name):
      raise ValueError(f"{self.kind} name {name!r}: letters, digits and _ (it is a config value)")

    def deco(obj):
      self._entries[name] = Entry(name, obj, options)
      return obj
    return deco

  def unregister(self, name: str) -> None:
    """Removes `name` (tests that registered a component from a local file)."""
    self._entries.pop(name, None)

  def _scan(self) -> None:
    if not self._scanned:
      pkg = importlib.import_module(self.package)
      for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        importlib.import_module(f"{self.package}.{info.name}")
      self._scanned = True

  def _find(self, name) -> Entry | None:
    if name not in self._entries and isinstance(name, str) and re.fullmatch(r"\w+", name):
      try:
        importlib.import_module(f"{self.package}.{name}")
      except ModuleNotFoundError as e:
        if e.name != f"{self.package}.{name}":
          raise  # the module exists but lacks an import of its own
    if name not in self._entries:
      self._scan()
    return self._entries.get(name)

  def get(self, name) -> Entry:
    entry = self._find(name)
    if entry is None:
      raise ConfigError(f"config.{self.key}={name!r} is not allowed: one of {self.names()}")
    return entry

  def __contains__(self, name) -> bool:
    return self._find(name) is not None

  def names(self) -> tuple:
    """Every registered name, the package's modules imported first."""
    self._scan()
    return tuple(sorted(self._entries))

  def entries(self) -> dict:
    self._scan()
    return dict(self._entries)

"""Typed config sections: one frozen dataclass per section, declared beside the code it configures.

A section's fields are its keys and their defaults (the only place a default is written), its
docstring says what each key means, and its `check()` validates the values, raising one `ConfigError`
that names the key, the value and what is allowed. `fedlora.config` assembles the sections into the
whole config (the `ml_collections.ConfigDict` a config file overrides, and the typed tree a run uses).

A section whose components are found by name (server optimisers in `server`, compressors in
`compress`, ...) names their registry in `COMPONENTS`: each registered component declares its own
options as a section class (`Registry.register(name, options=...)`), whose keys live flat in the
same config section; the typed section keeps every component's options (`section.options(name)`)
and reads a component key as an attribute (`config.server.momentum`).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
import typing
from typing import Any, ClassVar

_BUILDING = threading.local()  # set while `from_dict` constructs a section: it checks it itself after


class ConfigError(ValueError):
  """A config value is not allowed; the message names the key, the value and what is allowed."""


# ---- value checks shared by every section -------------------------------------------------------------

def is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
  """A finite real number (bool excluded)."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_num_or_inf(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


class Section:
  """Mixin of every config section (a frozen dataclass). Class attributes:

  SECTION: the dotted key of the section ('server', 'wireless.channel'), for messages.
  COMPONENTS: `() -> Registry` (or a tuple of them) of the components whose options live in this
    section, or None.
  DERIVED: fields set by the code from other sections, not config keys (e.g. the solver's bandwidth).
  """
  SECTION: ClassVar[str] = ""
  COMPONENTS: ClassVar[Any] = None
  DERIVED: ClassVar[tuple] = ()

  def __post_init__(self):
    if not getattr(_BUILDING, "on", False):
      self.check()

  def check(self) -> None:
    """Raises ConfigError for a bad value (subclasses override; `need` builds the message)."""

  def check_selected(self, section) -> None:
    """A component's options: what its parent `section` must hold when this component is the one
    selected (raise through `section.need`); called by the parent's check."""

  def need(self, ok: bool, key: str, allowed: str) -> None:
    if not ok:
      raise ConfigError(f"config.{self.key(key)}={getattr(self, key)!r} is not allowed: {allowed}")

  @classmethod
  def key(cls, name: str) -> str:
    return f"{cls.SECTION}.{name}" if cls.SECTION else name

  # ---- the keys, their defaults, and building from a plain dict ------------------------------------

  @classmethod
  def own_fields(cls) -> list:
    return [f for f in dataclasses.fields(cls) if f.name not in cls.DERIVED and f.name != "_options"]

  @classmethod
  def defaults(cls) -> dict:
    """`{key: default}` of the section (nested sections as dicts), components' keys included."""
    out = {}
    for f in cls.own_fields():
      sub = _section_type(cls, f)
      out[f.name] = sub.defaults() if sub is not None else _default(f)
    for name, entry in component_options(cls).items():
      for k, v in entry.defaults().items():
        out.setdefault(k, v)
    return out

  @classmethod
  def from_dict(cls, values: dict) -> "Section":
    """The typed section from `{key: value}` (keys missing take their default; an unknown key is a
    ConfigError naming it and the allowed ones; every component's options are validated)."""
    values = dict(values)
    comps = component_options(cls)
    comp_keys = {k for opt in comps.values() for k in opt.defaults()}
    own = {f.name: f for f in cls.own_fields()}
    unknown = sorted(set(values) - set(own) - comp_keys)
    if unknown:
      raise ConfigError(f"config.{cls.SECTION or '<top>'} has no key(s) {unknown}; its keys: "
                        f"{sorted(set(own) | comp_keys)}")
    kwargs = {}
    for name, f in own.items():
      if name in values:
        sub = _section_type(cls, f)
        v = values[name]
        kwargs[name] = sub.from_dict(v) if sub is not None and isinstance(v, dict) else _plain(v)
    options = {n: opt.from_dict({k: values[k] for k in opt.defaults() if k in values})
               for n, opt in comps.items()}
    _BUILDING.on = True
    try:
      obj = cls(**kwargs)
    finally:
      _BUILDING.on = False
    if comps:
      object.__setattr__(obj, "_options", options)
    obj.check()  # with its components' options attached (a check may read them)
    return obj

  def to_dict(self) -> dict:
    """`{key: value}` (nested sections as dicts, components' keys flat), JSON-plain tuples kept."""
    out = {}
    for f in self.own_fields():
      v = getattr(self, f.name)
      out[f.name] = v.to_dict() if isinstance(v, Section) else v
    for opt in getattr(self, "_options", {}).values():
      for k, v in opt.to_dict().items():
        out.setdefault(k, v)
    return out

  # ---- reading ----------------------------------------------------------------------------------

  def options(self, name: str) -> "Section":
    """The options section of component `name` (of this section's registry)."""
    opts = getattr(self, "_options", None)
    if opts is None:
      opts = {n: o.from_dict({}) for n, o in component_options(type(self)).items()}
      object.__setattr__(self, "_options", opts)
    if name not in opts:
      raise ConfigError(f"config.{self.SECTION}: no component {name!r} declares options here; "
                        f"those that do: {sorted(opts)}")
    return opts[name]

  def __getattr__(self, name: str):
    # only reached for names that are not fields: a component's key, read flat from the section
    if name.startswith("_"):
      raise AttributeError(name)
    comps = component_options(type(self))
    for comp in comps:
      if name in comps[comp].defaults():
        return getattr(self.options(comp), name)
    raise AttributeError(f"config.{self.SECTION} has no key {name!r}")

  def __getitem__(self, name: str):
    return getattr(self, name)

  def __contains__(self, name: str) -> bool:
    return name in self.to_dict()

  def get(self, name: str, default=None):
    try:
      return getattr(self, name)
    except AttributeError:
      return default

  def replace(self, **changes) -> "Section":
    """A copy with `changes` (validated again); component keys may be changed too."""
    values = self.to_dict()
    for k, v in changes.items():
      values[k] = v.to_dict() if isinstance(v, Section) else v
    return type(self).from_dict(values)


def as_section(cls, value) -> Section:
  """`value` as a `cls` section: None -> its defaults; a section of that class as it is; a mapping
  (dict, ConfigDict) -> `cls.from_dict` (validated)."""
  if value is None:
    return cls()
  if isinstance(value, cls):
    return value
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  return cls.from_dict(dict(value))


def component_options(cls) -> dict:
  """`{component name: options section class}` of the registry a section names (none: {})."""
  if cls.COMPONENTS is None:
    return {}
  regs = cls.COMPONENTS()
  out = {}
  for reg in regs if isinstance(regs, tuple) else (regs,):
    out.update({n: e.options for n, e in reg.entries().items() if e.options is not None})
  return out


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
  return typing.get_type_hints(cls)


def _section_type(cls, f):
  t = _hints(cls).get(f.name)
  return t if isinstance(t, type) and issubclass(t, Section) else None


def _default(f):
  if f.default is not dataclasses.MISSING:
    return f.default
  if f.default_factory is not dataclasses.MISSING:
    return f.default_factory()
  raise TypeError(f"field {f.name!r} has no default")


def _plain(v):
  """ConfigDict hands lists for tuples after a round trip; sections keep tuples (hashable)."""
  return tuple(_plain(x) for x in v) if isinstance(v, list) else v


def section_field(cls):
  """A dataclass field holding a nested section at its defaults."""
  return dataclasses.field(default_factory=cls)

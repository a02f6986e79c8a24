"""Methods found by name: `build_method(config, trainable) -> Method`.

A method is ONE file that calls `register_method(MethodSpec(...))`, declaring its compressor (a
registered compressor name), the regex of trainable leaves it keeps frozen, its regulariser and the
`config.method` key of its weight, whether its compressor keeps whole rank components (TSFA's ratio
is then rounded down to the rank grid), its default allocation with the wireless uplink, and its own
`config.method` keys with defaults (validated by its `validate`). Built-in (fedlora/methods/<name>.py):

| name   | client trains        | compressor | uplink default (wireless.enabled)       |
|--------|----------------------|------------|-----------------------------------------|
| ideal  | A, B, head           | none       | fixed, ρ = 1 (dense), equal bandwidth   |
| soft   | A, B, head + ortho   | soft       | tsfa                                    |
| topk   | A, B, head           | topk       | fixed ρ = method.ratio, equal bandwidth |
| randk  | A, B, head           | randk      | fixed ρ, equal bandwidth                |
| svd    | A, B, head           | svd        | fixed ρ, equal bandwidth                |
| ffa    | B, head (A frozen)   | none       | fixed, ρ = 1 (dense), equal bandwidth   |

`method.allocation='default'` takes the method's default; 'tsfa' or 'fixed' override it for any
method, and TSFA then plans with that method's OWN payload model (`Compressor.payload`) and
importance profile (`CompressOut.profile`). With `wireless.enabled=False` every method runs without
a channel (all uploads arrive) at ratio `method.ratio` (1 for dense methods).

Lookup: a registered name; else the module `fedlora.methods.<name>` is imported (so a new file in
this folder needs no other edit); a method in any other module registers when it is imported.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

import jax.numpy as jnp

from fedlora.compress import get_compressor
from fedlora.compress.base import Compressor, CompressOut, check_bool
from fedlora.methods.base import Method, deliver_all, fixed_ratio_plan, no_plot, no_state
from fedlora.utils.plugins import import_if_present

ALLOCATIONS = ("default", "tsfa", "fixed")
BUILTIN = ("ideal", "soft", "topk", "randk", "svd", "ffa")
METHODS = BUILTIN  # the built-in names (`method_names()` adds any other registered method)


class MethodSpec(NamedTuple):
  name: str
  compressor: str                   # registered compressor name (fedlora.compress)
  freeze: str | None = None         # regex over trainable leaf paths kept frozen (never sent)
  penalty: Callable | None = None   # trainable -> scalar, added to the local loss
  penalty_key: str | None = None    # config.method key holding the penalty weight
  make_penalty: Callable | None = None  # (opt: key -> value) -> penalty, for a regulariser with
                                        #   options of its own (SOFT's ortho_b); instead of `penalty`
  reparam: Callable | None = None   # jittable trainable -> trainable map the server applies to the
                                    #   global model after every round when the bool config.method
                                    #   key `reparam_key` is True (SOFT's reorth); it must keep the
                                    #   model's function (fed.round.check_reparam)
  reparam_key: str | None = None    # that key (in `defaults`)
  rank_grid: bool = False           # the compressor keeps whole rank components (ρ -> m/r)
  allocation: str = "fixed"         # default allocation with the wireless uplink: 'tsfa' | 'fixed'
  dense: bool = False               # uploads are dense: the ratio is 1 whatever method.ratio says
  defaults: dict = {}               # own config.method keys and their defaults
  validate: Callable | None = None  # (method_section) -> None, raises ValueError


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
  if spec.allocation not in ("tsfa", "fixed"):
    raise ValueError(f"method {spec.name!r}: allocation={spec.allocation!r}; one of ('tsfa', 'fixed')")
  if spec.reparam is not None and spec.reparam_key not in spec.defaults:
    raise ValueError(f"method {spec.name!r}: reparam needs reparam_key, a bool key of its defaults; "
                     f"got {spec.reparam_key!r}")
  _REGISTRY[spec.name] = spec
  return spec


def get_spec(name: str) -> MethodSpec | None:
  if name not in _REGISTRY and isinstance(name, str) and re.fullmatch(r"\w+", name):
    import_if_present(f"fedlora.methods.{name}")
  return _REGISTRY.get(name)


def method_names() -> tuple:
  for n in BUILTIN:
    get_spec(n)
  return tuple(sorted(_REGISTRY))


def method_opt(config, spec: MethodSpec, key: str):
  """`config.method.<key>`, or the method file's default when the config lacks the key."""
  v = config.method.get(key, None) if hasattr(config.method, "get") else None
  return spec.defaults[key] if v is None else v


def not_sending(comp: Compressor, frozen_bits: float) -> Compressor:
  """Leaves the method keeps frozen (FFA's A) have a zero update and are never sent: their
  `frozen_bits` (as the dense compressor counts them) come off every upload and the payload model."""
  def update(state, delta, ratio, key, ref) -> CompressOut:
    out = comp.update(state, delta, ratio, key, ref)
    return out._replace(bits=out.bits - frozen_bits)

  def payload(trainable):
    c0, c1 = comp.payload(trainable)
    return c0 - frozen_bits, c1
  return Compressor(comp.init, update, payload)


def _leaf_sizes(tree):
  import jax
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    yield "/".join(str(getattr(k, "key", k)) for k in path), int(x.size)


def build_method(config, trainable=None) -> Method:
  """The method of `config.method.name`. `trainable` (the initial trainable tree) is needed for the
  bit accounting of frozen leaves and the downlink (0 bits without it)."""
  name = config.method.name
  spec = get_spec(name)
  if spec is None:
    raise ValueError(f"config.method.name={name!r} is not allowed: one of {method_names()}")
  if spec.validate is not None:
    spec.validate(config.method)
  weight = 0.0
  if spec.penalty is not None or spec.make_penalty is not None:
    weight = method_opt(config, spec, spec.penalty_key)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
      raise ValueError(f"config.method.{spec.penalty_key}={weight!r} is not allowed: a number >= 0")
    weight = float(weight)
  penalty = spec.penalty
  if spec.make_penalty is not None:
    penalty = spec.make_penalty(lambda key: method_opt(config, spec, key))
  reparam = None
  if spec.reparam is not None and check_bool("config.method", spec.reparam_key,
                                             method_opt(config, spec, spec.reparam_key)):
    reparam = spec.reparam
  allocation = config.method.allocation
  if allocation not in ALLOCATIONS:
    raise ValueError(f"config.method.allocation={allocation!r} is not allowed: one of {ALLOCATIONS}")
  allocation = spec.allocation if allocation == "default" else allocation
  ratio = 1.0 if spec.dense else config.method.ratio
  if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
    raise ValueError(f"config.method.ratio={ratio!r} is not allowed: a ratio in (0, 1]")
  comp = get_compressor(spec.compressor, config.compress)
  if comp.payload is None and config.wireless.enabled:
    raise ValueError(f"compressor {spec.compressor!r} (method {name!r}) declares no payload model "
                     "(Compressor.payload); the wireless uplink plans with it")

  q = config.compress.bits_per_value
  q_dl = config.compress.get("downlink_bits_per_value", 0) or q
  if isinstance(q_dl, bool) or not isinstance(q_dl, int) or q_dl not in (16, 32):
    raise ValueError(f"config.compress.downlink_bits_per_value={q_dl!r} is not allowed: 0 (= "
                     "bits_per_value), 16 or 32")
  pat = re.compile(spec.freeze) if spec.freeze else None
  sizes = list(_leaf_sizes(trainable)) if trainable is not None else []
  n_frozen = sum(n for p, n in sizes if pat is not None and pat.search(p))
  n_all = sum(n for _, n in sizes)
  if n_frozen:
    comp = not_sending(comp, float(n_frozen * q))
  # Downlink (ours): every round the server broadcasts the trainable leaves it updates to each
  # sampled client; leaves the method keeps frozen never change and are broadcast once, to all N
  # clients, before round 1 (counted in round 1's downlink, not in any latency).
  broadcast_bits = float((n_all - n_frozen) * q_dl)
  once_bits = float(n_frozen * q_dl * config.data.num_clients)
  uses_profile = bool(config.wireless.enabled) and allocation == "tsfa"
  profile_bits = 32.0 * config.lora.rank if uses_profile else 0.0

  common = dict(name=name, compressor=comp, freeze=spec.freeze, penalty=penalty,
                penalty_weight=weight, broadcast_bits=broadcast_bits, broadcast_once_bits=once_bits,
                profile_bits=profile_bits, allocation=allocation, reparam=reparam,
                reparam_key=f"config.method.{spec.reparam_key}" if reparam is not None else "")
  if not config.wireless.enabled:
    return Method(init_state=no_state, plan=fixed_ratio_plan(float(ratio)), deliver=deliver_all,
                  plot=no_plot, **common)
  from fedlora.methods.uplink import make_uplink
  init_state, plan, deliver, plot = make_uplink(
      config, comp, allocation=allocation, ratio=float(ratio), rank_grid=spec.rank_grid,
      broadcast_bits=broadcast_bits)
  return Method(init_state=init_state, plan=plan, deliver=deliver, plot=plot, **common)

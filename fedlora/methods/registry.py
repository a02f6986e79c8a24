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

Lookup: `METHODS` (fedlora.registry): a registered name; else the module `fedlora.methods.<name>`
is imported (a new file in this folder needs no other edit); a method in any other module registers
when it is imported. A method's own `method` keys are an options section passed as
`register_method(spec, options=...)`.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, NamedTuple

import numpy as np

from fedlora.compress import get_compressor
from fedlora.compress.base import Compressor, CompressOut
from fedlora.methods.base import Method, deliver_all, fixed_ratio_plan, no_plot, no_state
from fedlora.registry import Registry
from fedlora.section import Section, is_num

ALLOCATIONS = ("default", "tsfa", "fixed")
METHODS = Registry("method", "fedlora.methods", "method.name")


@dataclasses.dataclass(frozen=True)
class MethodConfig(Section):
  """Section `method` (plus the keys each method declares, fedlora/methods/<name>.py).

  name:       registered method: 'ideal' | 'soft' | 'topk' | 'randk' | 'svd' | 'ffa' (README: Methods)
  allocation: with wireless: 'default' (the method's own: soft -> tsfa, others -> fixed) | 'tsfa'
              (online ρ_k, b_k with the method's payload model) | 'fixed' (method.ratio, equal b)
  ratio:      sparsification ratio for 'fixed' allocation (and without wireless), in (0, 1]
  """
  SECTION = "method"
  COMPONENTS = staticmethod(lambda: METHODS)
  name: str = "ideal"
  allocation: str = "default"
  ratio: float = 0.25

  def check(self) -> None:
    METHODS.get(self.name)
    self.need(self.allocation in ALLOCATIONS, "allocation", f"one of {ALLOCATIONS}")
    self.need(is_num(self.ratio) and 0.0 < self.ratio <= 1.0, "ratio", "a ratio in (0, 1]")


class MethodSpec(NamedTuple):
  name: str
  compressor: str                   # registered compressor name (fedlora.compress)
  freeze: str | None = None         # regex over trainable leaf paths kept frozen (never sent)
  penalty: Callable | None = None   # trainable -> scalar, added to the local loss
  penalty_key: str | None = None    # key of its options holding the penalty weight
  make_penalty: Callable | None = None  # (opt: key -> value) -> penalty, for a regulariser with
                                        #   options of its own (SOFT's ortho_b); instead of `penalty`
  reparam: Callable | None = None   # jittable trainable -> trainable map the server applies to the
                                    #   global model after every round when the bool config.method
                                    #   key `reparam_key` is True (SOFT's reorth); it must keep the
                                    #   model's function (fed.round.check_reparam)
  reparam_key: str | None = None    # that key (of its options)
  rank_grid: bool = False           # the compressor keeps whole rank components (ρ -> m/r)
  allocation: str = "fixed"         # default allocation with the wireless uplink: 'tsfa' | 'fixed'
  dense: bool = False               # uploads are dense: the ratio is 1 whatever method.ratio says


def register_method(spec: MethodSpec, options=None) -> MethodSpec:
  """Registers `spec` under `spec.name`; `options`: its own `method` keys (a Section class)."""
  if spec.allocation not in ("tsfa", "fixed"):
    raise ValueError(f"method {spec.name!r}: allocation={spec.allocation!r}; one of ('tsfa', 'fixed')")
  keys = options.defaults() if options is not None else {}
  for what, key in (("reparam", spec.reparam_key if spec.reparam is not None else None),
                    ("penalty", spec.penalty_key if spec.penalty or spec.make_penalty else None)):
    if key is not None and key not in keys:
      raise ValueError(f"method {spec.name!r}: {what} needs {what}_key, a key of its options; got {key!r}")
  return METHODS.register(spec.name, options=options)(spec)


def get_spec(name: str) -> MethodSpec | None:
  return METHODS.get(name).obj if name in METHODS else None


def method_names() -> tuple:
  return METHODS.names()


def not_sending(comp: Compressor, freeze, bits_per_value: int) -> Compressor:
  """Leaves the method keeps frozen (FFA's A; `freeze` a compiled regex over leaf paths) have a zero
  update and are never sent: their bits (numel · q, as the dense compressor counts them, from the
  shapes of the tree at hand, so a client's own rank counts) come off every upload and the payload
  model."""
  def frozen_bits(tree) -> float:
    return float(sum(n for p, n in _leaf_sizes(tree) if freeze.search(p)) * bits_per_value)

  def update(state, delta, ratio, key, ref) -> CompressOut:
    out = comp.update(state, delta, ratio, key, ref)
    return out._replace(bits=out.bits - frozen_bits(delta))

  def payload(trainable):
    c0, c1 = comp.payload(trainable)
    return c0 - frozen_bits(trainable), c1
  return Compressor(comp.init, update, payload)


def _leaf_sizes(tree):
  import jax
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    yield "/".join(str(getattr(k, "key", k)) for k in path), int(np.prod(x.shape))


def build_method(config, trainable=None, client_ranks=None) -> Method:
  """The method of `config.method.name`. `trainable` (the initial trainable tree) is needed for the
  bit accounting of frozen leaves and the downlink (0 bits without it). `client_ranks`: `[N]` ranks
  of heterogeneous clients (fedlora/lora/hetrank.py) or None; TSFA's payload model and rank grid
  then use each client's own rank."""
  name = config.method.name
  spec = METHODS.get(name).obj
  opts = config.method.options(name) if METHODS.get(name).options is not None else None
  weight = 0.0
  if spec.penalty is not None or spec.make_penalty is not None:
    weight = float(getattr(opts, spec.penalty_key))
  penalty = spec.penalty
  if spec.make_penalty is not None:
    penalty = spec.make_penalty(lambda key: getattr(opts, key))
  reparam = None
  if spec.reparam is not None and getattr(opts, spec.reparam_key):
    reparam = spec.reparam
  allocation = config.method.allocation
  allocation = spec.allocation if allocation == "default" else allocation
  ratio = 1.0 if spec.dense else config.method.ratio
  comp = get_compressor(spec.compressor, config.compress)
  if comp.payload is None and config.wireless.enabled:
    raise ValueError(f"compressor {spec.compressor!r} (method {name!r}) declares no payload model "
                     "(Compressor.payload); the wireless uplink plans with it")

  q = config.compress.bits_per_value
  q_dl = config.compress.downlink_bits_per_value or q
  pat = re.compile(spec.freeze) if spec.freeze else None
  sizes = list(_leaf_sizes(trainable)) if trainable is not None else []
  n_frozen = sum(n for p, n in sizes if pat is not None and pat.search(p))
  n_all = sum(n for _, n in sizes)
  if n_frozen:
    comp = not_sending(comp, pat, q)
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
      broadcast_bits=broadcast_bits, client_ranks=client_ranks)
  return Method(init_state=init_state, plan=plan, deliver=deliver, plot=plot, **common)

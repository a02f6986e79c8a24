"""Client optimisers, found by name (`optim.name`): `make_optimizer(section, labels)`.

Each file registers `build(section) -> optax.GradientTransformation` (with the learning rate; the
round's client lr schedule scales its updates, fedlora/fed/local.py) with `OPTIMIZERS`, its own keys
as an options section beside it. The optimiser's state starts fresh every round (FedAvg convention).
"""
from __future__ import annotations

import dataclasses

import optax

from fedlora.registry import Registry
from fedlora.section import Section, is_num

OPTIMIZERS = Registry("client optimiser", "fedlora.optim", "optim.name")


@dataclasses.dataclass(frozen=True)
class OptimConfig(Section):
  """Section `optim` (plus the keys each client optimiser declares, fedlora/optim/<name>.py).

  name:      registered client optimiser: 'adamw' | 'sgd'
  lr:        client learning rate (> 0)
  grad_clip: global-norm gradient clipping (0 = off)
  """
  SECTION = "optim"
  COMPONENTS = staticmethod(lambda: OPTIMIZERS)
  name: str = "adamw"
  lr: float = 2e-3
  grad_clip: float = 1.0

  def check(self) -> None:
    OPTIMIZERS.get(self.name)
    self.need(is_num(self.lr) and self.lr > 0, "lr", "> 0")
    self.need(is_num(self.grad_clip) and self.grad_clip >= 0, "grad_clip", ">= 0 (0 = off)")


def make_optimizer(section: OptimConfig, labels=None) -> optax.GradientTransformation:
  """The client optimiser of `section` (clipped first when grad_clip > 0); leaves labelled 'freeze'
  (`lora.trainable_labels`, FFA-LoRA's A) get zero updates."""
  opt = OPTIMIZERS.get(section.name).obj(section)
  if section.grad_clip and section.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(section.grad_clip), opt)
  if labels is not None:
    opt = optax.multi_transform({"train": opt, "freeze": optax.set_to_zero()}, labels)
  return opt

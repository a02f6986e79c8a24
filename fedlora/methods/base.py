"""The interface every method implements, so the trainer wires all of them the same way.

A method decides (1) what a client trains (`freeze`: regex of trainable leaves kept fixed) and which
regulariser it adds (`penalty`), (2) how each client's upload is compressed (`compressor`, vmapped in
the client phase), and (3) what the uplink does in a round: `plan` picks per-client sparsification
ratios (and bandwidth) before training, `deliver` turns the payload bits into latencies and says which
uploads arrive. Method state (channel, TSFA queues) is a PyTree that the checkpoint holds.
Methods are declared in one file each (`fedlora/methods/<name>.py`, see registry.py).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax.numpy as jnp


class UplinkInputs(NamedTuple):
  """What a method's uplink reads of the run, fixed at build time (no other object is passed in)."""
  trainable: Any            # the initial trainable tree (payload models)
  frozen: Any               # the frozen base (compute FLOPs)
  num_examples: Any         # [N] training examples per client (aggregation weights)
  extra_upload_bits: float  # bits every upload carries besides the update (drift corrections)


class Method(NamedTuple):
  name: str
  compressor: Any                    # fedlora.compress.Compressor
  freeze: str | None                 # regex over trainable leaf paths kept frozen (None = none)
  penalty: Callable | None           # trainable -> scalar, added to the local loss
  penalty_weight: float
  init_state: Callable               # (UplinkInputs) -> PyTree of arrays
  plan: Callable                     # (mstate, ids [K], key, UplinkInputs) -> ({'ratio': [K], ...}, mstate)
  deliver: Callable                  # (mstate, plan, bits [K], profiles [K, r])
                                     #   -> (delivered [K] in {0,1}, mstate, record)
  plot: Callable                     # (records, workdir) -> None
  broadcast_bits: float = 0.0        # downlink bits per sampled client per round
  broadcast_once_bits: float = 0.0   # one-off downlink bits (frozen leaves to all N clients), round 1
  profile_bits: float = 0.0          # uplink bits of the importance profile per sampled client
  allocation: str = "fixed"          # 'tsfa' | 'fixed' (resolved from the method's default)
  reparam: Callable | None = None    # global trainable -> same model in other factor coordinates,
                                     #   applied by the server after every round (None = none)
  reparam_key: str = ""              # the config key that switched it on ("config.method.reorth")


def fixed_ratio_plan(ratio: float):
  """Every sampled client uses the same configured ratio; no channel."""
  def plan(mstate, ids, key, inputs):
    return {"ratio": jnp.full(ids.shape, ratio, jnp.float32)}, mstate
  return plan


def deliver_all(mstate, plan, bits, profiles):
  """Ideal uplink: every upload arrives, no latency recorded."""
  return jnp.ones(bits.shape, jnp.float32), mstate, {}


def no_state(inputs):
  return {"none": jnp.zeros((), jnp.float32)}


def no_plot(records, workdir):
  return None

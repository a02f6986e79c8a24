"""Client-drift corrections, found by name, chained before the client optimiser.

A correction acts on the gradient of the trainable tree at every local step, before the client
optimiser (so it composes with AdamW/SGD, clipping and FFA-LoRA's frozen leaves), and may keep
per-client and server state and upload a dense tree beside the update. Each file registers
`build(client_section, trainable, mask, num_clients) -> Correction | None` (None: switched off by its
own keys) with `DRIFTS`, its keys as an options section beside it (they live in the `client`
section). `build_drift` chains every switched-on correction in name order (fedprox before scaffold):

  client state  `client_states[c.client_key]` (leaves [N, ...], gathered/scattered with the rest)
  server state  `server_state[c.server_key]`; `c.context(state)` is broadcast to the round's clients
  local step    g <- c.correct(g, w, anchor) with anchor = c.anchor(w_global, context, client state)
  after E steps (new client state, upload) = c.finish(client state, mean raw gradient)
  server        state <- c.update_server(state, uploads [K, ...], delivered [K])
Uploads and downloads are dense at `compress.bits_per_value` bits per value (counted in the bits).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from fedlora.registry import Registry

DRIFTS = Registry("drift correction", "fedlora.drift", "client")


class Correction(NamedTuple):
  name: str
  correct: Callable                  # (grads, params, anchor) -> grads
  anchor: Callable                   # (global trainable, context, client state) -> anchor
  client_key: str | None = None      # key of its per-client state in client_states (None: none)
  server_key: str | None = None      # key of its server state (None: none)
  init_client: Callable | None = None   # trainable -> one client's state
  init_server: Callable | None = None   # trainable -> server state
  context: Callable | None = None    # server state -> what every sampled client receives
  finish: Callable | None = None     # (client state, mean raw gradient) -> (new client state, upload)
  update_server: Callable | None = None  # (server state, uploads [K, ...], delivered [K]) -> state
  upload_values: int = 0             # values of one upload (dense)
  download_values: int = 0           # values sent to each sampled client besides the model
  needs_grads: bool = False          # `finish` needs the mean raw gradient of the local steps


class Drift(NamedTuple):
  """The chained corrections of a run (empty: none)."""
  corrections: tuple = ()
  bits_per_value: int = 32

  @property
  def active(self) -> bool:
    return bool(self.corrections)

  @property
  def needs_grads(self) -> bool:
    return any(c.needs_grads for c in self.corrections)

  @property
  def downlink_values(self) -> int:
    """Values the server sends each sampled client besides the model."""
    return sum(c.download_values for c in self.corrections)

  @property
  def upload_bits(self) -> float:
    """Bits every client's upload carries besides the compressed update."""
    return float(sum(c.upload_values for c in self.corrections) * self.bits_per_value)

  def upload_bits_of(self, name: str) -> float:
    return float(sum(c.upload_values for c in self.corrections if c.name == name) * self.bits_per_value)

  def init_client(self, trainable) -> dict:
    return {c.client_key: c.init_client(trainable) for c in self.corrections if c.client_key}

  def init_server(self, trainable) -> dict:
    return {c.server_key: c.init_server(trainable) for c in self.corrections if c.server_key}

  def context(self, server_state) -> dict:
    """`{name: what the correction broadcasts}` for the corrections with a context."""
    return {c.name: c.context(server_state[c.server_key]) for c in self.corrections
            if c.context is not None}

  def anchor(self, global_tr, ctx: dict, cstate: dict) -> dict:
    return {c.name: c.anchor(global_tr, ctx.get(c.name), cstate.get(c.client_key))
            for c in self.corrections}

  def correct(self, grads, params, anchors: dict):
    for c in self.corrections:
      grads = c.correct(grads, params, anchors[c.name])
    return grads

  def finish(self, cstate: dict, grad_mean):
    """(new client-state entries, `{name: upload}` or None, upload bits [])."""
    new, uploads = {}, {}
    for c in self.corrections:
      if c.finish is not None:
        state, up = c.finish(cstate.get(c.client_key), grad_mean)
        if c.client_key:
          new[c.client_key] = state
        if up is not None:
          uploads[c.name] = up
    return new, (uploads or None), jnp.float32(self.upload_bits)

  def update_server(self, server_state: dict, uploads, delivered) -> dict:
    out = dict(server_state)
    for c in self.corrections:
      if c.update_server is not None:
        out[c.server_key] = c.update_server(server_state[c.server_key], uploads[c.name], delivered)
    return out


def mask_of(trainable, labels=None):
  """1.0 on trained leaves, 0.0 on frozen ones (`lora.trainable_labels`; None = all trained)."""
  if labels is None:
    return jax.tree_util.tree_map(lambda _: 1.0, trainable)
  return jax.tree_util.tree_map(lambda lab: 0.0 if lab == "freeze" else 1.0, labels)


def build_drift(client_section, trainable, labels=None, bits_per_value: int = 32,
                num_clients: int = 1) -> Drift:
  """Every registered correction its keys in `client_section` (the `client` section, fed.config's
  ClientConfig, or anything with its keys as attributes; None: no correction) switch on, in name
  order."""
  if client_section is None:
    return Drift((), int(bits_per_value))
  mask = mask_of(trainable, labels)
  out = []
  for name, entry in sorted(DRIFTS.entries().items()):
    c = entry.obj(client_section, trainable, mask, int(num_clients))
    if c is not None:
      out.append(c)
  return Drift(tuple(out), int(bits_per_value))


def trained_values(trainable, mask) -> int:
  """Entries of the trained leaves (the size of a dense upload of them)."""
  return sum(int(x.size) * int(m) for x, m in zip(jax.tree_util.tree_leaves(trainable),
                                                  jax.tree_util.tree_leaves(mask)))


__all__ = ["Any", "Correction", "DRIFTS", "Drift", "build_drift", "mask_of", "trained_values"]

"""The federated algorithm as an object that owns the round (fedjax's `init` / `apply`).

`make_algorithm(...) -> FederatedAlgorithm(init, apply)`:
  init()          -> the whole mutable run state (what a checkpoint holds): {'round', 'trainable',
                     'client_states' [N, ...], 'server', 'method', 'cum_bits'}
  apply(state, t) -> (state, record) for the 1-based round t: sample the clients, let the method plan
                     the uplink, run the client phase (how clients are mapped — vmap, chunks, devices —
                     is `fed.round`'s business), apply the non-finite policy, deliver (wireless
                     deadline drops), weight the delivered uploads by data size, take the server
                     step, and count every bit of the round by named component (`BIT_COMPONENTS`).
All randomness derives from `fold_in(PRNGKey(seed), t)`, so a resumed run is bit-identical to an
uninterrupted one. The record is what `metrics.jsonl` holds for the round (arrays as numpy).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedlora.fed.round import RoundFns
from fedlora.fed.sampling import sample_clients
from fedlora.methods.base import Method, UplinkInputs
from fedlora.run.errors import RunError

# Bits of a round, by named component (each reported as `<name>_bytes_round` and `cum_<name>_bytes`
# in metrics.jsonl, `cum_<name>_bytes` in summary.json; new components: add a name and its term):
#   uplink           payload of the uploads that arrived (what the server aggregates)
#   uplink_attempted payload of every upload sent, including those dropped at the deadline
#   profile          importance profiles the clients report for TSFA's next plan (32·r bits each)
#   downlink         broadcast of the global trainable tree to each sampled client at
#                    compress.downlink_bits_per_value (+ what the drift corrections broadcast, e.g.
#                    SCAFFOLD's c, at compress.bits_per_value; + one-off broadcasts: FFA's frozen A,
#                    round 1)
# The drift corrections' uploads (SCAFFOLD's Δc_i) are part of each client's payload.
BIT_COMPONENTS = ("uplink", "uplink_attempted", "profile", "downlink")


class FederatedAlgorithm(NamedTuple):
  init: Callable     # () -> state
  apply: Callable    # (state, t) -> (state, record)
  clients: Callable  # t -> (ids [K], plan key, clients' key): who takes part in round t, and its keys
  frozen: Callable = None  # state -> the frozen base of that state (FLoRA's merged base; else the base)


def round_bits(method: Method, drift, t: int, bits, delivered, sent=None) -> dict:
  """`{component: bits}` of round t (floats); `bits [K]` payloads, `delivered [K]` in {0, 1},
  `sent [K]` bool: the client uploaded at all (False for a non-finite client; default all)."""
  k = int(bits.shape[0])
  sent = jnp.ones(bits.shape, bool) if sent is None else jnp.asarray(sent, bool)
  return {"uplink": float(jnp.sum(bits * delivered)),
          "uplink_attempted": float(jnp.sum(jnp.where(sent, bits, 0.0))),
          "profile": method.profile_bits * k,
          "downlink": (method.broadcast_bits + drift.downlink_values * drift.bits_per_value) * k
                      + (method.broadcast_once_bits if t == 1 else 0.0)}


def make_algorithm(round_fns: RoundFns, method: Method, trainable, frozen, clients, *, seed: int,
                   clients_per_round: int, nonfinite: str, stop_hint: str = "") -> FederatedAlgorithm:
  """The algorithm over the built round functions and method.

  trainable: the initial trainable tree; frozen: the frozen base; clients: fedlora.data.ClientData
  (arrays [N, n_max, ...], num_examples [N]); nonfinite: 'stop' (raise RunError naming the round and
  clients; nothing is aggregated) | 'skip' (such clients get weight 0 and are counted);
  stop_hint: what the 'stop' message suggests (the settings to look at).
  """
  drift = round_fns.drift
  inputs = UplinkInputs(trainable, frozen, clients.num_examples, drift.upload_bits)
  num_clients = clients.num_clients

  def init() -> dict:
    states = round_fns.init_client_states(trainable, num_clients)  # {'compressor', [drift keys]}
    states = jax.tree_util.tree_map(jnp.array, states)  # own buffers: the client phase donates them
    return {"round": np.asarray(0, np.int32), "trainable": trainable, "client_states": states,
            "server": round_fns.init_server(trainable), "method": method.init_state(inputs),
            "cum_bits": {k: np.asarray(0.0, np.float64) for k in BIT_COMPONENTS}}

  def base(state):
    """The frozen base the clients train on (the aggregation rule's; FLoRA: W_0 + merged)."""
    return frozen if round_fns.base is None else round_fns.base(frozen, state["server"])

  def round_clients(t: int):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), t)
    k_sel, k_plan, k_clients = jax.random.split(key, 3)
    return sample_clients(k_sel, num_clients, clients_per_round), k_plan, k_clients

  def apply(state: dict, t: int) -> tuple[dict, dict]:
    ids, k_plan, k_clients = round_clients(t)
    plan, mstate = method.plan(state["method"], ids, k_plan, inputs)
    ctx = round_fns.context(state["server"], t)
    out, client_states = round_fns.client_phase(state["trainable"], base(state), clients, ids, k_clients,
                                                plan["ratio"], state["client_states"], ctx)
    finite = np.asarray(out.metrics["finite"])  # [K] per-client flag from the jitted client phase
    bad = np.asarray(ids)[~finite].tolist()
    if bad and nonfinite == "stop":
      raise RunError(
          f"round {t}: client(s) {bad} produced a non-finite (NaN/Inf) local loss or update "
          f"(losses {np.asarray(out.metrics['loss'])[~finite].tolist()}); the run stopped before "
          f"aggregating it, so the last checkpoint is intact. {stop_hint}Or set "
          "--config.fed.nonfinite=skip to leave such clients out of the round (weight 0, counted)")
    delivered, mstate, wireless = method.deliver(mstate, plan, out.bits, out.profile)
    delivered = delivered * jnp.asarray(finite, jnp.float32)  # a non-finite client sends nothing
    weights = clients.num_examples[ids].astype(jnp.float32) * delivered
    ranks = round_fns.client_ranks[ids] if round_fns.client_ranks is not None else None
    new_tr, server = round_fns.server_phase(state["trainable"], state["server"], out.delta, weights,
                                            t, out.control_delta, ranks)
    bits = round_bits(method, drift, t, out.bits, delivered, finite)
    cum = {k: np.asarray(float(state["cum_bits"][k]) + bits[k]) for k in BIT_COMPONENTS}
    loss, acc = np.asarray(out.metrics["loss"]), np.asarray(out.metrics["acc"])
    new_state = dict(state, round=np.asarray(t, np.int32), trainable=new_tr,
                     client_states=client_states, server=server, method=mstate, cum_bits=cum)
    record = {
        "round": t, "clients": ids, "client_loss": out.metrics["loss"],
        "train_loss": float(loss[finite].mean()) if finite.any() else float("nan"),
        "train_acc": float(acc[finite].mean()) if finite.any() else float("nan"),
        "nonfinite_clients": bad, "aggregated": int(np.sum(np.asarray(delivered) > 0)),
        "ratio": plan["ratio"], "uplink_bits": out.bits, "delivered": delivered,
        "client_lr_scale": float(ctx["lr_scale"]),
    }
    for c in drift.corrections:
      if c.upload_values:  # e.g. scaffold_uplink_bytes_round: its dense uploads that arrived
        record[f"{c.name}_uplink_bytes_round"] = (drift.upload_bits_of(c.name)
                                                  * float(delivered.sum()) / 8)
    for k in BIT_COMPONENTS:
      record[f"{k}_bytes_round"] = bits[k] / 8
      record[f"cum_{k}_bytes"] = float(cum[k]) / 8
    record.update(wireless)
    return new_state, record

  return FederatedAlgorithm(init, apply, round_clients, base)

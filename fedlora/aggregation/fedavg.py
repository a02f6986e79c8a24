"""'fedavg': the server averages ΔA and ΔB separately with `server.mean` (FedAvg of LoRA factors; the
paper's rule and the default). With heterogeneous ranks this is FedAvg with zero-padding: a client of
rank r_k contributes 0 to the components it does not hold, so a component held by few clients is
shrunk by the weight of those that do not hold it (compare 'hetlora'). No state."""
from __future__ import annotations

from fedlora.aggregation import AGGREGATIONS, Aggregation, Rule


def build(section, scale) -> Aggregation:
  def mean(global_tr, state, deltas, weights, masks, base_mean, lr):
    return base_mean(deltas, weights), state
  return Aggregation(lambda trainable: {}, mean)


AGGREGATIONS.register("fedavg")(Rule(build))

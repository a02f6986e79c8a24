"""Server optimisers, found by name (`server.name`): `build_server(section, total_rounds)`.

| name        | update of the global trainable tree (Δ̄ = weighted mean client update)  | state  |
|-------------|-------------------------------------------------------------------------|--------|
| fedavg      | + lr·Δ̄                                                                  | none   |
| fedavgm     | v = β·v + Δ̄; + lr·v                                                     | v      |
| fedadagrad  | Reddi et al. 2021: m, v += g²;            − lr·m/(√v + τ),  g = −Δ̄       | m, v   |
| fedadam     | Reddi et al. 2021: m, v = β2·v + (1−β2)g²; − lr·m/(√v + τ)              | m, v   |
| fedyogi     | Reddi et al. 2021: m, Yogi's v;           − lr·m/(√v + τ)              | m, v   |

Adding one: a file here that registers `build(section) -> optax.GradientTransformation` (the
direction, without lr) with `SERVERS`, its own keys as an options section beside it, and a test. The
shared keys (lr and its round schedule, the mean) are `ServerConfig` (fedlora/server/base.py).
"""
from fedlora.server.base import SERVERS, ServerConfig, ServerOptimizer, build_server

__all__ = ["SERVERS", "ServerConfig", "ServerOptimizer", "build_server"]

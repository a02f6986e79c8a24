"""Server-side re-orthogonalisation of the global LoRA factors (`method.reorth`, ours).

SOFT keeps the rank components with the largest s_i = ‖a_i‖·‖b_i‖, which are the singular values of
the product `a @ b` only when a's columns and b's rows are orthogonal. The local regulariser makes
them nearly so over many rounds (`fedlora/soft/ortho.py`), but not in the early rounds. With
`method.reorth=True` the server, after each round's update, rewrites every adapter's global factors
in the singular basis of their own product, exactly:

  `a: [d_in, r]`, `b: [r, d_out]`, `a @ b = U S Vᵀ` (rank r; computed WITHOUT forming the product:
  two thin QRs and the SVD of an r×r core, `fedlora.compress.svd.svd_rotation`, O((d_in + d_out)·r²
  + r³) per adapter, once per round at the server, never at a client);
  `a' = c·U`, `b' = S Vᵀ / c`, with `c = ‖a‖_F / √r` (a's RMS column norm, kept so the clients'
  learning dynamics keep their scale),

so `a' @ b' = a @ b` (the model is unchanged), a' has orthogonal columns of equal norm c and b'
orthogonal rows of norms σ_i / c: component i is (c·u_i, σ_i·v_iᵀ / c) and s_i = σ_i at the start
of every round. A rank-deficient product (round 1: b = 0) keeps an orthogonal completion (the extra
components carry zero product). Non-adapter leaves (the head) are unchanged.

This changes the coordinates of the factors, so it is refused with any state kept in those
coordinates across rounds: error feedback residuals, SCAFFOLD control variates, a server optimiser
with per-parameter moments (`fedlora.fed.round.check_reparam`). Clients' local optimiser state starts
fresh every round (`fed/local.py`), so it is unaffected.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedlora.compress.base import map_adapters
from fedlora.compress.svd import svd_rotation


def reorth_adapter(a: jax.Array, b: jax.Array, rcond: float = 1e-6, token=None):
  """`(a' [d_in, r], b' [r, d_out])` in the singular basis of `a @ b` (module docstring)."""
  r = a.shape[1]
  rot, rot_inv, _ = svd_rotation(a, b, rcond, token)
  c = jnp.linalg.norm(a) / jnp.sqrt(jnp.float32(r))
  c = jnp.where(c > 0, c, 1.0)
  return (a @ rot) * c, (rot_inv @ b) / c


def reorthogonalize(trainable):
  """Every adapter of `trainable` rewritten by `reorth_adapter`; other leaves unchanged. Jittable."""
  chain = [None]  # each adapter's LAPACK call waits for the previous one (compress/svd.py: _after)

  def one(a, b):
    a2, b2 = reorth_adapter(a, b, token=chain[0])
    chain[0] = a2
    return a2, b2
  return map_adapters(one, trainable)

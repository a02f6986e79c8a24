"""SOFT's near-orthogonality regulariser, added to the local loss with weight `soft.ortho_weight`.

Paper: R(A, B) = ‖A·Aᵀ − I_r‖_F² + ‖offdiag(Bᵀ·B)‖_F². In fedlora's layout (paper A = lora_aᵀ,
paper B = lora_bᵀ): A·Aᵀ = lora_aᵀ·lora_a and Bᵀ·B = lora_b·lora_bᵀ, both `[r, r]`.
Only the off-diagonal of the B Gram matrix is penalised (lora_b starts at 0 and must be free to grow).
Cost O((d_in + d_out)·r²) per adapter; no `lora_a @ lora_b` product.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedlora.compress.base import adapter_pairs


def adapter_ortho_penalty(a: jax.Array, b: jax.Array) -> jax.Array:
  """`‖aᵀa − I_r‖_F² + ‖offdiag(b bᵀ)‖_F²` for `a: [d_in, r]`, `b: [r, d_out]`; float32 scalar."""
  r = a.shape[1]
  ga = a.T @ a                         # [r, r]
  gb = b @ b.T                         # [r, r]
  eye = jnp.eye(r, dtype=ga.dtype)
  return jnp.sum(jnp.square(ga - eye)) + jnp.sum(jnp.square(gb * (1.0 - jnp.eye(r, dtype=gb.dtype))))


def ortho_penalty(trainable) -> jax.Array:
  """Σ over adapters of `adapter_ortho_penalty`; non-adapter leaves do not enter (zero gradient).

  Returns a float32 scalar (0.0 for a tree without adapters).
  """
  total = jnp.float32(0.0)
  for _, a, b in adapter_pairs(trainable):
    total = total + adapter_ortho_penalty(a, b).astype(jnp.float32)
  return total

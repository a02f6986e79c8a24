"""SOFT's near-orthogonality regulariser, added to the local loss with weight `method.ortho_weight`.

Paper (as reconstructed): R(A, B) = ‖A·Aᵀ − I_r‖_F² + ‖offdiag(Bᵀ·B)‖_F². In fedlora's layout
(paper A = lora_aᵀ, paper B = lora_bᵀ): A·Aᵀ = lora_aᵀ·lora_a and Bᵀ·B = lora_b·lora_bᵀ, both `[r, r]`.
Only the off-diagonal of the B Gram matrix is penalised (lora_b starts at 0 and must be free to grow).

`b_term` (config `method.ortho_b`, ours) chooses the B term:
  'gram'   ‖offdiag(b bᵀ)‖_F², as above. It scales with ‖b‖⁴: LoRA's B rows have norms ~1e-1, so
           the term is ~1e-4 of the A term and leaves B's rows almost parallel, and s_i = ‖a_i‖·‖b_i‖
           are then NOT the singular values of the product that SOFT's argument needs
           (benchmarks/bench_soft_alignment.py; figures in docs/method.md).
  'cosine' ‖offdiag(C)‖_F² with C_ij = (b_i·b_j) / (n_i n_j), n_i = sqrt(‖b_i‖² + eps²): the squared
           cosines between B's rows, scale-free, so it acts at any size of B (0 at B = 0).
Cost O((d_in + d_out)·r²) per adapter; no `lora_a @ lora_b` product.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedlora.compress.base import adapter_pairs

B_TERMS = ("gram", "cosine")
COSINE_EPS = 1e-4  # eps of n_i = sqrt(‖b_i‖² + eps²): keeps the cosine term smooth at b_i = 0


def _offdiag_sq(g: jax.Array) -> jax.Array:
  r = g.shape[0]
  return jnp.sum(jnp.square(g * (1.0 - jnp.eye(r, dtype=g.dtype))))


def adapter_ortho_penalty(a: jax.Array, b: jax.Array, b_term: str = "gram") -> jax.Array:
  """`‖aᵀa − I_r‖_F² + B term` for `a: [d_in, r]`, `b: [r, d_out]` (module docstring); float32 scalar."""
  if b_term not in B_TERMS:
    raise ValueError(f"ortho b_term={b_term!r}: allowed values are {B_TERMS}")
  r = a.shape[1]
  ga = a.T @ a                         # [r, r]
  gb = b @ b.T                         # [r, r]
  pa = jnp.sum(jnp.square(ga - jnp.eye(r, dtype=ga.dtype)))
  if b_term == "cosine":
    n = jnp.sqrt(jnp.diagonal(gb) + COSINE_EPS ** 2)
    gb = gb / (n[:, None] * n[None, :])
  return pa + _offdiag_sq(gb)


def ortho_penalty(trainable, b_term: str = "gram") -> jax.Array:
  """Σ over adapters of `adapter_ortho_penalty`; non-adapter leaves do not enter (zero gradient).

  Returns a float32 scalar (0.0 for a tree without adapters).
  """
  total = jnp.float32(0.0)
  for _, a, b in adapter_pairs(trainable):
    total = total + adapter_ortho_penalty(a, b, b_term).astype(jnp.float32)
  return total


def make_ortho_penalty(b_term: str = "gram"):
  """`trainable -> scalar`: `ortho_penalty` with its B term fixed (module docstring)."""
  if b_term not in B_TERMS:
    raise ValueError(f"config.method.ortho_b={b_term!r} is not allowed: one of {B_TERMS}")
  return lambda trainable: ortho_penalty(trainable, b_term)

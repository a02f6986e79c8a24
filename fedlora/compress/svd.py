"""'svd': sparsify in the singular basis of the client's product (the Eckart–Young choice).

Per adapter, with the round's global factors `(a0, b0)` (ref_tree) and the update `(da, db)`:
  1. local factors `a_loc = a0 + da: [d_in, r]`, `b_loc = b0 + db: [r, d_out]`; the SVD of their
     product `M = a_loc @ b_loc = U S Vᵀ` WITHOUT forming M: thin QRs `a_loc = Q T`,
     `b_locᵀ = Q_b T_b` give `M = Q (T T_bᵀ) Q_bᵀ`, so M's singular values are those of the r×r core
     `T T_bᵀ = U_c S V_cᵀ` and its top-r left singular vectors `U_r = Q U_c`. Cost
     O((d_in + d_out)·r² + r³) per adapter, like SOFT's norms up to a factor r (measured:
     `benchmarks/bench_soft_vs_svd.py`); the result equals the update from the SVD of the full product
     to float rounding (tests/test_compress.py compares with numpy's SVD of M).
  2. change of basis R: `[r, r]` with `a' = a_loc·R`, `b' = R⁻¹·b_loc`, `a'·b' = M`, component i of
     (a', b') = (u_i, σ_i v_iᵀ) for every nonzero singular value σ_i:
        a_loc = Q T (thin QR),  G = Qᵀ U_r,  W = qr(G).Q (orthogonal r×r),
        R = T⁻¹ W,  R⁻¹ = Wᵀ T   (exact inverses of each other; no inversion of S anywhere).
     Since col(M) ⊆ col(a_loc) = col(Q), the first rank(M) columns of G are orthonormal and W keeps them
     (up to sign); QR completes them to an orthogonal W, so R stays invertible when M is rank-deficient
     (round 1: b0 = 0 and a rank-deficient db) — the trailing components then carry zero product.
     If a_loc itself is (near) rank-deficient, T's diagonal is floored at `rcond·max|T_ii|`
     (regularised, still an exact pair R, R⁻¹).
  3. rotate the *update* into that basis (`da' = da·R`, `db' = R⁻¹·db`), keep the top m = ceil(ρ·r)
     components by singular value (mask, ties to the lower index), rotate back
     (`da_sent = da'_kept·R⁻¹`, `db_sent = R·db'_kept`) so the server's factor-wise aggregation is
     unchanged. At ρ = 1 this reproduces the dense update (to float error ~ cond(T)).
     With ref = 0 the sent product `da_sent @ db_sent` is the best rank-m approximation of M.
Payload per adapter: `m·(d_in + d_out)·q + r²·q (R) + r (mask)`; dense leaves numel·q.
Payload model: c1 = r·Σ(d_in + d_out)·q, c0 = Σ(r²·q + r) + dense bits; exact where ρ·r is an integer.
Profile: the singular values σ_i of the local product it selects by, pooled as sorted σ_i².
Requires r ≤ min(d_in, d_out). Needs ref_tree.
(With bits_per_value = 16 the rotated kept values are rounded through bfloat16; R's own rounding is
not simulated.)

Config keys: `Options` below (section `compress`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from fedlora.compress import COMPRESSORS
from fedlora.compress.base import (Compressor, adapter_pairs, build_compressor, compress_by_parts,
                                   dense_bits_of, dense_rule, num_keep, path_str, quantize,
                                   require_ref, sorted_mass, top_mask)
from fedlora.section import Section, is_num


@dataclasses.dataclass(frozen=True)
class Options(Section):
  """Keys of 'svd' (section `compress`).

  rcond: floor on |T_ii| relative to max|T_ii| of the thin QRs (a number in [0, 1))
  """
  SECTION = "compress"
  rcond: float = 1e-6

  def check(self) -> None:
    self.need(is_num(self.rcond) and 0.0 <= self.rcond < 1.0, "rcond", "a number in [0, 1)")


def _after(x, token):
  """`x`, made to depend on `token` (None: unchanged), so XLA cannot run them concurrently.

  Why: jaxlib's CPU LAPACK kernels (QR, SVD) split a vmapped batch over the intra-op thread pool
  and block on it; two such custom calls running at once can each hold a pool thread while waiting
  for the other's work, which deadlocks on small pools (seen on 2 cores: vmapped over 10 clients
  with 12 adapters, every run hung in `QrFactorizationKernel`/`ParallelBatchMap`). Chaining the
  calls with `optimization_barrier` data dependencies serialises them; each stays batched.
  """
  if token is None:
    return x
  return jax.lax.optimization_barrier((x, token))[0]


def thin_qr(a: jax.Array):
  """Thin QR `a = q @ t` (`a: [n, r]`, `q: [n, r]` orthonormal columns, `t: [r, r]` upper triangular
  with a non-negative diagonal) by Gram-Schmidt with one re-orthogonalisation pass ("twice is
  enough", CGS2), one column per iteration of a `lax.fori_loop` (the columns not yet made are zero,
  so `qᵀ v` projects on the finished ones only).

  Pure jnp: it replaces `jnp.linalg.qr`, whose batched CPU LAPACK kernel deadlocked under `vmap` on
  a 2-core pool (see `_after`). A loop, not a Python-unrolled double loop over columns: unrolled,
  the compile took 68 s at r = 64 (12 s at r = 32). A zero column gives a zero q column and
  t[j, j] = 0, which `svd_rotation` regularises.
  """
  n, r = a.shape

  def column(j, qt):
    q, t = qt
    v = jax.lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
    c = jnp.zeros((r,), a.dtype)
    for _ in range(2):
      ci = q.T @ v
      v = v - q @ ci
      c = c + ci
    nv = jnp.linalg.norm(v)
    qj = jnp.where(nv > 0, v / jnp.where(nv > 0, nv, 1.0), 0.0)
    q = jax.lax.dynamic_update_index_in_dim(q, qj, j, axis=1)
    t = jax.lax.dynamic_update_index_in_dim(t, c.at[j].set(nv), j, axis=1)
    return q, t
  return jax.lax.fori_loop(0, r, column, (jnp.zeros((n, r), a.dtype), jnp.zeros((r, r), a.dtype)))


def svd_rotation(a_loc: jax.Array, b_loc: jax.Array, rcond: float = 1e-6, token=None):
  """`(R [r, r], R_inv [r, r], sigma [r])` aligning components of (a_loc, b_loc) to M's SVD.

  `token`: any array the LAPACK calls here must wait for (see `_after`); the last of them can be
  chained on through `R`.
  """
  q, t = thin_qr(a_loc)                                        # a_loc = Q T: [d_in, r], [r, r]
  qb, tb = thin_qr(b_loc.T)                                    # b_locᵀ = Q_b T_b: [d_out, r], [r, r]
  # M = Q (T T_bᵀ) Q_bᵀ: M's top-r left singular vectors are Q·U_c and its singular values those of
  # the r×r core (the only LAPACK call here), never forming M [d_in, d_out]
  u_c, s, _ = jnp.linalg.svd(_after(t @ tb.T, token))          # [r, r], [r]
  u = q @ u_c                                                  # [d_in, r]
  d = jnp.diagonal(t)
  floor = rcond * jnp.max(jnp.abs(d)) + jnp.finfo(t.dtype).tiny
  d_reg = jnp.where(jnp.abs(d) < floor, jnp.where(d >= 0, 1.0, -1.0) * floor, d)
  t = t + jnp.diag(d_reg - d)
  w, _ = thin_qr(q.T @ u)                                      # orthogonal [r, r] (= U_c when Q is)
  rot = solve_triangular(t, w, lower=False)                    # T⁻¹ W
  rot_inv = w.T @ t                                            # Wᵀ T
  return rot, rot_inv, s


def svd_sparsify_adapter(da, db, a_loc, b_loc, ratio, bits_per_value: int = 32,
                         rcond: float = 1e-6, simulate_quantization: bool = True, token=None):
  """`(da_sent [d_in, r], db_sent [r, d_out], mask [r], sigma [r])` for update `(da, db)` of local
  factors `(a_loc [d_in, r], b_loc [r, d_out])` (normally ref + delta) — see module docstring."""
  r = da.shape[1]
  rot, rot_inv, sig = svd_rotation(a_loc, b_loc, rcond, token)
  mask = top_mask(sig, num_keep(ratio, r))
  da_rot = quantize(da @ rot, bits_per_value, simulate_quantization)       # [d_in, r]
  db_rot = quantize(rot_inv @ db, bits_per_value, simulate_quantization)   # [r, d_out]
  da_sent = jnp.where(mask[None, :], da_rot, 0.0) @ rot_inv
  db_sent = rot @ jnp.where(mask[:, None], db_rot, 0.0)
  return da_sent, db_sent, mask, sig


def svd_compressor(bits_per_value: int = 32, error_feedback: bool = False, rcond: float = 1e-6,
                   simulate_quantization: bool = True) -> Compressor:
  """SVD-basis rank sparsification (see module docstring). `kept`: bool mask `[r]` per adapter."""
  q = bits_per_value

  def compress_tree(target, ratio, key, ref, delta):
    require_ref(ref, "svd compressor")
    chain = [None]  # per trace: each adapter's LAPACK calls wait for the previous adapter's (_after)

    def adapter_rule(path, da, db, ref_pair, delta_pair):
      (a0, b0), (ua, ub) = ref_pair, delta_pair
      d_in, r = da.shape
      d_out = db.shape[1]
      if r > min(d_in, d_out):
        raise ValueError(f"svd compressor: adapter {path_str(path)} has r={r} > min(d_in, d_out)="
                         f"{min(d_in, d_out)}")
      # local factors are ref + raw delta; the (possibly EF-augmented) target is what gets rotated
      sa, sb, mask, sig = svd_sparsify_adapter(da, db, a0 + ua, b0 + ub, ratio, q, rcond,
                                          simulate_quantization, chain[0])
      chain[0] = sa
      sent = (sa, sb)
      m = mask.sum().astype(jnp.float32)
      bits = m * float((d_in + d_out) * q) + float(r * r * q + r)
      return sent, bits, mask, sorted_mass(sig)

    dense = dense_rule(q, simulate_quantization)
    return compress_by_parts(target, adapter_rule, lambda p, x, *rest: dense(p, x), ref, delta)

  def payload(trainable):
    pairs = adapter_pairs(trainable)
    c1 = float(sum(a.shape[1] * (a.shape[0] + b.shape[1]) for _, a, b in pairs) * q)
    c0 = float(sum(a.shape[1] ** 2 * q + a.shape[1] for _, a, b in pairs))
    return dense_bits_of(trainable, q) + c0, c1

  return build_compressor(compress_tree, error_feedback, payload)


@COMPRESSORS.register("svd", options=Options)
def build(section):
  return svd_compressor(section.bits_per_value, section.error_feedback, float(section.rcond),
                        section.simulate_quantization)

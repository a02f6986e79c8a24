"""'orthogonal' (SOFT): orthonormal columns, A^T A = I_r (A A^T = I_r in the paper's layout)."""
import jax
import jax.numpy as jnp

from fedlora.lora.inits import LORA_INITS


@LORA_INITS.register("orthogonal")
def init(key, d_in: int, r: int, cfg=None):
  return jax.nn.initializers.orthogonal()(key, (d_in, r), jnp.float32)

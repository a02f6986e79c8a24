"""'gaussian' (PEFT's 'gaussian'): A ~ N(0, 1/r)."""
import jax
import jax.numpy as jnp

from fedlora.lora.inits import LORA_INITS


@LORA_INITS.register("gaussian")
def init(key, d_in: int, r: int, cfg=None):
  return jax.random.normal(key, (d_in, r), jnp.float32) / r

"""'kaiming' (PEFT's default): kaiming_uniform(a=sqrt(5)), i.e. A ~ U(-1/sqrt(d_in), 1/sqrt(d_in))."""
import math

import jax
import jax.numpy as jnp

from fedlora.lora.inits import LORA_INITS


@LORA_INITS.register("kaiming")
def init(key, d_in: int, r: int, cfg=None):
  bound = 1.0 / math.sqrt(d_in)
  return jax.random.uniform(key, (d_in, r), jnp.float32, -bound, bound)

"""'ffa': FFA-LoRA — A stays at its initial value (frozen), clients train and send B and the head
densely. A is never uploaded; it is broadcast once to all clients before round 1 (registry.py)."""
from fedlora.methods.registry import MethodSpec, register_method

register_method(MethodSpec(name="ffa", compressor="none", freeze="lora_a$", dense=True,
                           allocation="fixed"))

"""'randk': random-k of A and B separately from a shared seed (baseline), fixed ratio by default."""
from fedlora.methods.registry import MethodSpec, register_method

register_method(MethodSpec(name="randk", compressor="randk", allocation="fixed"))

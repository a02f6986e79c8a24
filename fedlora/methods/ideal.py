"""'ideal': dense uploads of A, B and the head (the reference without compression)."""
from fedlora.methods.registry import MethodSpec, register_method

register_method(MethodSpec(name="ideal", compressor="none", dense=True, allocation="fixed"))

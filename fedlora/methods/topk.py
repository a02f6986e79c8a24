"""'topk': magnitude top-k of A and B separately (baseline), fixed ratio by default."""
from fedlora.methods.registry import MethodSpec, register_method

register_method(MethodSpec(name="topk", compressor="topk", allocation="fixed"))

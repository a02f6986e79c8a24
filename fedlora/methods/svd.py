"""'svd': rank truncation in the SVD basis of the local product (the costly reference SOFT avoids),
fixed ratio by default."""
from fedlora.methods.registry import MethodSpec, register_method

register_method(MethodSpec(name="svd", compressor="svd", rank_grid=True, allocation="fixed"))

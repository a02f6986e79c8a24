"""Federated fine-tuning methods behind one interface (`config.method.name` selects one)."""
from fedlora.methods.base import Method
from fedlora.methods.registry import (METHODS, MethodSpec, build_method, get_spec, method_names,
                                      register_method)

__all__ = ["METHODS", "Method", "MethodSpec", "build_method", "get_spec", "method_names", "register_method"]

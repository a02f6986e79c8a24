"""Federated fine-tuning methods behind one interface (`config.method.name` selects one)."""
from fedlora.methods.base import Method
from fedlora.methods.registry import MethodSpec, build_method, get_spec, method_names, register_method

__all__ = ["Method", "MethodSpec", "build_method", "get_spec", "method_names", "register_method"]

"""Federated fine-tuning methods behind one interface (`config.method.name` selects one)."""
from fedlora.methods.base import Method
from fedlora.methods.registry import METHODS, build_method

__all__ = ["Method", "METHODS", "build_method"]

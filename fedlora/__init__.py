"""fedlora: JAX-native wireless federated LoRA fine-tuning (SOFT sparsification + TSFA allocation)."""
__version__ = "0.1.0"

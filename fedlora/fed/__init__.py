"""Federated rounds: client sampling, vmapped local training, aggregation, communication accounting."""

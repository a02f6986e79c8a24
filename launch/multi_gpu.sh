#!/usr/bin/env bash
# All GPUs of one host, one process: the 'clients' mesh axis spans them (mesh.num_devices=0 = all).
# Needs jax[cuda12]==0.10.2 in the venv (see launch/gpu.sh). For a model that does not fit one GPU
# add --config.mesh.model=2 --config.mesh.shard_frozen=True (frozen base split over 2 GPUs).
#   bash launch/multi_gpu.sh --config.fed.clients_per_round=256 [...]
source "$(dirname "$0")/env.sh"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
python -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else
  "error: jax sees no GPU; install jax[cuda12]==0.10.2 into the venv (see launch/gpu.sh)")'
exec python -m fedlora --config.mesh.num_devices=0 "$@"

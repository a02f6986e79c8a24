#!/usr/bin/env bash
# One GPU. env.sh installs the pinned CPU jax; for a GPU install the CUDA build into the same venv
# once (needs internet and an NVIDIA driver >= 550):  .venv/bin/pip install "jax[cuda12]==0.10.2"
# Then:  bash launch/gpu.sh [--config configs/bbc_minilm.py] [--config.fed.clients_per_round=64 ...]
source "$(dirname "$0")/env.sh"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # let memory_stats() report what the run really uses
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
python -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else
  "error: jax sees no GPU; install jax[cuda12]==0.10.2 into the venv (see launch/gpu.sh)")'
exec python -m fedlora "$@"

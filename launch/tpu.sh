#!/usr/bin/env bash
# TPU VM or pod slice: run the SAME command on every worker of the slice, e.g.
#   gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all \
#     --command="cd fedlora && bash launch/tpu.sh --config configs/bbc_minilm.py --config.workdir=gs://..."
# Install the TPU build into the venv once per worker:  .venv/bin/pip install "jax[tpu]==0.10.2"
# A single TPU VM is one process (no coordinator); on a pod slice jax.distributed.initialize()
# detects the workers ('auto'). bf16 matmuls suit TPUs: --config.model.compute_dtype=bfloat16.
source "$(dirname "$0")/env.sh"
python -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "tpu" else
  "error: jax sees no TPU; install jax[tpu]==0.10.2 into the venv (see launch/tpu.sh)")'
if [ "${TPU_WORKER_HOSTNAMES:-}" != "" ] && [ "$(echo "$TPU_WORKER_HOSTNAMES" | tr ',' '\n' | wc -l)" -gt 1 ]; then
  exec python -m fedlora --config.mesh.coordinator_address=auto "$@"
fi
exec python -m fedlora "$@"

#!/usr/bin/env bash
# Multi-host, plain: run this ON EVERY HOST with the same arguments, changing only PROCESS_ID.
#   COORDINATOR=host0:12355 NUM_PROCESSES=2 PROCESS_ID=0 bash launch/multihost.sh --config ... (host 0)
#   COORDINATOR=host0:12355 NUM_PROCESSES=2 PROCESS_ID=1 bash launch/multihost.sh --config ... (host 1)
# Every host needs the same checkout and venv (with jax[cuda12]==0.10.2 on GPU hosts) and a shared
# config.workdir (orbax writes the checkpoint from all processes; process 0 writes metrics/plots).
# On CPU hosts (testing) JAX_PLATFORMS=cpu selects gloo collectives.
source "$(dirname "$0")/env.sh"
: "${COORDINATOR:?set COORDINATOR=host:port of process 0}" "${NUM_PROCESSES:?}" "${PROCESS_ID:?}"
export FEDLORA_COORDINATOR="$COORDINATOR" FEDLORA_NUM_PROCESSES="$NUM_PROCESSES" FEDLORA_PROCESS_ID="$PROCESS_ID"
exec python -m fedlora "$@"

#!/usr/bin/env bash
# Runs an experiment end to end: `bash launch/run.sh [--config configs/x.py] [--config.key=value ...]`
# (default: configs/bbc_minilm.py). Creates/reuses .venv first.
source "$(dirname "$0")/env.sh"
args=("$@")
case " ${args[*]-} " in *" --config="*|*" --config "*) ;; *) args=(--config configs/bbc_minilm.py "${args[@]}");; esac
exec python -m fedlora "${args[@]}"

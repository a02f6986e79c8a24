#!/usr/bin/env bash
# Runs the test suite (fast tests; slow ones: add `-m slow`). Creates/reuses .venv first.
source "$(dirname "$0")/env.sh"
exec python -m pytest -q "$@"

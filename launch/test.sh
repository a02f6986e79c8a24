#!/usr/bin/env bash
# Runs the test suite (fast tests; slow ones: add `-m slow`). Creates/reuses .venv first.
# Tests run in parallel worker processes (pytest-xdist), one per core up to 4; `-n 0` runs them in
# this process (e.g. `bash launch/test.sh -n 0 tests/test_fed.py -k chunk`).
source "$(dirname "$0")/env.sh"
workers="$(python -c 'import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))')"
exec python -m pytest -q -n "$workers" "$@"

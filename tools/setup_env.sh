#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install mmseg-uda as the
# README's install section says (CPU torch 2.13.0 unless a CUDA torch is
# already installed in it; mmcv-lite for both). Sourced by tools/run_demo.sh and
# tools/run_tests.sh. VENV overrides the location (default: .venv).
# Reinstalls when the requirement files change (hash stamp in the venv).
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
STAMP="$VENV/.mmseg_uda_requirements"
WANT=$(cat requirements.txt requirements/*.txt setup.py | sha256sum | cut -d' ' -f1)
if [ "${FORCE_INSTALL:-0}" = 1 ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] \
    || ! python -c "import mmseg_uda" >/dev/null 2>&1; then
  # torch first and separately (requirements.txt never installs it). A CUDA
  # build already in the environment (VENV pointing at a GPU venv) is kept;
  # otherwise (a fresh venv, CI) the pinned CPU wheel is installed.
  if python -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" \
      >/dev/null 2>&1; then
    echo "[setup] keeping the installed CUDA torch" \
      "$(python -c 'import torch; print(torch.__version__)')"
  else
    echo "[setup] installing torch (CPU) first"
    pip install -q torch==2.13.0
  fi
  echo "[setup] installing requirements.txt and the package"
  pip install -q -r requirements.txt
  pip install -q --no-build-isolation --no-deps -e .
  echo "$WANT" > "$STAMP"
fi

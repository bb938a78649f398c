#!/usr/bin/env bash
# Creates .venv and installs lodotune into it with the versions in constraints.txt.
# Without an NVIDIA GPU it installs the CPU build of torch first, so nothing pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${1:-}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
TORCH=$(grep -E '^torch==' constraints.txt | cut -d= -f3)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" "torch==$TORCH"
  else
    # A local CPU wheel (find-links) is taken first; the CPU index is the fallback elsewhere.
    "${PIP[@]}" "torch==$TORCH" 2>/dev/null \
      || "${PIP[@]}" "torch==$TORCH" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"${PIP[@]}" -c constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"

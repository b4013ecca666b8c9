#!/usr/bin/env bash
# Create .venv (Python 3.11) and install facerep-core, every plugin and the test tools, editable,
# with the tested pins. Idempotent: a second call only re-checks the installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
pkgs=(-e "core[tensorboard]")
# optional extras the test suite exercises (binary wheels only)
declare -A EXTRAS=([plugins/facerep-pros/]="[detect]" [plugins/facerep-lafs/]="[dlib]")
for p in plugins/*/ integration_tests/plugins/*/; do
  [ -f "$p/pyproject.toml" ] && pkgs+=(-e "$p${EXTRAS[$p]:-}")
done
# torch first, by exact pin: an unpinned torch would pull a multi-GB download.
.venv/bin/python -m pip install -q -c constraints.txt "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -c constraints.txt "${pkgs[@]}" pytest nox
.venv/bin/facerep plugins check

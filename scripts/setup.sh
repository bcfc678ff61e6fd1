#!/usr/bin/env bash
# Set up the environment MMKD runs in; safe to run again (it only installs what is missing).
#   bash scripts/setup.sh                  -> creates ./.venv (python3 -m venv) and installs into it
#   MMKD_PYTHON=$(which python) bash scripts/setup.sh
#                                          -> installs into an existing environment (e.g. one with a
#                                             CUDA build of torch, which is kept as it is)
# torch goes in first: torch==2.13.0 when no torch is present (on a CPU-only machine pip finds the
# local CPU wheel), so that the open `torch>=2.4` of requirements.txt never pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${MMKD_PYTHON:-}" ]]; then
  py="$MMKD_PYTHON"
else
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  py=.venv/bin/python
fi
stamp="$("$py" -c 'import sys; print(sys.prefix)')/.mmkd-setup-$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)"
if [[ -f "$stamp" ]]; then
  exit 0
fi
if ! "$py" -c 'import torch' 2>/dev/null; then
  "$py" -m pip install --quiet "torch==2.13.0"
fi
# the package (editable, provides the `mmkd` command), requirements.txt, and the test extra (pytest, and
# triton: the kernel tests run it in its interpreter on CPU)
"$py" -m pip install --quiet -e ".[test]"
touch "$stamp"
"$py" -c 'import torch, deepspeed, transformers; print(f"mmkd env ready: torch {torch.__version__}, deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")'

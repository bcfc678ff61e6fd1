#!/usr/bin/env bash
# The main job on a fresh machine: set up the environment (scripts/setup.sh), then `mmkd pipeline`
# on the offline defaults. Extra arguments go to `mmkd pipeline` (see `mmkd pipeline --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [[ -n "${MMKD_PYTHON:-}" ]]; then
  exec "$MMKD_PYTHON" -m mmkd pipeline "$@"
fi
exec .venv/bin/mmkd pipeline "$@"

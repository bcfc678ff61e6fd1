#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up the environment (scripts/setup.sh), lint (ruff, its
# rules in pyproject.toml), then pytest, which lists the 25 slowest tests at the end (the suite is kept
# well under 20 minutes on 2 cores). Extra arguments go to pytest
# (e.g. `bash scripts/test.sh tests/test_corpus_cleaning.py -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
py="${MMKD_PYTHON:-.venv/bin/python}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$py" -m ruff check .
exec "$py" -m pytest --durations=25 "${@:-tests}"

#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up the environment (scripts/setup.sh), lint (ruff, its
# rules in pyproject.toml), then pytest in MMKD_TEST_WORKERS processes (pytest-xdist, default 2; a test
# module stays in one, so its module fixtures are built once), which lists the 25 slowest tests at the
# end (the suite is kept well under 20 minutes on 2 cores). Extra arguments go to pytest
# (e.g. `bash scripts/test.sh tests/test_corpus_cleaning.py -x`; MMKD_TEST_WORKERS=0: one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
py="${MMKD_PYTHON:-.venv/bin/python}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$py" -m ruff check .
exec "$py" -m pytest -n "${MMKD_TEST_WORKERS:-2}" --dist loadfile --durations=25 "${@:-tests}"

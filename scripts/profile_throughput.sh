#!/usr/bin/env bash
# Profile training throughput: `mmkd profile` (mmkd/profiling.py) through scripts/launch.sh.
#
#   scripts/profile_throughput.sh RECIPE --report DIR [--steps N] [--warmup W] [--key=value ...]
#   NUM_PROCS=2 scripts/profile_throughput.sh RECIPE --report DIR ...     2 ranks (communication shows)
#
# Writes DIR/report.md, report.json, flops_profiler.txt, torch_ops.txt (rank 0) and prints a SUMMARY
# line. Every variable of scripts/launch.sh applies (NUM_PROCS, HOSTFILE, MASTER_PORT, DRY_RUN, ...).
set -euo pipefail
[[ $# -ge 1 ]] || { sed -n '2,8p' "$0"; exit 2; }
MODULE=mmkd.profiling exec "$(dirname "$0")/launch.sh" "$@"

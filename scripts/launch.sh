#!/usr/bin/env bash
# Launch `mmkd.train` with the DeepSpeed launcher: one process, one node, or many nodes.
#
#   scripts/launch.sh RECIPE [--key=value ...]        one node: every local GPU (1 rank on a CPU)
#   NUM_PROCS=2 scripts/launch.sh RECIPE ...          one node, 2 ranks (on CPU: gloo, 1 thread each)
#   HOSTFILE=scripts/hostfile.example scripts/launch.sh RECIPE ...
#                                                     many nodes from one shell (ssh/pdsh to the hosts)
#   NO_SSH=1 NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 scripts/launch.sh RECIPE ...
#                                                     many nodes, no ssh: run it on every node with
#                                                     its NODE_RANK (what scripts/slurm_mmkd.sbatch does)
# Other variables: MASTER_PORT (default 29500), PYTHON (default .venv/bin/python or python3),
# MODULE (default mmkd.train; mmkd.profiling: scripts/profile_throughput.sh), DRY_RUN=1 prints the
# command instead of running it. RECIPE is a JSON/YAML train config (see `mmkd train --help`);
# `--key=value` overrides follow it.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n '2,17p' "$0"; exit 2; }

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
launcher=("$python" -m deepspeed.launcher.runner --master_port "${MASTER_PORT:-29500}")
has_gpu=$("$python" -c 'import torch; print(int(torch.cuda.is_available()))')

if [[ -n "${HOSTFILE:-}" ]]; then
  [[ -f "$HOSTFILE" ]] || { echo "launch.sh: HOSTFILE=$HOSTFILE does not exist" >&2; exit 2; }
  launcher+=(--hostfile "$HOSTFILE")
  [[ -n "${MASTER_ADDR:-}" ]] && launcher+=(--master_addr "$MASTER_ADDR")
  if [[ -n "${NO_SSH:-}" ]]; then
    : "${NODE_RANK:?NO_SSH needs NODE_RANK (index of this node in HOSTFILE)}"
    launcher+=(--no_ssh --node_rank "$NODE_RANK")
  fi
elif [[ -n "${NO_SSH:-}" ]]; then
  : "${NNODES:?NO_SSH needs NNODES}" "${NODE_RANK:?NO_SSH needs NODE_RANK}" "${MASTER_ADDR:?NO_SSH needs MASTER_ADDR}"
  # Without a hostfile the launcher cannot count ranks per node: give it one describing this node.
  hostfile=$(mktemp)
  trap 'rm -f "$hostfile"' EXIT
  for ((node = 0; node < NNODES; node++)); do
    echo "node$node slots=${NUM_PROCS:-$("$python" -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"
  done > "$hostfile"
  launcher+=(--hostfile "$hostfile" --no_ssh --node_rank "$NODE_RANK" --num_nodes "$NNODES" --master_addr "$MASTER_ADDR")
else
  [[ -n "${NUM_PROCS:-}" ]] && launcher+=(--num_gpus "$NUM_PROCS")
fi

if [[ "$has_gpu" == 0 ]]; then
  # CPU ranks: split the cores between the ranks of this node; bind each rank to its cores when
  # numactl is there (DeepSpeed's --bind_cores_to_rank needs it).
  procs="${NUM_PROCS:-1}"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / procs > 0 ? $(nproc) / procs : 1 ))}"
  command -v numactl >/dev/null && launcher+=(--bind_cores_to_rank)
fi

command=("${launcher[@]}" --module "${MODULE:-mmkd.train}" "$@")
if [[ -n "${DRY_RUN:-}" ]]; then
  echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-} ${command[*]}"
  exit 0
fi
exec "${command[@]}"

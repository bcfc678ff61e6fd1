"""scripts/slurm_mmkd.sbatch under a fake Slurm: Slurm's variables, fake `srun` and `scontrol` on PATH,
the script run as Slurm runs it (a copy in a spool directory) from an unrelated directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_setup import subprocess_env

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "scripts" / "slurm_mmkd.sbatch"
FAKE_SRUN = """#!/usr/bin/env bash
# one task per node, in turn: drop srun's options, run the command with that node's SLURM_NODEID
while [[ "$1" == --* ]]; do shift; done
for ((node = 0; node < SLURM_NNODES; node++)); do
  echo "srun task $node: NUM_PROCS=$NUM_PROCS"
  SLURM_NODEID=$node "$@" || exit $?
done
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
case "$1 $2" in
  "show hostnames") printf 'gpu-node-7\\ngpu-node-8\\n'; seq -f 'spare-node-%g' {spare_nodes} ;;
  "show job") echo "   Command={submitted} WorkDir={workdir}" ;;
  *) exit 1 ;;
esac
"""


def submit(tmp_path: Path, gpus_per_node: str, spare_nodes: int = 0) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the sbatch script as Slurm would on the first node; returns the result and the log dir.
    `spare_nodes`: more lines after the job's two hostnames in `scontrol show hostnames`."""
    bin_dir, spool, elsewhere = tmp_path / "bin", tmp_path / "spool" / "job42", tmp_path / "elsewhere"
    for directory in (bin_dir, spool, elsewhere):
        directory.mkdir(parents=True)
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL.format(submitted=SBATCH, workdir=elsewhere,
                                                              spare_nodes=spare_nodes))
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    shutil.copy(SBATCH, spool / "slurm_script")  # Slurm runs a copy, not the submitted file
    log_dir = tmp_path / "logs"
    env = {**subprocess_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable,
           "DRY_RUN": "1", "LOG_DIR": str(log_dir), "SLURM_JOB_ID": "42", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "gpu-node-[7-8]", "SLURM_SUBMIT_DIR": str(elsewhere),
           "SLURM_GPUS_PER_NODE": gpus_per_node}
    result = subprocess.run(["bash", str(spool / "slurm_script"), "recipes/gpu_mbert.yaml", "--max_steps=3"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    return result, log_dir


@pytest.mark.slow  # launch.sh imports torch once per node: ~20-40 s here
def test_sbatch_runs_from_another_directory_with_a_typed_gpu_request(tmp_path):
    result, log_dir = submit(tmp_path, "a100:8")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "srun task 0: NUM_PROCS=8" in out and "srun task 1: NUM_PROCS=8" in out
    for node in (0, 1):
        assert f"--no_ssh --node_rank {node} --num_nodes 2 --master_addr gpu-node-7" in out
    assert "--module mmkd.train recipes/gpu_mbert.yaml --max_steps=3" in out
    assert f"in {REPO}" in out
    log = log_dir / "mmkd-42.log"
    assert log.is_file() and "--node_rank 1" in log.read_text()


def test_sbatch_refuses_an_unreadable_gpu_count(tmp_path):
    result, _ = submit(tmp_path, "a100:eight")
    assert result.returncode == 2 and "SLURM_GPUS_PER_NODE=a100:eight" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_node_list_longer_than_a_pipe_buffer_does_not_end_the_job(tmp_path):
    # 200,000 lines (~3 MB) after the first host: a reader that stops after one line would leave
    # scontrol writing into a closed pipe (SIGPIPE, exit 141 under pipefail)
    result, _ = submit(tmp_path, "8", spare_nodes=200_000)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "master gpu-node-7:29500" in result.stdout

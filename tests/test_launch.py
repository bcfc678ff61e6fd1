"""scripts/launch.sh: the launcher command it builds per mode, and a real two-node run without ssh
(two launchers on this machine, one rank each, meeting over loopback as two cluster nodes would)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmkd.engine import free_port
from tiny_setup import build_tiny, subprocess_env

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "scripts" / "launch.sh"


def launch(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LAUNCH), *args], cwd=REPO, env={**subprocess_env(), "PYTHON": sys.executable,
                                                                         **env},
                          capture_output=True, text=True, timeout=timeout)


def dry_run(**env: str) -> str:
    result = launch({"DRY_RUN": "1", **env}, "recipe.yaml", "--max_steps=3")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_one_node_several_ranks_split_the_cores():
    command = dry_run(NUM_PROCS="2", OMP_NUM_THREADS="")
    assert "--num_gpus 2" in command and "--module mmkd.train recipe.yaml --max_steps=3" in command
    assert command.startswith(f"OMP_NUM_THREADS={max(os.cpu_count() // 2, 1)} ")


def test_hostfile_mode_passes_the_hostfile_and_master():
    command = dry_run(HOSTFILE="scripts/hostfile.example", MASTER_ADDR="worker-0")
    assert "--hostfile scripts/hostfile.example" in command and "--master_addr worker-0" in command
    assert "--no_ssh" not in command


def test_no_ssh_mode_needs_its_node_rank():
    result = launch({"DRY_RUN": "1", "NO_SSH": "1", "NNODES": "2", "MASTER_ADDR": "127.0.0.1"}, "recipe.yaml")
    assert result.returncode != 0 and "NO_SSH needs NODE_RANK" in result.stderr


@pytest.mark.slow
def test_two_nodes_without_ssh_train_as_one_job(tmp_path, teacher_dir):
    tiny = build_tiny(tmp_path / "tiny", teacher_dir)
    out = tmp_path / "two_nodes"
    env = {"NO_SSH": "1", "NNODES": "2", "NUM_PROCS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    args = [str(tiny / "recipe.yaml"), f"--output_dir={out}", "--max_steps=2", "--export=false"]
    nodes = [subprocess.Popen(["bash", str(LAUNCH), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**subprocess_env(), "PYTHON": sys.executable, **env,
                                              "NODE_RANK": str(rank)})
             for rank in (0, 1)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "mmkd train: 2 rank(s)" in logs[0]  # one job of 2 ranks, not two jobs of 1
    assert "2 steps, stopped by max_steps" in logs[0]
    assert (out / "checkpoints" / "latest").is_file()

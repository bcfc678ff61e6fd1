"""Faults during a run's checkpoints and export, on the tiny setup (tests/tiny_setup.py), one process.

kill -9 at each point of the save of step2 (tests/kill_at.py), then `--resume`: the run continues
from the newest complete checkpoint and ends with the losses and weights of an uninterrupted run,
step for step. Also: a kill during the export (a resume at the final step exports again; the
pipeline does not take the partial export for a finished run), a full disk (a small tmpfs) during a
checkpoint and during the export, a crafted RNG state file, a resume with another precision.
Runs go in parallel, three at a time, in two rounds (the killed runs, then their resumes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tiny_setup import build_tiny, scalars, subprocess_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUN_ARGS = ["--max_steps=3", "--save_interval=1", "--keep_checkpoints=2", "--eval_interval=0", "--export=false"]
KILLS = {  # kill point in the save of step2 -> the checkpoint the resume continues from
    "optimizer-file": "step1",
    "before-manifest": "step1",
    "before-latest": "step2",
    "after-latest": "step2",
}
TMPFS_KIB = {"checkpoint": 512, "export": 1100}  # room for no checkpoint / for one checkpoint, not the export


def command(tiny: Path, out: Path, *extra: str, kill: str | None = None) -> list[str]:
    args = [str(tiny / "recipe.yaml"), f"--output_dir={out}", *RUN_ARGS, *extra]
    if kill is None:
        return [sys.executable, "-m", "mmkd.train", *args]
    return [sys.executable, str(REPO / "tests" / "kill_at.py"), kill, "step2", *args]


def run_all(commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(commands, pool.map(run, commands.values())))


def explain(result: subprocess.CompletedProcess) -> str:
    return f"{' '.join(result.args)}\nexit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def mount_tmpfs(path: Path, kib: int) -> bool:
    path.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory, teacher_dir, unpickling_creates):
    """{name: (output_dir, completed process)} of every run (see the module docstring)."""
    tiny = build_tiny(tmp_path_factory.mktemp("tiny"), teacher_dir)
    root = tmp_path_factory.mktemp("runs")
    disks = {name: root / f"disk_{name}" for name in TMPFS_KIB}
    mounted = [name for name, path in disks.items() if mount_tmpfs(path, TMPFS_KIB[name])]
    try:
        outs = {"reference": root / "reference", "export": root / "pipeline" / "train",
                **{f"kill_{point}": root / point for point in KILLS},
                **{f"full_{name}": disks[name] / "out" for name in mounted}}
        first = {"reference": command(tiny, outs["reference"]),
                 "export": command(tiny, outs["export"], "--export=true", kill="export"),
                 **{f"kill_{point}": command(tiny, outs[f"kill_{point}"], kill=point) for point in KILLS}}
        if "checkpoint" in mounted:
            first["full_checkpoint"] = command(tiny, outs["full_checkpoint"])
        if "export" in mounted:
            first["full_export"] = command(tiny, outs["full_export"], "--max_steps=1", "--export=true")
        results = run_all(first)
        states = {name: sorted(path.name for path in (out / "checkpoints").glob("*"))
                  for name, out in outs.items() if (out / "checkpoints").is_dir()}
        latest = {name: (out / "checkpoints" / "latest").read_text() if (out / "checkpoints" / "latest").is_file()
                  else None for name, out in outs.items()}
        export_after_kill = sorted(path.name for path in outs["export"].iterdir())
        pipeline_after_kill = train_stage(outs["export"])
        crafted = craft_rng_payload(outs["reference"], root / "crafted", unpickling_creates(root / "payload_ran"))
        outs.update(crafted=crafted, other_precision=shutil.copytree(outs["reference"], root / "other_precision"))
        second = {f"resume_{point}": command(tiny, outs[f"kill_{point}"], "--resume") for point in KILLS}
        second["resume_export"] = command(tiny, outs["export"], "--export=true", "--resume")
        second["crafted"] = command(tiny, crafted, "--resume_from=step3")
        second["other_precision"] = command(tiny, outs["other_precision"], "--resume",
                                            f"--ds_config={REPO / 'ds_configs' / 'cpu_fp32_zero2.json'}")
        results.update(run_all(second))
        yield {"tiny": tiny, "outs": outs, "results": results, "after_kill": states, "latest_after_kill": latest,
               "payload_ran": root / "payload_ran", "export_after_kill": export_after_kill,
               "pipeline_after_kill": pipeline_after_kill}
    finally:
        for name in mounted:
            subprocess.run(["umount", str(disks[name])], check=False)


def craft_rng_payload(reference: Path, out: Path, payload: object) -> Path:
    """A copy of the finished reference run whose step3 RNG state files (the .pt mmkd read before, the
    .safetensors it reads now) are the pickle `payload` (conftest's unpickling_creates); the manifest
    updated to their sizes, as an attacker would."""

    shutil.copytree(reference, out)
    step3 = out / "checkpoints" / "step3"
    for name in ("rng_rank0.pt", "rng_rank0.safetensors"):
        torch.save(payload, step3 / name)
    manifest = json.loads((step3 / "mmkd_checkpoint.json").read_text())
    manifest["files"]["rng_rank0.safetensors"] = (step3 / "rng_rank0.safetensors").stat().st_size
    (step3 / "mmkd_checkpoint.json").write_text(json.dumps(manifest))
    return out


def train_stage(train_dir: Path) -> tuple[bool, list[str]]:
    """(is the pipeline's train stage complete, its argv) for a pipeline whose train stage writes `train_dir`."""
    from mmkd.cli import build_parser
    from mmkd.commands.pipeline import stages

    argv = ["pipeline", "--out", str(train_dir.parent)]
    stage = next(stage for stage in stages(build_parser(argv).parse_args(argv)) if stage.name == "train")
    return stage.done(), stage.argv


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoints"), tag="step3")


def test_an_uninterrupted_run_keeps_the_newest_checkpoints(runs):
    result = runs["results"]["reference"]
    assert result.returncode == 0, explain(result)
    assert runs["after_kill"]["reference"] == ["latest", "step2", "step3", "zero_to_fp32.py", "zero_to_torch.py"]
    assert runs["latest_after_kill"]["reference"] == "step3"


@pytest.mark.parametrize("point", KILLS)
def test_kill_during_a_save_then_resume_equals_the_uninterrupted_run(runs, point):
    killed, resumed = runs["results"][f"kill_{point}"], runs["results"][f"resume_{point}"]
    out, reference = runs["outs"][f"kill_{point}"], runs["outs"]["reference"]
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    published = point in ("before-latest", "after-latest")
    assert ("step2" in runs["after_kill"][f"kill_{point}"]) == published
    assert ("step2.partial" in runs["after_kill"][f"kill_{point}"]) != published
    assert runs["latest_after_kill"][f"kill_{point}"] == ("step2" if point == "after-latest" else "step1")
    assert resumed.returncode == 0, explain(resumed)
    assert f"resuming from {out / 'checkpoints' / KILLS[point]} " in resumed.stdout
    assert ("skipped step2.partial (a save interrupted before it completed)" in resumed.stdout) != published
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == sorted(runs["after_kill"]["reference"])
    logged, expected = scalars(out), scalars(reference)
    for tag in ("train/loss", "train/tlm", "train/xwcl", "train/senta", "train/grad_norm", "train/lr"):
        assert logged[tag] == expected[tag], tag
    weights, expected_weights = final_weights(out), final_weights(reference)
    assert weights.keys() == expected_weights.keys()
    for name in weights:
        assert torch.equal(weights[name], expected_weights[name]), name


def test_kill_during_the_export_leaves_no_export_and_a_resume_at_the_final_step_exports(runs):
    from sentence_transformers import SentenceTransformer

    killed, resumed = runs["results"]["export"], runs["results"]["resume_export"]
    out = runs["outs"]["export"]
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    assert "export.partial" in runs["export_after_kill"] and "export" not in runs["export_after_kill"]
    done, argv = runs["pipeline_after_kill"]
    assert not done and "--resume" in argv  # the pipeline reruns training, which resumes at the final step
    assert resumed.returncode == 0, explain(resumed)
    assert f"resuming from {out / 'checkpoints' / 'step3'} " in resumed.stdout
    assert f"export: {out / 'export'}" in resumed.stdout
    assert not (out / "export.partial").exists() and train_stage(out)[0]
    check = json.loads((out / "export" / "embedding_check.json").read_text())
    assert check["checkpoint"] == "step3"
    encoded = SentenceTransformer(str(out / "export" / "sentence_transformers"), device="cpu").encode(check["texts"])
    assert encoded.shape == (8, 32)  # Dense(P_s): the teacher's dimension


def test_a_crafted_rng_state_file_is_refused_without_running_it(runs):
    result = runs["results"]["crafted"]
    assert result.returncode == 2, explain(result)
    assert not runs["payload_ran"].exists()
    step3 = runs["outs"]["crafted"] / "checkpoints" / "step3"
    assert f"mmkd train: error: {step3 / 'rng_rank0.safetensors'}: not an RNG state file written by mmkd.train" \
        in result.stderr


def test_a_resume_with_another_precision_is_refused_before_loading(runs):
    result = runs["results"]["other_precision"]
    assert result.returncode == 2, explain(result)
    assert "written by a run of another shape (precision bf16 there, fp32 here)" in result.stderr
    assert "Traceback" not in result.stderr
    out = runs["outs"]["other_precision"]  # its train config still names the run's own DeepSpeed JSON
    assert json.loads((out / "train_config.json").read_text())["ds_config"] == "ds_configs/cpu_bf16_zero2.json"


@pytest.mark.parametrize("what", TMPFS_KIB)
def test_a_full_disk_is_reported_naming_the_file(runs, what):
    if f"full_{what}" not in runs["results"]:
        pytest.skip("mounting a small tmpfs needs root")
    result, out = runs["results"][f"full_{what}"], runs["outs"][f"full_{what}"]
    assert result.returncode == 2, explain(result)
    error = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    if what == "checkpoint":
        staging = out / "checkpoints" / "step1.partial"
        assert error.startswith(f"mmkd train: error: {staging}/"), error
        assert "writing checkpoint step1 failed: the disk is full" in error and "rerun with --resume" in error
        assert not staging.exists()
    else:
        assert error.startswith(f"mmkd train: error: {out / 'export.partial'}"), error
        assert "writing the export of step1 failed: the disk is full" in error
        assert "rerun with --resume: it loads step1, the last checkpoint, and exports again" in error
        assert not (out / "export.partial").exists() and not (out / "export").exists()
        assert (out / "checkpoints" / "step1" / "mmkd_checkpoint.json").is_file()

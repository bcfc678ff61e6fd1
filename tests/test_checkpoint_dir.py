"""The checkpoints folder (mmkd/checkpoint_dir.py) and the run folder rules, on fake checkpoints: which
checkpoint a resume takes and why it skips others, publishing, rotation, the output-directory
refusal and --overwrite, and mmkd's RNG state file (it round-trips, and a pickle in its place is not run).
The same faults in real runs, killed with SIGKILL: tests/test_checkpoint_faults.py."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmkd import checkpoint_dir
from mmkd.errors import MMKDError


def fake_checkpoint(root: Path, step: int, files: dict[str, bytes] | None = None) -> Path:
    """Stage and publish checkpoint step<step> holding `files` (default: two small files)."""
    staging = checkpoint_dir.staging_dir(root, f"step{step}")
    staging.mkdir(parents=True)
    for name, data in (files or {"model.pt": b"m" * 10, "rng_rank0.safetensors": b"r" * 5}).items():
        (staging / name).write_bytes(data)
    checkpoint_dir.publish(root, f"step{step}", {"step": step})
    return root / f"step{step}"


def test_a_published_checkpoint_is_complete_and_latest(tmp_path):
    folder = fake_checkpoint(tmp_path, 4)
    assert checkpoint_dir.problem(folder) is None
    assert checkpoint_dir.read_manifest(folder) == {"step": 4, "files": {"model.pt": 10, "rng_rank0.safetensors": 5}}
    assert (tmp_path / "latest").read_text() == "step4"
    assert not checkpoint_dir.staging_dir(tmp_path, "step4").exists()


def test_resume_takes_the_newest_complete_checkpoint_and_names_what_it_skipped(tmp_path):
    for step in (2, 4, 6, 8):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "step8" / "rng_rank0.safetensors").unlink()
    with open(tmp_path / "step6" / "model.pt", "r+b") as handle:
        handle.truncate(3)
    (tmp_path / "step4" / checkpoint_dir.MANIFEST).unlink()
    checkpoint_dir.staging_dir(tmp_path, "step10").mkdir()
    folder, skipped = checkpoint_dir.choose(tmp_path)
    assert folder == tmp_path / "step2"
    assert skipped == ["step8 (rng_rank0.safetensors is missing)",
                       "step6 (model.pt has 3 bytes, the manifest says 10 (truncated or changed))",
                       "step4 (no mmkd_checkpoint.json (written by an older mmkd, or not by mmkd.train))",
                       "step10.partial (a save interrupted before it completed)"]
    assert checkpoint_dir.complete_checkpoints(tmp_path) == ["step2"]


def test_resume_from_picks_one_and_refuses_a_broken_one(tmp_path):
    for step in (2, 4):
        fake_checkpoint(tmp_path, step)
    assert checkpoint_dir.choose(tmp_path, "step2") == (tmp_path / "step2", [])
    (tmp_path / "step4" / "model.pt").unlink()
    with pytest.raises(MMKDError, match=r"step4: cannot resume from it: model.pt is missing; complete checkpoints: "
                                        r"step2$"):
        checkpoint_dir.choose(tmp_path, "step4")
    with pytest.raises(MMKDError, match="step7: cannot resume from it: no such folder"):
        checkpoint_dir.choose(tmp_path, "step7")


def test_no_complete_checkpoint_is_an_error_listing_each_problem(tmp_path):
    with pytest.raises(MMKDError, match="no checkpoint to resume from"):
        checkpoint_dir.choose(tmp_path)
    fake_checkpoint(tmp_path, 2)
    (tmp_path / "step2" / "model.pt").unlink()
    with pytest.raises(MMKDError, match=r"no complete checkpoint to resume from: step2 \(model.pt is missing\)"):
        checkpoint_dir.choose(tmp_path)


def test_publishing_replaces_a_broken_folder_of_the_same_step(tmp_path):
    fake_checkpoint(tmp_path, 2)
    (tmp_path / "step4").mkdir()
    (tmp_path / "step4" / "stale.pt").write_bytes(b"x")
    fake_checkpoint(tmp_path, 4)
    assert sorted(path.name for path in (tmp_path / "step4").iterdir()) == [
        checkpoint_dir.MANIFEST, "model.pt", "rng_rank0.safetensors"]


def test_prune_keeps_the_newest_complete_and_removes_the_rest(tmp_path):
    for step in (1, 2, 3, 4, 5, 6):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "step3" / "model.pt").unlink()  # broken
    checkpoint_dir.staging_dir(tmp_path, "step9").mkdir()  # an interrupted save
    # resumed from step4 (with --resume_from): step5 and step6 belong to the run it replaces
    removed = checkpoint_dir.prune(tmp_path, "step4", keep=2)
    assert sorted(removed) == ["step1", "step3", "step5", "step6", "step9.partial"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["latest", "step2", "step4"]
    assert checkpoint_dir.prune(tmp_path, "step4", keep=0) == []


def test_a_failed_write_on_a_full_disk_names_the_file_and_removes_the_partial_folder(tmp_path, monkeypatch):
    staging = checkpoint_dir.staging_dir(tmp_path, "step3")
    staging.mkdir()
    monkeypatch.setattr(checkpoint_dir.shutil, "disk_usage", lambda path: SimpleNamespace(free=4096))
    with pytest.raises(MMKDError) as raised:
        with checkpoint_dir.writing_into(staging, "checkpoint step3", "then rerun with --resume"):
            (staging / "model.pt").write_bytes(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 320 vs 214")
    assert str(raised.value).startswith(f"{staging / 'model.pt'}: writing checkpoint step3 failed: the disk is full "
                                        "(0.0 MiB free; RuntimeError: [enforce fail")
    assert str(raised.value).endswith("; then rerun with --resume (the partial step3.partial was removed)")
    assert not staging.exists()


def test_other_errors_while_writing_pass_through(tmp_path):
    staging = checkpoint_dir.staging_dir(tmp_path, "step3")
    staging.mkdir()
    with pytest.raises(KeyError):
        with checkpoint_dir.writing_into(staging, "checkpoint step3", "advice"):
            raise KeyError("a bug, not the disk")
    assert staging.exists()


def cfg_for(out: Path, *overrides: str):
    from mmkd.train_config import load_train_config

    return load_train_config(None, ["--corpus=c", "--student=s", "--live_teacher", f"--output_dir={out}", *overrides])


def test_fsync_tree_skips_another_ranks_temporary_file_renamed_meanwhile(tmp_path, monkeypatch):
    """Ranks flush the shared staging folder while others still write there: a file that vanishes
    between listing and flushing (another rank renamed its temporary file) is not an error; a
    missing folder is."""
    staging = tmp_path / "step4.partial"
    staging.mkdir()
    (staging / "rng_rank0.safetensors").write_bytes(b"0")
    (staging / ".tmpHG6XYR").write_bytes(b"1")
    flushed, fsync_path = [], checkpoint_dir.fsync_path

    def rename_then_flush(path: Path) -> None:
        if path.name == ".tmpHG6XYR":
            path.rename(staging / "rng_rank1.safetensors")  # rank 1 renames its file after our listing
        fsync_path(path)
        flushed.append(path.name)

    monkeypatch.setattr(checkpoint_dir, "fsync_path", rename_then_flush)
    checkpoint_dir.fsync_tree(staging)
    assert flushed == ["rng_rank0.safetensors", "step4.partial"]
    with pytest.raises(FileNotFoundError):
        checkpoint_dir.fsync_tree(tmp_path / "gone")


def test_a_used_output_dir_is_refused_unless_resumed_or_overwritten(tmp_path, capsys):
    from mmkd import checkpointing
    from mmkd.train import main

    (tmp_path / "checkpoints").mkdir()
    args = ["--corpus=c", "--student=s", "--live_teacher", f"--output_dir={tmp_path}"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"mmkd train: error: {tmp_path}: holds a run already (checkpoints); continue it with --resume, start it "
        "over with --overwrite (deletes its checkpoints, export and TensorBoard logs), or choose another output_dir")
    checkpointing.check_output_dir(cfg_for(tmp_path, "--resume"))
    checkpointing.check_output_dir(cfg_for(tmp_path, "--resume_from=step2"))
    checkpointing.check_output_dir(cfg_for(tmp_path, "--overwrite"))
    checkpointing.check_output_dir(cfg_for(tmp_path / "new"))
    with pytest.raises(MMKDError, match="resume and overwrite exclude each other"):
        checkpointing.check_output_dir(cfg_for(tmp_path, "--resume", "--overwrite"))


def test_overwrite_deletes_what_a_run_wrote_and_nothing_else(tmp_path):
    from mmkd import checkpointing

    for name in ("checkpoints/step4", "export/hf", "export.partial", "tensorboard/mmkd"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "train_config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    checkpointing.clear_output_dir(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_rng_states_round_trip(tmp_path):
    from mmkd.checkpointing import load_rng_states, save_rng_states

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.standard_normal(), torch.rand(1)  # numpy keeps a cached gaussian
    save_rng_states(tmp_path / "rng.safetensors")
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    load_rng_states(tmp_path / "rng.safetensors")
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected


def test_a_pickle_in_place_of_the_rng_state_is_refused_not_run(tmp_path, unpickling_creates):
    from mmkd.checkpointing import load_rng_states

    torch.save(unpickling_creates(tmp_path / "ran"), tmp_path / "rng_rank0.safetensors")
    with pytest.raises(MMKDError, match="rng_rank0.safetensors: not an RNG state file written by mmkd.train"):
        load_rng_states(tmp_path / "rng_rank0.safetensors")
    assert not (tmp_path / "ran").exists()


def test_the_loop_state_round_trips_through_a_manifest_and_older_loops_still_read(tmp_path):
    from mmkd.loop_state import LoopState

    state = LoopState(step=6, epoch=1, consumed=48, changed_steps=5, train_seconds=12.5)
    folder = checkpoint_dir.staging_dir(tmp_path, "step6")
    folder.mkdir()
    checkpoint_dir.publish(tmp_path, "step6", {"step": state.step, "loop": state.to_manifest()})
    loop = checkpoint_dir.read_manifest(tmp_path / "step6")["loop"]
    assert loop == {"step": 6, "epoch": 1, "consumed": 48, "changed_steps": 5, "train_seconds": 12.5}
    assert LoopState.from_manifest(loop) == state
    # a checkpoint of an older mmkd: every step changed the weights, no loop time recorded
    assert LoopState.from_manifest({"step": 8, "epoch": 0, "consumed": 64}) == \
        LoopState(step=8, epoch=0, consumed=64, changed_steps=8, train_seconds=0.0)

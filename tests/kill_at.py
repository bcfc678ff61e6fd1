"""Run mmkd.train and kill -9 its process at one named point of a checkpoint save or of the export.

    python tests/kill_at.py POINT TAG RECIPE [--key=value ...]
    KILL_RANK=1 deepspeed --num_gpus 2 tests/kill_at.py POINT TAG RECIPE [--key=value ...]

The fault-injection driver of tests/test_checkpoint_faults.py and tests/test_train_e2e.py: it wraps
the function that starts the step named by POINT (for checkpoint TAG) so that the process sends
itself SIGKILL there, as a node dying at that moment would, then runs `mmkd.train` on the remaining
arguments. Under the launcher, KILL_RANK picks the one rank that dies (default: every rank).
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from mmkd import checkpoint_dir, cli, train
from mmkd.models.student import MMKDStudent


def targeted() -> bool:
    """Is this process one that is to die (KILL_RANK unset, or this rank's number)?"""
    return os.environ.get("KILL_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0")


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def before(owner: Any, name: str, when: Callable[..., bool]) -> None:
    """Kill the process when owner.name is called with arguments for which `when` is true."""
    real = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if targeted() and when(*args, **kwargs):
            die()
        return real(*args, **kwargs)

    setattr(owner, name, wrapped)


def after_export_model(tag: str) -> None:
    """The export has written its HF model directory, not yet the rest, when the process dies."""
    real = MMKDStudent.save

    def save(self: MMKDStudent, path: Any) -> Path:
        written = real(self, path)
        if targeted() and f"export{checkpoint_dir.PARTIAL}" in str(path):
            die()
        return written

    MMKDStudent.save = save


def half_written_optimizer_file(tag: str) -> None:
    """DeepSpeed's optimizer file of checkpoint `tag` is cut off halfway, then the process dies."""
    real = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        if targeted() and isinstance(f, (str, os.PathLike)) and f"{tag}{checkpoint_dir.PARTIAL}" in str(f) \
                and "optim_states" in str(f):
            buffer = io.BytesIO()
            real(obj, buffer, *args, **kwargs)
            Path(f).write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
            die()
        return real(obj, f, *args, **kwargs)

    torch.save = save


POINTS: dict[str, Callable[[str], None]] = {
    "optimizer-file": half_written_optimizer_file,
    "before-manifest": lambda tag: before(checkpoint_dir, "write_manifest",
                                          lambda folder, facts: folder.name == f"{tag}{checkpoint_dir.PARTIAL}"),
    "before-latest": lambda tag: before(checkpoint_dir, "write_atomically",
                                        lambda path, text: path.name == checkpoint_dir.LATEST and text == tag),
    "after-latest": lambda tag: before(checkpoint_dir, "prune", lambda root, current, keep: current == tag),
    "export": after_export_model,
}


if __name__ == "__main__":
    point, tag, *argv = cli.without_local_rank(sys.argv[1:])
    POINTS[point](tag)
    raise SystemExit(train.main(argv))

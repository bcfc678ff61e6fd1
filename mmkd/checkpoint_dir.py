"""The checkpoints folder: a checkpoint appears under its final name only when every file is written.

Layout of `output_dir/checkpoints/`:
  step<N>/             one complete checkpoint: DeepSpeed's files, mmkd's per-rank RNG states and
                       MANIFEST (mmkd_checkpoint.json), written last: mmkd's loop state and run
                       facts, and every file of the folder with its size in bytes;
  step<N>.partial/     a save in progress (or interrupted: ignored, removed by the next save);
  latest               DeepSpeed's pointer to the newest checkpoint (for its own tools,
                       zero_to_fp32.py); moved only after the rename.

A save writes into `step<N>.partial/` on every rank, fsyncs, and after a barrier rank 0 writes the
manifest, renames the folder to `step<N>` and moves `latest` (`publish`); then `prune` keeps the
`keep` newest complete checkpoints. A kill at any moment therefore leaves either the previous
checkpoints untouched or the new one complete. `--resume` takes the newest folder that
`problem()` finds complete and names the ones it skipped.

No torch here: `mmkd pipeline` reads this folder without importing the training stack.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmkd.errors import MMKDError

MANIFEST = "mmkd_checkpoint.json"
LATEST = "latest"
PARTIAL = ".partial"  # suffix of a folder being written
REMOVED = ".removed"  # suffix of a folder being deleted
TAG = re.compile(r"step(\d+)")
FULL_BELOW = 16 * 2**20  # free bytes under which a failed write is put down to a full disk


def tag_of(step: int) -> str:
    return f"step{step}"


def step_of(tag: str) -> int:
    return int(TAG.fullmatch(tag).group(1))


def staging_dir(root: Path, tag: str) -> Path:
    """Where checkpoint `tag` is written before `publish` renames it to root/tag."""
    return root / f"{tag}{PARTIAL}"


def fsync_path(path: Path) -> None:
    """Flush the file `path` (or a folder's entry list, e.g. after a rename in it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder`, and `folder` itself, to the disk.

    Every rank calls it on the shared staging folder while the others may still be writing there: an
    entry that vanishes between listing and flushing is another rank's temporary file (safetensors and
    torch write to one, then rename it), which that rank flushes under its final name itself.
    """
    for path in [*sorted(folder.rglob("*")), folder]:
        try:
            fsync_path(path)
        except FileNotFoundError:
            if path == folder:
                raise


def write_manifest(folder: Path, facts: dict[str, Any]) -> None:
    """Write MANIFEST into `folder`: `facts` plus {"files": {relative path: bytes}} of every file there."""
    files = {str(path.relative_to(folder)): path.stat().st_size
             for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST}
    write_atomically(folder / MANIFEST, json.dumps({**facts, "files": files}, indent=1) + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a checkpoint folder that `problem()` found complete."""
    return json.loads((folder / MANIFEST).read_text())


def problem(folder: Path) -> str | None:
    """Why checkpoint `folder` cannot be resumed from (missing, truncated or changed files), or None."""
    try:
        manifest = read_manifest(folder)
    except FileNotFoundError:
        return f"no {MANIFEST} (written by an older mmkd, or not by mmkd.train)"
    except (OSError, ValueError) as err:
        return f"{MANIFEST} unreadable ({err})"
    for name, size in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {size} (truncated or changed)"
    return None


def step_folders(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every `step<N>` folder in `root`, newest step first."""
    found = [(int(match.group(1)), path) for path in root.glob("step*")
             if path.is_dir() and (match := TAG.fullmatch(path.name))]
    return sorted(found, reverse=True)


def complete_checkpoints(root: str | Path) -> list[str]:
    """Tags of the complete checkpoints in `root`, newest first."""
    return [folder.name for _, folder in step_folders(Path(root)) if problem(folder) is None]


def choose(root: Path, tag: str | None = None) -> tuple[Path, list[str]]:
    """(checkpoint folder to resume from, one line per newer folder skipped and why).

    `tag` None: the newest complete checkpoint; else exactly `tag`. Raises MMKDError when there is
    none (naming each folder and its problem) or `tag` is not complete.
    """
    interrupted = [f"{path.name} (a save interrupted before it completed)" for path in root.glob(f"step*{PARTIAL}")]
    if tag is not None:
        if not TAG.fullmatch(tag):
            raise MMKDError(f"resume_from={tag!r}: name a checkpoint folder of {root}, step<N>")
        folder = root / tag
        reason = problem(folder) if folder.is_dir() else "no such folder"
        if reason is not None:
            complete = complete_checkpoints(root)
            raise MMKDError(f"{folder}: cannot resume from it: {reason}; complete checkpoints: "
                            f"{', '.join(complete) or 'none'}")
        return folder, []
    skipped = []
    for _, folder in step_folders(root):
        reason = problem(folder)
        if reason is None:
            return folder, skipped + interrupted
        skipped.append(f"{folder.name} ({reason})")
    if not skipped and not interrupted:
        raise MMKDError(f"{root}: no checkpoint to resume from (resume=true); run without --resume first")
    raise MMKDError(f"{root}: no complete checkpoint to resume from: " + "; ".join(skipped + interrupted) +
                    "; run without --resume (with --overwrite) to start over")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it and rename it over `path`."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def remove(folder: Path) -> None:
    """Delete `folder`: renamed first, so a kill midway leaves no half-deleted checkpoint under a step name."""
    if not folder.exists():
        return
    doomed = folder if folder.name.endswith(REMOVED) else folder.with_name(folder.name + REMOVED)
    if doomed != folder:
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(folder, doomed)
    shutil.rmtree(doomed)


def publish(root: Path, tag: str, facts: dict[str, Any]) -> None:
    """Rank 0, after every rank has written and fsynced its files into staging_dir(root, tag):
    write the manifest, rename the folder to root/tag (replacing an older folder of that name), move `latest`."""
    staging = staging_dir(root, tag)
    write_manifest(staging, facts)
    remove(root / tag)
    os.replace(staging, root / tag)
    fsync_path(root)
    write_atomically(root / LATEST, tag)


def prune(root: Path, current: str, keep: int) -> list[str]:
    """After checkpoint `current` is published: remove interrupted saves, broken checkpoints, those
    after `current` (left by the run a resume from an older checkpoint replaced) and all but the
    `keep` newest complete ones (0 = keep every one). Returns the names removed."""
    current_step = step_of(current)
    kept, removed = 0, []
    for step, folder in step_folders(root):
        if folder.name == current or (step < current_step and problem(folder) is None
                                      and (keep == 0 or kept < keep)):
            kept += 1
            continue
        removed.append(folder.name)
        remove(folder)
    for leftover in [*root.glob(f"step*{PARTIAL}"), *root.glob(f"step*{REMOVED}")]:
        removed.append(leftover.name)
        remove(leftover)
    return removed



@contextmanager
def writing_into(folder: Path, what: str, advice: str) -> Iterator[None]:
    """Turn a failed write of `what` into `folder` into one MMKDError naming the file written last,
    the cause (a full disk, most often) and `advice`; the partial `folder` is removed so the space
    comes back. Other errors pass through.

    A full disk shows up as OSError ENOSPC, as torch.save's "[enforce fail at inline_container.cc]
    unexpected pos" RuntimeError or as a SafetensorError: any error while under FULL_BELOW bytes are
    free counts as a full disk.
    """
    try:
        yield
    except Exception as err:
        existing = next(path for path in [folder, *folder.parents] if path.exists())
        free = shutil.disk_usage(existing).free
        full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < FULL_BELOW
        if not (full or isinstance(err, OSError)):
            raise
        written = [path for path in folder.rglob("*") if path.is_file()] if folder.is_dir() else []
        last = max(written, key=lambda path: path.stat().st_mtime_ns) if written else folder
        cause = (f"the disk is full ({free / 2**20:.1f} MiB free; {type(err).__name__}: {err}); free space there or "
                 "point output_dir at a larger disk" if full else f"{type(err).__name__}: {err}")
        shutil.rmtree(folder, ignore_errors=True)
        raise MMKDError(f"{last}: writing {what} failed: {cause}; {advice} (the partial {folder.name} was "
                        "removed)") from err

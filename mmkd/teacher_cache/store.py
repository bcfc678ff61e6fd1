"""On-disk layout of a teacher cache, its atomic checksummed writes and its checked reads.

A cache directory holds, for sentence ids (unique English sentences, in order of first occurrence
in the split) grouped into shards of `shard_size` consecutive ids:
    shard-KKKKK.tokens.npy    float16 (T_K, d_T)  token states of the shard's sentences, flat: only the
                                                  tokens training reads (teacher_token_mask: not special,
                                                  not [UNK], not padding), in position order
    shard-KKKKK.bounds.npy    int64 (n_K + 1,)    sentence j of the shard owns rows bounds[j]:bounds[j+1]
    shard-KKKKK.sentence.npy  float16 (n_K, d_E)  sentence embeddings (d_E: the teacher's sentence
                                                  embedding size, d_T unless a Dense module changes it)
    shard-KKKKK.json          written last: sentence range, identity, {file, sha256, shape, dtype} per array
    index.npy                 int64 (num_examples,)  row of the split -> sentence id
    manifest.json             written last of all (rank 0): identity, totals, shards, index checksum
Every file is written to a temporary name, fsynced and renamed: a file under its final name is
complete, and a shard without its json is not part of the cache (a resumed build redoes it).
Opening a cache checks sizes, shapes and the records only; sha256 checksums are verified at build,
when a rerun keeps a shard, and on demand (`mmkd cache-teacher --verify --out DIR`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmkd.errors import MMKDError
from mmkd.models.model_files import file_sha256

MANIFEST = "manifest.json"
INDEX = "index.npy"
SHARD_ARRAYS = ("tokens", "bounds", "sentence")


def shard_record_path(root: Path, shard: int) -> Path:
    """Completion record (json) of shard `shard`."""
    return root / f"shard-{shard:05d}.json"


def shard_array_path(root: Path, shard: int, name: str) -> Path:
    """File of array `name` (one of SHARD_ARRAYS) of shard `shard`."""
    return root / f"shard-{shard:05d}.{name}.npy"


def temporary_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (unique per process)."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def remove_shard(root: Path, shard: int) -> None:
    """Delete every file of shard `shard`, its json first (so it never describes a half-written shard)."""
    shard_record_path(root, shard).unlink(missing_ok=True)
    for leftover in root.glob(f"shard-{shard:05d}.*"):
        leftover.unlink()


def commit(tmp: Path, path: Path) -> dict[str, Any]:
    """fsync `tmp`, rename it to `path`; returns the entry {file, sha256, bytes} of the final file."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    digest = file_sha256(tmp)
    os.replace(tmp, path)
    return {"file": path.name, "sha256": digest, "bytes": path.stat().st_size}


def create_array(path: Path, shape: tuple[int, ...], dtype: str) -> np.memmap:
    """A writable memory-mapped .npy at the temporary name of `path`; `commit_array` completes it.

    Its blocks are allocated on disk first, so a full disk raises OSError (ENOSPC) here instead of
    a SIGBUS when the mapping is written.
    """
    array = np.lib.format.open_memmap(temporary_path(path), mode="w+", dtype=dtype, shape=shape)
    with open(temporary_path(path), "rb+") as handle:
        os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    return array


def commit_array(array: np.memmap, path: Path) -> dict[str, Any]:
    """Flush a `create_array` result and rename it to `path`; its entry with shape and dtype."""
    array.flush()
    return {**commit(temporary_path(path), path), "shape": list(array.shape), "dtype": str(array.dtype)}


def save_array(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Write `array` to `path` atomically; its entry {file, sha256, bytes, shape, dtype}."""
    tmp = temporary_path(path)
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    return {**commit(tmp, path), "shape": list(array.shape), "dtype": str(array.dtype)}


def save_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as indented json to `path` atomically."""
    tmp = temporary_path(path)
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    commit(tmp, path)


def load_json(path: Path) -> dict[str, Any]:
    """Read a json record; MMKDError naming the file when it is unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MMKDError(f"teacher cache file {path} is unreadable ({err}); rebuild the cache") from err


def array_intact(root: Path, entry: Mapping[str, Any]) -> bool:
    """True when the file of `entry` exists with its recorded size (cheap; no checksum)."""
    path = root / entry["file"]
    return path.is_file() and path.stat().st_size == entry["bytes"]


def open_array(root: Path, entry: Mapping[str, Any]) -> np.ndarray:
    """Memory-map the array of `entry` read-only, checking size, shape and dtype (MMKDError naming it)."""
    path = root / entry["file"]
    try:
        if path.stat().st_size != entry["bytes"]:
            raise ValueError(f"{path.stat().st_size} bytes, expected {entry['bytes']}")
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise MMKDError(f"teacher cache file {path} is missing or damaged ({err}); rerun "
                        "`mmkd cache-teacher` with the same --out to rebuild it") from err
    if list(array.shape) != entry["shape"] or str(array.dtype) != entry["dtype"]:
        raise MMKDError(f"teacher cache file {path} holds {array.dtype} {list(array.shape)}, its record "
                        f"says {entry['dtype']} {entry['shape']}; rebuild the cache")
    return array


def verify_checksum(root: Path, entry: Mapping[str, Any]) -> None:
    """Raise MMKDError naming the file unless its sha256 is the recorded one."""
    path = root / entry["file"]
    if file_sha256(path) != entry["sha256"]:
        raise MMKDError(f"teacher cache file {path} is corrupt (sha256 differs from its record); "
                        "delete it and its shard json and rerun `mmkd cache-teacher` with the same --out")

"""Build a teacher cache: the frozen teacher runs once over the English side of a corpus split.

Run `build_teacher_cache` in one process, or in one process per data-parallel rank (deepspeed
launcher or torchrun: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment). Rank r builds
the shards k with k % world == r; the ranks meet at a gloo barrier; rank 0 writes index.npy and
manifest.json; a second barrier lets every rank return with the cache complete. A shard whose json
is present, records the same identity and whose files pass their sha256 is kept, so a killed build
resumes where it stopped; a shard that fails its checksum is rebuilt. On a GPU the teacher runs under
bf16 autocast (fp16 where bf16 is not supported); the states are stored in float16 either way.
Layout and write protocol: `mmkd.teacher_cache.store`.
"""

from __future__ import annotations

import errno
import math
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from mmkd.data.span_matching import special_tokens
from mmkd.data.tokenization import encode_texts
from mmkd.errors import MMKDError
from mmkd.teacher_cache.identity import CHECKED_FIELDS, cache_identity, identity_mismatch, split_sources
from mmkd.teacher_cache.store import (
    INDEX,
    MANIFEST,
    SHARD_ARRAYS,
    array_intact,
    commit_array,
    create_array,
    load_json,
    remove_shard,
    save_array,
    save_json,
    shard_array_path,
    shard_record_path,
    verify_checksum,
)

if TYPE_CHECKING:
    from datasets import Dataset

    from mmkd.models.teacher import Teacher

BUILD_FIELDS = (*CHECKED_FIELDS, "shard_size")  # a resumed build must also keep the shard layout
# Ranks reach the end barrier at different times (uneven shards): wait for hours, not the default 30 min.
BARRIER_TIMEOUT = timedelta(hours=12)
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class BuildSummary:
    """What a build produced (totals over the whole cache) and what this rank did."""

    path: Path
    rank: int
    examples: int
    sentences: int
    tokens: int
    bytes: int
    seconds: float
    built: list[int]  # shards this rank computed
    kept: list[int]  # shards this rank found complete


def build_teacher_cache(teacher: Teacher, corpus_split: Dataset, out: str | Path, *, max_length: int,
                        batch_size: int = 64, shard_size: int = 4096, split: str | None = None,
                        corpus_path: str | None = None, device: str | torch.device | None = None
                        ) -> BuildSummary:
    """Cache `teacher`'s outputs for every row of `corpus_split` (a datasets.Dataset with `src`) in `out`.

    Each distinct `src` string is encoded once (rows sharing it share its entry). The teacher model
    is moved to `device` (default: cuda:LOCAL_RANK when CUDA is available, else CPU).
    """
    start = time.perf_counter()
    for name, value in (("max_length", max_length), ("batch_size", batch_size), ("shard_size", shard_size)):
        if value < 1:
            raise MMKDError(f"teacher cache: {name} must be >= 1, got {value}")
    texts = split_sources(corpus_split, corpus_path or "teacher cache")
    identity = {**cache_identity(teacher, texts, max_length, split=split, corpus_path=corpus_path),
                "corpus_fingerprint": getattr(corpus_split, "_fingerprint", None), "shard_size": shard_size}
    sentences, index = unique_sentences(texts)
    num_shards = math.ceil(len(sentences) / shard_size)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rank, world, own_group = distributed_context()
    if (root / MANIFEST).exists():
        replace_older_format(root, load_json(root / MANIFEST), identity, rank, world)
    if (root / MANIFEST).exists():
        check_same_inputs(root, root / MANIFEST, load_json(root / MANIFEST), identity)
    try:
        teacher.model.to(device if device is not None else default_device())
        mine = range(rank, num_shards, world)
        kept = [shard for shard in mine if shard_is_complete(root, shard, identity)]
        todo = [shard for shard in mine if shard not in kept]
        total = sum(min(shard_size, len(sentences) - shard * shard_size) for shard in todo)
        with tqdm(total=total, desc=f"teacher cache (rank {rank})", unit="sent", position=rank) as progress:
            for shard in todo:
                remove_shard(root, shard)
                try:
                    build_shard(teacher, sentences, shard, shard_size, root, identity, max_length, batch_size,
                                progress)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    remove_shard(root, shard)
                    raise MMKDError(f"{root}: the disk is full (writing shard {shard}; the cache needs about "
                                    f"{bytes_per_token(identity)} bytes per token); free space or pass another "
                                    f"--out, then rerun the same command: complete shards are kept") from err
        barrier(world)
        if rank == 0:
            write_manifest(root, identity, num_shards, index)
        barrier(world)
    finally:
        if own_group:
            dist.destroy_process_group()
    manifest = load_json(root / MANIFEST)
    return BuildSummary(path=root, rank=rank, examples=len(texts), sentences=len(sentences),
                        tokens=manifest["num_tokens"], bytes=manifest["bytes"],
                        seconds=time.perf_counter() - start, built=todo, kept=kept)


def unique_sentences(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct texts in order of first occurrence, and int64 (len(texts),) row -> sentence id."""
    ids: dict[str, int] = {}
    index = np.fromiter((ids.setdefault(text, len(ids)) for text in texts), dtype=np.int64, count=len(texts))
    return list(ids), index


def check_same_inputs(root: Path, record: Path, stored: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse to build into a directory that holds a cache of other inputs (nothing is deleted)."""
    differences = identity_mismatch(stored.get("identity", stored), identity, BUILD_FIELDS)
    if differences:
        raise MMKDError(f"{record}: {root} holds a teacher cache built from other inputs "
                        f"({'; '.join(differences)}); pass another --out, or delete {root} to rebuild there")


def replace_older_format(root: Path, stored: dict[str, Any], identity: dict[str, Any], rank: int, world: int) -> None:
    """Delete (rank 0; the others wait) a complete cache of the same inputs in an older format, so the
    build rewrites it in this one; a cache of other inputs is left to `check_same_inputs`."""
    same_inputs = not identity_mismatch(stored, identity, [field for field in BUILD_FIELDS if field != "format"])
    if stored.get("format") == identity["format"] or not same_inputs:
        return
    barrier(world)
    if rank == 0:
        print(f"teacher cache {root}: format {stored.get('format')}, rebuilding it in format {identity['format']}",
              flush=True)
        (root / MANIFEST).unlink()
        (root / INDEX).unlink(missing_ok=True)
        for leftover in root.glob("shard-*"):
            leftover.unlink()
    barrier(world)


def shard_is_complete(root: Path, shard: int, identity: dict[str, Any]) -> bool:
    """True when shard `shard` has its json (same identity) and its arrays with the recorded sizes and
    sha256; a shard that fails its checksum is reported (and will be rebuilt)."""
    record_path = shard_record_path(root, shard)
    if not record_path.exists():
        return False
    record = load_json(record_path)
    check_same_inputs(root, record_path, record, identity)
    arrays = record.get("arrays", {})
    if not all(name in arrays and array_intact(root, arrays[name]) for name in SHARD_ARRAYS):
        return False
    try:
        for name in SHARD_ARRAYS:
            verify_checksum(root, arrays[name])
    except MMKDError as err:
        print(f"teacher cache: {err.args[0].split(';')[0]}: rebuilding shard {shard}", flush=True)
        return False
    return True


def bytes_per_token(identity: dict[str, Any]) -> int:
    """Bytes the cache stores per token (its float16 state)."""
    return 2 * int(identity["hidden_size"])


def teacher_precision(device: torch.device) -> AbstractContextManager:
    """Autocast for the frozen teacher on a GPU (bf16, or fp16 where bf16 is not supported); on other
    devices nothing (fp32)."""
    if device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def build_shard(teacher: Teacher, sentences: Sequence[str], shard: int, shard_size: int, root: Path,
                identity: dict[str, Any], max_length: int, batch_size: int, progress: tqdm) -> None:
    """Encode sentences [shard * shard_size, (shard + 1) * shard_size) and write shard `shard`.

    Batches are formed from the shard's sentences sorted by token count (little padding); each is
    cut to its longest sentence, which is exactly `encode_texts` of that batch. Only the states
    training reads are stored: the tokens that are neither special, [UNK] nor padding (the
    collator's teacher_token_mask).
    """
    first = shard * shard_size
    texts = sentences[first:first + shard_size]
    encoding = encode_texts(teacher.tokenizer, texts, max_length=max_length)
    mask = encoding["attention_mask"]
    lengths = mask.sum(dim=1)
    kept = ~special_tokens(encoding, teacher.tokenizer.all_special_ids)
    bounds = np.zeros(len(texts) + 1, dtype=np.int64)
    bounds[1:] = np.cumsum(kept.sum(dim=1).numpy())
    tokens = create_array(shard_array_path(root, shard, "tokens"), (int(bounds[-1]), teacher.hidden_size),
                          identity["dtype"])
    sentence = np.empty((len(texts), teacher.sentence_size), dtype=identity["dtype"])
    device = next(teacher.model.parameters()).device
    for batch in torch.argsort(lengths, descending=True, stable=True).split(batch_size):
        width = int(lengths[batch].max())
        input_ids, attention_mask = encoding["input_ids"][batch, :width], mask[batch, :width]
        with teacher_precision(device):
            outputs = teacher.encode(input_ids.to(device), attention_mask.to(device),
                                     [texts[j] for j in batch.tolist()])
        states = outputs.token_states.float().cpu()[kept[batch, :width]].numpy().astype(identity["dtype"])
        at = 0
        for j in batch.tolist():
            count = int(bounds[j + 1] - bounds[j])
            tokens[bounds[j]:bounds[j + 1]] = states[at:at + count]
            at += count
        sentence[batch.numpy()] = outputs.sentence_embedding.float().cpu().numpy()
        progress.update(len(batch))
    if not (np.isfinite(tokens).all() and np.isfinite(sentence).all()):
        raise MMKDError(f"teacher cache shard {shard} (sentences {first}..{first + len(texts) - 1}): the "
                        f"teacher's outputs overflow {identity['dtype']}")
    arrays = {
        "tokens": commit_array(tokens, shard_array_path(root, shard, "tokens")),
        "bounds": save_array(shard_array_path(root, shard, "bounds"), bounds),
        "sentence": save_array(shard_array_path(root, shard, "sentence"), sentence),
    }
    save_json(shard_record_path(root, shard), {"shard": shard, "start": first, "stop": first + len(texts),
                                                "tokens": int(bounds[-1]), "identity": identity,
                                                "arrays": arrays})


def write_manifest(root: Path, identity: dict[str, Any], num_shards: int, index: np.ndarray) -> None:
    """Rank 0, after every shard is complete: write index.npy, then manifest.json."""
    shards = []
    for shard in range(num_shards):
        record_path = shard_record_path(root, shard)
        if not record_path.exists():
            raise MMKDError(f"{record_path}: missing after every rank finished; rerun the build to resume")
        record = load_json(record_path)
        check_same_inputs(root, record_path, record, identity)
        shards.append({"record": record_path.name, "start": record["start"], "stop": record["stop"],
                       "tokens": record["tokens"],
                       "bytes": sum(entry["bytes"] for entry in record["arrays"].values())})
    index_entry = save_array(root / INDEX, index)
    save_json(root / MANIFEST, {
        **identity,
        "num_sentences": shards[-1]["stop"] if shards else 0,
        "num_tokens": sum(entry["tokens"] for entry in shards),
        "bytes": index_entry["bytes"] + sum(entry["bytes"] for entry in shards),
        "index": index_entry,
        "shards": shards,
    })


def distributed_context() -> tuple[int, int, bool]:
    """(rank, world size, whether this call created the process group) from torch.distributed or
    the launcher's environment; a gloo group is created when WORLD_SIZE > 1 and none exists.

    Raises MMKDError when a process group exists whose size is not the environment's WORLD_SIZE (a
    group inherited by a forked process, say): every rank would build every shard into one folder.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        if "WORLD_SIZE" in os.environ and dist.get_world_size() != world:
            raise MMKDError(f"teacher cache: torch.distributed has a process group of {dist.get_world_size()} "
                            f"rank(s) but WORLD_SIZE={world}: this process joined another run's group (forked "
                            "from it?); start each rank as a fresh process (the deepspeed launcher, torchrun)")
        return dist.get_rank(), dist.get_world_size(), False
    if world == 1:
        return 0, 1, False
    missing = [name for name in LAUNCHER_ENV if name not in os.environ]
    if missing:
        raise MMKDError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: run under the deepspeed "
                        "launcher or torchrun")
    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    return dist.get_rank(), world, True


def barrier(world: int) -> None:
    """Wait for every rank (no-op in a single process)."""
    if world > 1:
        dist.barrier()


def default_device() -> torch.device:
    """cuda:LOCAL_RANK when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")

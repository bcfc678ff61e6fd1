"""Read a teacher cache: checked against the current teacher and corpus, looked up by split row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from mmkd.errors import MMKDError
from mmkd.models.teacher import TeacherOutputs
from mmkd.teacher_cache.identity import (
    CORPUS_FIELDS,
    FORMAT_VERSION,
    cache_identity,
    identity_mismatch,
    recorded,
    split_identity,
)
from mmkd.teacher_cache.store import MANIFEST, SHARD_ARRAYS, load_json, open_array, verify_checksum

if TYPE_CHECKING:
    from datasets import Dataset

    from mmkd.data.collate import MMKDCollator
    from mmkd.models.teacher import Teacher


@dataclass
class Shard:
    """The memory-mapped arrays of one shard (store.py) and its record."""

    record: dict[str, Any]
    arrays: dict[str, np.ndarray]


class TeacherCache:
    """A complete teacher cache, memory-mapped read-only.

    Opening checks the manifest, the shard records and every file's size, shape and dtype; no file is
    hashed (`verify` does that, `mmkd cache-teacher --verify`). `lookup` gives what `Teacher.encode`
    gives on the collator's teacher inputs at the positions training reads (teacher_token_mask), up
    to float16 rounding, in float16. The cache can be handed to DataLoader workers: each process maps
    the files itself.
    """

    def __init__(self, root: str | Path) -> None:
        """Open the cache in `root` WITHOUT checking it against a teacher or corpus (see `open`)."""
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.exists():
            raise MMKDError(f"{manifest_path}: no teacher cache here, or its build has not finished; "
                            f"run `mmkd cache-teacher ... --out {self.root}` (a killed build resumes)")
        self.manifest = load_json(manifest_path)
        if self.manifest.get("format") != FORMAT_VERSION:
            raise MMKDError(f"{manifest_path}: teacher cache format {self.manifest.get('format')}, this version reads "
                            f"{FORMAT_VERSION}; rebuild it with `mmkd cache-teacher` into a new --out")
        self.shard_size = int(self.manifest["shard_size"])
        self.hidden_size = int(self.manifest["hidden_size"])  # d_T
        self.sentence_size = int(recorded(self.manifest, "sentence_size"))  # d_E
        self.max_length = int(self.manifest["max_length"])
        self._map_files()

    def _map_files(self) -> None:
        self.index = open_array(self.root, self.manifest["index"])
        self.shards = [self._open_shard(entry) for entry in self.manifest["shards"]]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its memory maps (a DataLoader worker maps the files again)."""
        return {key: value for key, value in self.__dict__.items() if key not in ("index", "shards")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._map_files()

    @classmethod
    def open(cls, path: str | Path, *, teacher: Teacher, corpus_split: Dataset, max_length: int,
             corpus_dir: str | Path | None = None) -> TeacherCache:
        """Open the cache in `path`, refusing it (MMKDError naming the fields) unless it was built with
        this teacher (weights, tokenizer, layer, pooling, normalize), `max_length` and `corpus_split`
        (recognised by its datasets fingerprint; its English sentences are hashed only when that differs).
        A corpus that differs is named by `corpus_dir` (where `corpus_split` comes from) and by the
        directory the cache was built from."""
        cache = cls(path)
        current = {**cache_identity(teacher, [], max_length),
                   **split_identity(corpus_split, str(path), cache.manifest)}
        differences = identity_mismatch(cache.manifest, current)
        if identity_mismatch(cache.manifest, current, CORPUS_FIELDS):
            differences.append(f"corpus: {corpus_dir or 'this run'}'s split is not the {cache.manifest.get('split')} "
                               f"split of {cache.manifest.get('corpus_path')} that the cache was built from")
        if differences:
            raise MMKDError(
                f"{cache.root / MANIFEST}: stale teacher cache ({'; '.join(differences)}); rebuild it with "
                f"`mmkd cache-teacher --corpus DIR --split SPLIT --teacher ... --layer ... --max-length ... "
                f"--out NEW_DIR` (or delete {cache.root} and rebuild there)"
            )
        return cache

    def __len__(self) -> int:
        """Number of rows of the split (examples)."""
        return len(self.index)

    def verify(self) -> int:
        """Check every file's sha256 against its record; MMKDError naming the first corrupt one.
        Returns the number of files checked."""
        entries = [self.manifest["index"], *(shard.record["arrays"][name] for shard in self.shards
                                             for name in SHARD_ARRAYS)]
        for entry in entries:
            verify_checksum(self.root, entry)
        return len(entries)

    def lookup(self, batch: Mapping[str, Tensor]) -> TeacherOutputs:
        """Teacher outputs (float16, CPU) of a collated batch's rows: batch["index"] (B,) are split rows,
        batch["teacher_token_mask"] (B, L_t) the positions training reads.

        token_states (B, L_t, d_T) holds the cached states at those positions and zeros elsewhere;
        sentence_embedding is (B, d_E); attention_mask is batch["teacher_attention_mask"].
        """
        rows = torch.as_tensor(batch["index"], dtype=torch.long).reshape(-1).tolist()
        token_mask = batch["teacher_token_mask"]
        bad = [row for row in rows if not 0 <= row < len(self)]
        if bad:
            raise IndexError(f"teacher cache {self.root}: rows {bad[:5]} out of range 0..{len(self) - 1}")
        spans = [self._span(int(self.index[row])) for row in rows]
        counts = token_mask.sum(dim=1).tolist()
        stale = [row for row, (_, _, start, stop), count in zip(rows, spans, counts) if stop - start != count]
        if stale:
            raise MMKDError(f"teacher cache {self.root}: rows {stale[:5]} have another number of teacher tokens "
                            f"than the batch: it was not tokenised with max_length {self.max_length} like the cache")
        flat = np.empty((sum(counts), self.hidden_size), dtype=np.float16)
        sentence = np.empty((len(rows), self.sentence_size), dtype=np.float16)
        at = 0
        for b, (shard, local, start, stop) in enumerate(spans):
            flat[at:at + stop - start] = shard.arrays["tokens"][start:stop]
            sentence[b] = shard.arrays["sentence"][local]
            at += stop - start
        token_states = torch.zeros(*token_mask.shape, self.hidden_size, dtype=torch.float16)
        token_states[token_mask] = torch.from_numpy(flat)
        return TeacherOutputs(token_states=token_states, sentence_embedding=torch.from_numpy(sentence),
                              attention_mask=batch["teacher_attention_mask"])

    def sentence_embeddings(self, rows: Sequence[int]) -> Tensor:
        """The teacher's sentence embeddings (len(rows), d_E) float16 of split rows `rows` (SentA's targets)."""
        embeddings = np.empty((len(rows), self.sentence_size), dtype=np.float16)
        for i, row in enumerate(rows):
            shard, local, _, _ = self._span(int(self.index[row]))
            embeddings[i] = shard.arrays["sentence"][local]
        return torch.from_numpy(embeddings)

    def _span(self, sentence: int) -> tuple[Shard, int, int, int]:
        """(shard, row in the shard, first token row, end token row) of sentence id `sentence`."""
        shard = self.shards[sentence // self.shard_size]
        bounds = shard.arrays["bounds"]
        local = sentence - shard.record["start"]
        return shard, local, int(bounds[local]), int(bounds[local + 1])

    def _open_shard(self, entry: dict[str, Any]) -> Shard:
        """Memory-map one shard and check its record against the manifest and its arrays' shapes."""
        record_path = self.root / entry["record"]
        if not record_path.is_file():
            raise MMKDError(f"teacher cache file {record_path} is missing; rerun `mmkd cache-teacher` with the "
                            f"same --out to rebuild it")
        record = load_json(record_path)
        arrays = {name: open_array(self.root, record["arrays"][name]) for name in SHARD_ARRAYS}
        count, tokens = record["stop"] - record["start"], record["tokens"]
        expected = {"tokens": (tokens, self.hidden_size), "bounds": (count + 1,),
                    "sentence": (count, self.sentence_size)}
        wrong = [name for name in SHARD_ARRAYS if arrays[name].shape != expected[name]]
        if wrong or any(record[key] != entry[key] for key in ("start", "stop", "tokens")):
            raise MMKDError(f"{record_path}: does not match {self.root / MANIFEST} (arrays {wrong or 'fine'}, "
                            f"range/tokens {record['start']}..{record['stop']}/{tokens}); rebuild the cache")
        return Shard(record=record, arrays=arrays)


@dataclass
class CachedTeacherCollator:
    """`collator`'s batch plus its teacher outputs from `cache` (float16, CPU) under the keys
    teacher_token_states and teacher_sentence_embedding, so the lookup runs where the collator does:
    in the DataLoader's workers, pinned by its pin_memory, off the training process's critical path."""

    collator: MMKDCollator
    cache: TeacherCache

    def set_epoch(self, epoch: int) -> None:
        self.collator.set_epoch(epoch)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        found = self.cache.lookup(batch)
        return {**batch, "teacher_token_states": found.token_states,
                "teacher_sentence_embedding": found.sentence_embedding}

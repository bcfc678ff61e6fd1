"""Read a teacher cache: checked against the current teacher and corpus, looked up by split row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmkd.errors import MMKDError
from mmkd.models.teacher import TeacherOutputs
from mmkd.teacher_cache.identity import cache_identity, identity_mismatch, split_sources
from mmkd.teacher_cache.store import MANIFEST, SHARD_ARRAYS, load_json, open_array, verify_checksum


@dataclass
class Shard:
    """The memory-mapped arrays of one shard (store.py) and whether their checksums were verified."""

    record: dict[str, Any]
    arrays: dict[str, np.ndarray]
    verified: bool = False


class TeacherCache:
    """A complete teacher cache, memory-mapped read-only.

    Sizes, shapes and dtypes of every file are checked when it is opened, each shard's sha256 on
    its first use. `lookup` gives what `Teacher.encode` gives on the collator's teacher inputs for
    those rows, up to float16 rounding, with zeros at padding positions.
    """

    def __init__(self, root: str | Path) -> None:
        """Open the cache in `root` WITHOUT checking it against a teacher or corpus (see `open`)."""
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.exists():
            raise MMKDError(f"{manifest_path}: no teacher cache here, or its build has not finished; "
                            f"run `mmkd cache-teacher ... --out {self.root}` (a killed build resumes)")
        self.manifest = load_json(manifest_path)
        self.shard_size = int(self.manifest["shard_size"])
        self.hidden_size = int(self.manifest["hidden_size"])
        self.max_length = int(self.manifest["max_length"])
        self.index = open_array(self.root, self.manifest["index"])
        verify_checksum(self.root, self.manifest["index"])
        self.shards = [self._open_shard(entry) for entry in self.manifest["shards"]]

    @classmethod
    def open(cls, path: str | Path, *, teacher: Any, corpus_split: Any, max_length: int) -> TeacherCache:
        """Open the cache in `path`, refusing it (MMKDError naming the fields) unless it was built with
        this teacher (weights, tokenizer, layer, pooling, normalize), `max_length` and `corpus_split`."""
        cache = cls(path)
        current = cache_identity(teacher, split_sources(corpus_split, str(path)), max_length)
        differences = identity_mismatch(cache.manifest, current)
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

    def lookup(self, indices: Tensor, length: int | None = None) -> TeacherOutputs:
        """Teacher outputs of split rows `indices` (B,), float32 on the CPU.

        token_states (B, length, d_T) and attention_mask (B, length) long are right-padded to `length`
        (default: the longest of these rows); sentence_embedding is (B, d_T).
        """
        rows = torch.as_tensor(indices, dtype=torch.long).reshape(-1).tolist()
        bad = [row for row in rows if not 0 <= row < len(self)]
        if bad:
            raise IndexError(f"teacher cache {self.root}: rows {bad[:5]} out of range 0..{len(self) - 1}")
        spans = [self._span(int(self.index[row])) for row in rows]
        longest = max((stop - start for _, _, start, stop in spans), default=0)
        width = longest if length is None else length
        if width < longest:
            raise MMKDError(f"teacher cache {self.root}: batch teacher length {length} is shorter than a "
                            f"cached example ({longest} tokens): the batch was not tokenised with "
                            f"max_length {self.max_length} like the cache")
        token_states = torch.zeros(len(rows), width, self.hidden_size)
        attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
        sentence = torch.empty(len(rows), self.hidden_size)
        for b, (shard, local, start, stop) in enumerate(spans):
            tokens = np.asarray(shard.arrays["tokens"][start:stop], dtype=np.float32)
            token_states[b, :stop - start] = torch.from_numpy(tokens)
            attention_mask[b, :stop - start] = 1
            sentence[b] = torch.from_numpy(np.asarray(shard.arrays["sentence"][local], dtype=np.float32))
        return TeacherOutputs(token_states=token_states, sentence_embedding=sentence,
                              attention_mask=attention_mask)

    def offsets(self, row: int) -> np.ndarray:
        """Character spans (n, 2) int32 of the cached teacher tokens of split row `row` in its `src`."""
        shard, _, start, stop = self._span(int(self.index[row]))
        return np.array(shard.arrays["offsets"][start:stop])

    def _span(self, sentence: int) -> tuple[Shard, int, int, int]:
        """(shard, row in the shard, first token row, end token row) of sentence id `sentence`;
        verifies the shard's checksums on its first use."""
        shard = self.shards[sentence // self.shard_size]
        if not shard.verified:
            for name in SHARD_ARRAYS:
                verify_checksum(self.root, shard.record["arrays"][name])
            shard.verified = True
        bounds = shard.arrays["bounds"]
        local = sentence - shard.record["start"]
        return shard, local, int(bounds[local]), int(bounds[local + 1])

    def _open_shard(self, entry: dict[str, Any]) -> Shard:
        """Memory-map one shard and check its record against the manifest and its arrays' shapes."""
        record_path = self.root / entry["record"]
        record = load_json(record_path)
        arrays = {name: open_array(self.root, record["arrays"][name]) for name in SHARD_ARRAYS}
        count, tokens = record["stop"] - record["start"], record["tokens"]
        expected = {"tokens": (tokens, self.hidden_size), "offsets": (tokens, 2), "bounds": (count + 1,),
                    "sentence": (count, self.hidden_size)}
        wrong = [name for name in SHARD_ARRAYS if arrays[name].shape != expected[name]]
        if wrong or any(record[key] != entry[key] for key in ("start", "stop", "tokens")):
            raise MMKDError(f"{record_path}: does not match {self.root / MANIFEST} (arrays {wrong or 'fine'}, "
                            f"range/tokens {record['start']}..{record['stop']}/{tokens}); rebuild the cache")
        return Shard(record=record, arrays=arrays)

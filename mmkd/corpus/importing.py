"""Import user corpora (user_formats) into the corpus schema, with checks and counters.

Per item, in order: a malformed line goes to the on-error policy (bad_input); a pair without a
language (no lang field and no default) likewise. Both sides are normalised (normalisation.py:
NFC, invisible and control characters removed, whitespace collapsed) and the report counts the
pairs each step changed and what it merged (pairs and English messages that were distinct only
before it). Then, counted and never silently used:
- empty: src or tgt without a letter or digit -> dropped;
- over_long: src or tgt longer than max_chars characters -> dropped;
- alignment_out_of_range: a link (i, j) past the words of src or tgt -> pair kept, alignment None;
- alignment_words_changed: normalisation removed a word (one made only of invisible characters)
  from a side with an alignment -> pair kept, alignment None;
- duplicate: (lang, src, tgt) already imported -> dropped (the first is kept).
Splits: kept as given when every stream names one and some stream is dev or test (test, then dev,
keep an English message the splits share: the other rows are dropped and counted as
split_overlap), and a split no stream gives (dev of a train+test source) is carved from train by
English message; otherwise all pairs are split by English message (splitting.py).

Scale: kept pairs go into Arrow record batches as they are read, and de-duplication and splitting
work on 64-bit blake2b keys in numpy arrays (no Python object per pair survives its batch); two
different pairs share a key with probability about n**2 / 2**65 (3e-6 at 10M pairs).
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import DatasetDict
from tqdm import tqdm

from mmkd.corpus.alignment import AlignmentFormatError, coerce_alignment, links_in_range
from mmkd.corpus.bad_input import BadInputLog
from mmkd.corpus.language_codes import is_language_code
from mmkd.corpus.normalisation import NORMALISATIONS, has_letter_or_digit, normalise_text
from mmkd.corpus.schema import FEATURES, SPLITS, Row, corpus_fingerprint, corpus_from_table, language_counts
from mmkd.corpus.splitting import (
    SPLIT_PRECEDENCE,
    check_fractions,
    first_split_of_each_message,
    message_key,
    split_codes,
)
from mmkd.corpus.user_formats import (
    BadLine,
    Columns,
    DatasetOptions,
    Record,
    Stream,
    open_streams,
    with_parallel_alignments,
)
from mmkd.errors import MMKDError

CHECKS = ("empty", "over_long", "alignment_out_of_range", "alignment_words_changed", "duplicate", "split_overlap")
BATCH_ROWS = 65_536


def checked_row(
    record: Record, default_lang: str | None, max_chars: int, checks: Counter, normalised: Counter
) -> tuple[Row, tuple[str, str] | None] | BadLine | None:
    """(schema row, (src, tgt) before normalisation or None where it changed nothing) of a record;
    a BadLine when it is malformed; None when a check drops it. `normalised` counts the pairs each
    normalisation step changed."""
    lang = record.lang or default_lang
    if lang is None:
        return BadLine(record.where, "lang", "no language: give a lang column/field or --lang")
    try:
        alignment = coerce_alignment(record.alignment)
    except AlignmentFormatError as err:
        return BadLine(record.where, "alignment", str(err))
    raw_src, raw_tgt = record.src.strip(), record.tgt.strip()
    steps: set[str] = set()
    src, tgt = normalise_text(raw_src, steps), normalise_text(raw_tgt, steps)
    normalised.update(steps)
    if not has_letter_or_digit(src) or not has_letter_or_digit(tgt):
        checks["empty"] += 1
        return None
    if len(src) > max_chars or len(tgt) > max_chars:
        checks["over_long"] += 1
        return None
    if alignment is not None and (len(src.split()), len(tgt.split())) != (len(raw_src.split()), len(raw_tgt.split())):
        checks["alignment_words_changed"] += 1
        alignment = None
    if alignment is not None and not links_in_range(alignment, src, tgt):
        checks["alignment_out_of_range"] += 1
        alignment = None
    row = {"src": src, "tgt": tgt, "lang": lang, "alignment": alignment}
    return row, (raw_src, raw_tgt) if steps else None


def pair_key(lang: str, src: str, tgt: str) -> int:
    """64-bit blake2b key of a (lang, src, tgt) pair."""
    return int.from_bytes(hashlib.blake2b(f"{lang}\x00{src}\x00{tgt}".encode("utf-8"), digest_size=8).digest(), "big")


class KeptPairs:
    """Pairs gathered as Arrow record batches, with uint64 keys per pair: "pair" (lang, src, tgt),
    "message" (splitting.message_key of src under `seed`), the same two of the text before
    normalisation ("raw_pair", "raw_message"), and "split" (the index into SPLITS a stream gave)."""

    KEYS = ("pair", "message", "raw_pair", "raw_message", "split")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.batches: list[pa.RecordBatch] = []
        self.columns: dict[str, list] = {name: [] for name in FEATURES}
        self.keys = {name: array("Q") for name in self.KEYS}

    def add(self, row: Row, raw: tuple[str, str] | None, split: int) -> None:
        """Append one checked row; `raw` = its (src, tgt) before normalisation, None if the same."""
        for name, values in self.columns.items():
            values.append(row[name])
        pair, message = pair_key(row["lang"], row["src"], row["tgt"]), message_key(row["src"], self.seed)
        self.keys["pair"].append(pair)
        self.keys["message"].append(message)
        self.keys["raw_pair"].append(pair if raw is None else pair_key(row["lang"], *raw))
        self.keys["raw_message"].append(message if raw is None else message_key(raw[0], self.seed))
        self.keys["split"].append(split)
        if len(self.columns["src"]) == BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Move the rows gathered so far into an Arrow record batch."""
        if self.columns["src"]:
            self.batches.append(pa.RecordBatch.from_pydict(self.columns, schema=FEATURES.arrow_schema))
            self.columns = {name: [] for name in FEATURES}

    def finish(self) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """The table of every row added, in order, in one chunk per column (a later take then copies
        no chunks together), and the keys as numpy arrays."""
        self.flush()
        batches, self.batches = self.batches, []
        table = pa.Table.from_batches(batches, schema=FEATURES.arrow_schema)
        del batches
        table = table.combine_chunks()
        return table, {name: np.frombuffer(keys, dtype=np.uint64) for name, keys in self.keys.items()}


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Mask of the first row of each distinct key."""
    mask = np.zeros(len(keys), dtype=bool)
    mask[np.unique(keys, return_index=True)[1]] = True
    return mask


def distinct(keys: np.ndarray) -> int:
    """Number of distinct keys."""
    return len(np.unique(keys))


def given_splits(streams: Sequence[Stream], resplit: bool) -> bool:
    """Whether to keep the streams' own splits (see the module docstring)."""
    named = [stream.split is not None for stream in streams]
    if resplit or not any(named):
        return False
    if not all(named):
        unnamed = [stream.name for stream in streams if stream.split is None]
        raise MMKDError(f"some inputs name a split (train/dev/test) and {unnamed} do not: "
                        f"name all of them, or give --resplit to split everything by English message")
    return any(stream.split != "train" for stream in streams)


def check_options(lang: str | None, langs: Sequence[str] | None, alignments: Sequence[str], max_chars: int) -> None:
    """Raise MMKDError for option values that cannot work, before anything is read."""
    if max_chars < 1:
        raise MMKDError(f"max_chars must be >= 1, got {max_chars}")
    if lang is not None and not is_language_code(lang):
        raise MMKDError(f"--lang: {lang!r} is not a language code (ISO 639: de, zh_CN, pt-BR, sr@latin)")
    if langs and alignments:
        raise MMKDError("--alignments cannot be used with --langs (a parallel-sentences line holds several "
                        "pairs): give each language's pairs as a file of its own")
    for path in alignments:
        if not Path(path).is_file():
            raise MMKDError(f"{path}: no such alignment file (--alignments): give an existing Pharaoh file, "
                            f"one per input in input order")


def import_corpus(
    inputs: Sequence[str],
    fmt: str = "auto",
    lang: str | None = None,
    src_lang: str = "en",
    columns: Columns = Columns(),
    alignments: Sequence[str] = (),
    on_error: str = "fail",
    max_chars: int = 1000,
    seed: int = 0,
    dev_fraction: float = 0.05,
    test_fraction: float = 0.10,
    resplit: bool = False,
    langs: Sequence[str] | None = None,
    dataset_options: DatasetOptions = DatasetOptions(),
) -> tuple[DatasetDict, dict[str, Any]]:
    """Read user corpora, in any mix of formats, into one corpus; returns (corpus, report).

    alignments: Pharaoh files, one per stream in stream order (one per TSV/JSONL input; Moses:
    one per target file; datasets: one per split), each with one line per pair.
    langs: the translation columns of parallel-sentences TSV files (user_formats.py).
    """
    check_fractions(dev_fraction, test_fraction)
    check_options(lang, langs, alignments, max_chars)
    bad_input = BadInputLog(on_error)
    streams = open_streams(inputs, fmt, columns, src_lang, langs, dataset_options)
    if alignments and len(alignments) != len(streams):
        raise MMKDError(f"{len(alignments)} alignment files for {len(streams)} inputs "
                        f"{[stream.name for stream in streams]}: give one per input, in this order")
    if alignments:
        streams = [with_parallel_alignments(stream, path) for stream, path in zip(streams, alignments)]
    keep_given = given_splits(streams, resplit)
    if keep_given:  # duplicates keep their first copy: read test, then dev, then train
        streams = sorted(streams, key=lambda stream: SPLIT_PRECEDENCE.index(stream.split))

    checks: Counter = Counter()
    normalised: Counter = Counter()
    kept = KeptPairs(seed)
    stream_items: dict[str, int] = {}
    for stream in streams:
        n_items = 0
        split = SPLITS.index(stream.split) if keep_given else 0
        for item in tqdm(stream.items, desc=stream.name, unit="pair", disable=None):
            n_items += 1
            checked = item if isinstance(item, BadLine) else checked_row(item, lang, max_chars, checks, normalised)
            if isinstance(checked, BadLine):
                bad_input.record(checked.where, checked.kind, checked.message)
            elif checked is not None:
                kept.add(*checked, split)
        stream_items[stream.name] = n_items
    table, keys = kept.finish()

    rows = np.flatnonzero(first_occurrences(keys["pair"]))
    checks["duplicate"] = len(table) - len(rows)
    carved: list[str] = []
    if keep_given:
        in_first_split = first_split_of_each_message(keys["message"][rows], keys["split"][rows])
        checks["split_overlap"] = int(np.count_nonzero(~in_first_split))
        rows = rows[in_first_split]
        codes = keys["split"][rows].astype(np.int8)
        given = {stream.split for stream in streams}
        carved = [split for split in ("dev", "test") if split not in given and "train" in given]
        drawn = split_codes(keys["message"][rows], dev_fraction, test_fraction)
        carve = (codes == SPLITS.index("train")) & np.isin(drawn, [SPLITS.index(split) for split in carved])
        codes[carve] = drawn[carve]
    else:
        codes = split_codes(keys["message"][rows], dev_fraction, test_fraction)
    dsd = corpus_from_table(table, {split: rows[codes == i] for i, split in enumerate(SPLITS)})

    report = {
        "source": "import",
        "parameters": {
            "inputs": list(inputs),
            "format": fmt,
            "lang": lang,
            "langs": None if langs is None else list(langs),
            "src_lang": src_lang,
            "columns": asdict(columns),
            "alignments": list(alignments),
            "on_error": on_error,
            "max_chars": max_chars,
            "seed": seed,
            "dev_fraction": dev_fraction,
            "test_fraction": test_fraction,
            "resplit": resplit,
            "datasets": asdict(dataset_options),
        },
        "splits": "given" if keep_given else "by_english_message",
        "carved_from_train": carved,
        "streams": stream_items,
        "bad_input": bad_input.summary(),
        "normalisation": {
            "changed": {name: normalised[name] for name in NORMALISATIONS},
            "merged_pairs": distinct(keys["raw_pair"]) - distinct(keys["pair"]),
            "merged_messages": distinct(keys["raw_message"]) - distinct(keys["message"]),
        },
        "checks": {name: checks[name] for name in CHECKS},
        "counts": language_counts(dsd),
        "fingerprint": corpus_fingerprint(dsd),
    }
    return dsd, report

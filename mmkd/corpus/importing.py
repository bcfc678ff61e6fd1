"""Import user corpora (user_formats) into the corpus schema, with checks and counters.

Per item, in order: a malformed line goes to the on-error policy (bad_input); a pair without a
language (no lang field and no default) likewise. Then, counted and never silently used:
- empty: src or tgt empty after trimming whitespace -> dropped;
- over_long: src or tgt longer than max_chars characters -> dropped;
- alignment_out_of_range: a link (i, j) past the words of src or tgt -> pair kept, alignment None;
- duplicate: (lang, src, tgt) already imported -> dropped (the first is kept).
Splits: kept as given when every stream names one and some stream is dev or test (test, then dev,
keep an English message the splits share: the other rows are dropped and counted as
split_overlap); otherwise split by English message (splitting.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from collections.abc import Sequence
from typing import Any

from datasets import DatasetDict
from tqdm import tqdm

from mmkd.corpus.alignment import AlignmentFormatError, coerce_alignment, links_in_range
from mmkd.corpus.bad_input import BadInputLog
from mmkd.corpus.schema import Row, corpus_fingerprint, language_counts, make_corpus
from mmkd.corpus.splitting import SPLIT_PRECEDENCE, check_fractions, separate_given_splits, split_rows
from mmkd.corpus.user_formats import BadLine, Columns, Record, Stream, open_streams, with_parallel_alignments
from mmkd.errors import MMKDError

CHECKS = ("empty", "over_long", "alignment_out_of_range", "duplicate", "split_overlap")


def checked_row(record: Record, default_lang: str | None, max_chars: int, checks: Counter) -> Row | BadLine | None:
    """The schema row of a record; a BadLine when it is malformed; None when a check drops it."""
    lang = record.lang or default_lang
    if lang is None:
        return BadLine(record.where, "lang", "no language: give a lang column/field or --lang")
    try:
        alignment = coerce_alignment(record.alignment)
    except AlignmentFormatError as err:
        return BadLine(record.where, "alignment", str(err))
    src, tgt = record.src.strip(), record.tgt.strip()
    if not src or not tgt:
        checks["empty"] += 1
        return None
    if len(src) > max_chars or len(tgt) > max_chars:
        checks["over_long"] += 1
        return None
    if alignment is not None and not links_in_range(alignment, src, tgt):
        checks["alignment_out_of_range"] += 1
        alignment = None
    return {"src": src, "tgt": tgt, "lang": lang, "alignment": alignment}


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
    dataset_config: str | None = None,
) -> tuple[DatasetDict, dict[str, Any]]:
    """Read user corpora into the corpus schema; returns (corpus, report).

    alignments: Pharaoh files, one per stream in stream order (one per TSV/JSONL input; Moses:
    one per target file; datasets: one per split), each with one line per pair.
    """
    check_fractions(dev_fraction, test_fraction)
    if max_chars < 1:
        raise MMKDError(f"max_chars must be >= 1, got {max_chars}")
    bad_input = BadInputLog(on_error)
    streams = open_streams(inputs, fmt, columns, src_lang, dataset_config)
    if alignments and len(alignments) != len(streams):
        raise MMKDError(f"{len(alignments)} alignment files for {len(streams)} inputs "
                        f"{[stream.name for stream in streams]}: give one per input, in this order")
    if alignments:
        streams = [with_parallel_alignments(stream, path) for stream, path in zip(streams, alignments)]
    keep_given = given_splits(streams, resplit)
    if keep_given:  # duplicates keep their first copy: read test, then dev, then train
        streams = sorted(streams, key=lambda stream: SPLIT_PRECEDENCE.index(stream.split))

    checks: Counter = Counter()
    seen: set[tuple[str, str, str]] = set()
    rows_by_stream: list[tuple[Stream, list[Row]]] = []
    stream_items: dict[str, int] = {}
    for stream in streams:
        rows = []
        n_items = 0
        for item in tqdm(stream.items, desc=stream.name, unit="pair", disable=None):
            n_items += 1
            row = item if isinstance(item, BadLine) else checked_row(item, lang, max_chars, checks)
            if isinstance(row, BadLine):
                bad_input.record(row.where, row.kind, row.message)
                continue
            if row is None:
                continue
            key = (row["lang"], row["src"], row["tgt"])
            if key in seen:
                checks["duplicate"] += 1
                continue
            seen.add(key)
            rows.append(row)
        stream_items[stream.name] = n_items
        rows_by_stream.append((stream, rows))

    if keep_given:
        given: dict[str, list[Row]] = {}
        for stream, rows in rows_by_stream:
            given.setdefault(stream.split, []).extend(rows)
        by_split, checks["split_overlap"] = separate_given_splits(given)
    else:
        all_rows = (row for _, rows in rows_by_stream for row in rows)
        by_split = split_rows(all_rows, seed, dev_fraction, test_fraction)
    dsd = make_corpus(by_split)

    report = {
        "source": "import",
        "parameters": {
            "inputs": list(inputs),
            "format": fmt,
            "lang": lang,
            "src_lang": src_lang,
            "columns": asdict(columns),
            "alignments": list(alignments),
            "on_error": on_error,
            "max_chars": max_chars,
            "seed": seed,
            "dev_fraction": dev_fraction,
            "test_fraction": test_fraction,
            "resplit": resplit,
            "dataset_config": dataset_config,
        },
        "splits": "given" if keep_given else "by_english_message",
        "streams": stream_items,
        "bad_input": bad_input.summary(),
        "checks": {name: checks[name] for name in CHECKS},
        "counts": language_counts(dsd),
        "fingerprint": corpus_fingerprint(dsd),
    }
    return dsd, report

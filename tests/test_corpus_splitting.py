"""The split by English message: deterministic, disjoint, in proportion, the same for every language."""

from __future__ import annotations

import numpy as np
import pytest

from mmkd.corpus.schema import SPLITS
from mmkd.corpus.splitting import first_split_of_each_message, message_key, split_codes, split_of, split_rows
from mmkd.errors import MMKDError

SOURCES = [f"Could not open archive number {i} for reading" for i in range(3000)]


def row(src: str, lang: str = "de") -> dict:
    return {"src": src, "tgt": f"{lang}: {src}", "lang": lang, "alignment": None}


def rows_for(langs: list[str]) -> list[dict]:
    return [row(src, lang) for lang in langs for src in SOURCES]


def test_split_is_deterministic_and_depends_on_the_seed():
    first = [split_of(src, 0, 0.05, 0.10) for src in SOURCES]
    assert first == [split_of(src, 0, 0.05, 0.10) for src in SOURCES]
    other_seed = [split_of(src, 1, 0.05, 0.10) for src in SOURCES]
    assert sum(a != b for a, b in zip(first, other_seed)) > 300


def test_split_fractions_are_respected():
    splits = [split_of(src, 0, 0.05, 0.10) for src in SOURCES]
    assert splits.count("test") / len(SOURCES) == pytest.approx(0.10, abs=0.02)
    assert splits.count("dev") / len(SOURCES) == pytest.approx(0.05, abs=0.015)


def test_a_message_lands_in_one_split_for_every_language():
    by_split = split_rows(rows_for(["de", "fr", "zh_CN"]), 0, 0.05, 0.10)
    srcs = {split: {row["src"] for row in rows} for split, rows in by_split.items()}
    assert not srcs["train"] & srcs["dev"] and not srcs["train"] & srcs["test"] and not srcs["dev"] & srcs["test"]
    for rows in by_split.values():
        langs_per_src: dict[str, set[str]] = {}
        for row in rows:
            langs_per_src.setdefault(row["src"], set()).add(row["lang"])
        assert all(langs == {"de", "fr", "zh_CN"} for langs in langs_per_src.values())


def test_case_and_whitespace_variants_share_a_split():
    for src in SOURCES[:200]:
        assert split_of(src, 3, 0.2, 0.2) == split_of("  " + src.upper().replace(" ", "   "), 3, 0.2, 0.2)


def test_bad_fractions_are_refused():
    with pytest.raises(MMKDError, match="fraction"):
        split_rows([], 0, 0.6, 0.5)
    with pytest.raises(MMKDError, match="fraction"):
        split_rows([], 0, -0.1, 0.1)


def test_split_codes_of_key_arrays_match_split_of():
    keys = np.array([message_key(src, 5) for src in SOURCES], dtype=np.uint64)
    assert [SPLITS[code] for code in split_codes(keys, 0.2, 0.3)] == [split_of(src, 5, 0.2, 0.3) for src in SOURCES]


def test_given_splits_are_made_disjoint_test_first():
    given = [("train", "Shared by all"), ("train", "Only in train"), ("train", "Shared with dev"),
             ("dev", "Shared by all"), ("dev", "shared  with DEV"), ("test", "Shared by all")]
    keys = np.array([message_key(src, 0) for _, src in given], dtype=np.uint64)
    codes = np.array([SPLITS.index(split) for split, _ in given], dtype=np.int8)
    kept = first_split_of_each_message(keys, codes)
    assert [given[i] for i in np.flatnonzero(kept)] == [("train", "Only in train"), ("dev", "shared  with DEV"),
                                                        ("test", "Shared by all")]

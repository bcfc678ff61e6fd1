"""The split by English message: deterministic, disjoint, in proportion, the same for every language."""

from __future__ import annotations

import pytest

from mmkd.corpus.splitting import separate_given_splits, split_of, split_rows
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


def test_given_splits_are_made_disjoint_test_first():
    given = {
        "train": [row("Shared by all"), row("Only in train"), row("Shared with dev")],
        "dev": [row("Shared by all", "fr"), row("shared  with DEV")],
        "test": [row("Shared by all", "eu")],
    }
    by_split, removed = separate_given_splits(given)
    assert removed == 3
    assert [r["src"] for r in by_split["test"]] == ["Shared by all"]
    assert [r["src"] for r in by_split["dev"]] == ["shared  with DEV"]
    assert [r["src"] for r in by_split["train"]] == ["Only in train"]

"""Pharaoh alignments: parsing, per-pair fields, index range."""

from __future__ import annotations

import pytest

from mmkd.corpus.alignment import AlignmentFormatError, coerce_alignment, links_in_range, parse_pharaoh


def test_parse_pharaoh():
    assert parse_pharaoh("0-0 1-2  2-1\n") == [[0, 0], [1, 2], [2, 1]]
    assert parse_pharaoh("") == []


@pytest.mark.parametrize("text", ["0-0 1:2", "0-0 1-", "a-1", "0-0-1", "-1-2", "0p1"])
def test_bad_pharaoh_token_is_named(text):
    bad = text.split()[-1]
    with pytest.raises(AlignmentFormatError, match=repr(bad).replace("\\", "\\\\")):
        parse_pharaoh(text)


def test_coerce_alignment_accepts_strings_lists_and_none():
    assert coerce_alignment(None) is None
    assert coerce_alignment("0-1") == [[0, 1]]
    assert coerce_alignment([[0, 1], (2, 3)]) == [[0, 1], [2, 3]]
    assert coerce_alignment([]) == []


@pytest.mark.parametrize("value", [[[0, 1, 2]], [[0, -1]], [[0, 1.5]], [[True, 0]], ["0-1"], 5])
def test_coerce_alignment_refuses_bad_links(value):
    with pytest.raises(AlignmentFormatError):
        coerce_alignment(value)


def test_links_in_range_uses_whitespace_words():
    assert links_in_range([[0, 0], [2, 1]], "one two  three", "eins zwei")
    assert not links_in_range([[3, 0]], "one two three", "eins zwei")
    assert not links_in_range([[0, 2]], "one two three", "eins zwei")
    assert links_in_range([], "", "")

"""Word alignments in Pharaoh format: "0-0 1-2 2-1", links (i, j) from English word i to
translation word j, words = `str.split()` of each side, 0-based."""

from __future__ import annotations

import re
from collections.abc import Sequence

PHARAOH_LINK = re.compile(r"(\d+)-(\d+)")


class AlignmentFormatError(ValueError):
    """A Pharaoh string or link list that cannot be read; the message names the bad token."""


def parse_pharaoh(text: str) -> list[list[int]]:
    """'0-0 1-2' -> [[0, 0], [1, 2]]; '' (or only whitespace) -> [] (known: no links)."""
    links = []
    for token in text.split():
        match = PHARAOH_LINK.fullmatch(token)
        if match is None:
            raise AlignmentFormatError(f"bad Pharaoh link {token!r} (expected i-j with 0-based integers)")
        links.append([int(match.group(1)), int(match.group(2))])
    return links


def coerce_alignment(value: object) -> list[list[int]] | None:
    """A per-pair alignment field as links: None stays None (unknown), a Pharaoh string is parsed,
    a list of [i, j] pairs of non-negative integers is checked and copied."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_pharaoh(value)
    if not isinstance(value, Sequence):
        raise AlignmentFormatError(f"alignment must be a Pharaoh string or a list of [i, j] pairs, got {value!r}")
    links = []
    for link in value:
        if (
            not isinstance(link, Sequence)
            or isinstance(link, str)
            or len(link) != 2
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in link)
        ):
            raise AlignmentFormatError(f"bad alignment link {link!r} (expected [i, j], non-negative integers)")
        links.append([link[0], link[1]])
    return links


def links_in_range(links: Sequence[Sequence[int]], src: str, tgt: str) -> bool:
    """Every link (i, j) indexes an existing word: i < len(src.split()), j < len(tgt.split())."""
    n_src, n_tgt = len(src.split()), len(tgt.split())
    return all(i < n_src and j < n_tgt for i, j in links)

"""Train/dev/test split by English message, deterministic by seed.

A pair's split depends only on (seed, normalised src): blake2b of the two gives a fraction u in
[0, 1); u < test_fraction -> test, u < test_fraction + dev_fraction -> dev, else train. The same
English message therefore lands in the same split for every language and every corpus built with
that seed, and the normalisation (case-folded, whitespace collapsed) keeps near-identical messages
together too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from mmkd.corpus.schema import SPLITS, Row
from mmkd.errors import MMKDError

SPLIT_PRECEDENCE = ("test", "dev", "train")  # where given splits share a src, the earlier one keeps it


def normalise_src(src: str) -> str:
    """The key a split is drawn from: case-folded, whitespace runs collapsed to one space, stripped."""
    return " ".join(src.casefold().split())


def split_fraction(src: str, seed: int) -> float:
    """Uniform pseudo-random fraction in [0, 1) from (seed, normalised src)."""
    key = f"{seed}\x00{normalise_src(src)}".encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64


def check_fractions(dev_fraction: float, test_fraction: float) -> None:
    """Raise MMKDError unless both fractions are in [0, 1) and leave room for train."""
    if not (0 <= dev_fraction < 1 and 0 <= test_fraction < 1 and dev_fraction + test_fraction < 1):
        raise MMKDError(
            f"dev fraction {dev_fraction} and test fraction {test_fraction} must be >= 0 with a sum < 1"
        )


def split_of(src: str, seed: int, dev_fraction: float, test_fraction: float) -> str:
    """'train', 'dev' or 'test' for an English message."""
    u = split_fraction(src, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + dev_fraction:
        return "dev"
    return "train"


def split_rows(rows: Iterable[Row], seed: int, dev_fraction: float, test_fraction: float) -> dict[str, list[Row]]:
    """Rows per split, each row placed by `split_of` its src."""
    check_fractions(dev_fraction, test_fraction)
    by_split: dict[str, list[Row]] = {split: [] for split in SPLITS}
    for row in rows:
        by_split[split_of(row["src"], seed, dev_fraction, test_fraction)].append(row)
    return by_split


def separate_given_splits(rows_by_split: Mapping[str, Sequence[Row]]) -> tuple[dict[str, list[Row]], int]:
    """Make given splits disjoint by English message: a src (normalised) kept by test is removed from
    dev and train, one kept by dev from train. Returns (rows per split, number of rows removed)."""
    claimed: set[str] = set()
    by_split: dict[str, list[Row]] = {}
    removed = 0
    for split in SPLIT_PRECEDENCE:
        kept = [row for row in rows_by_split.get(split, ()) if normalise_src(row["src"]) not in claimed]
        removed += len(rows_by_split.get(split, ())) - len(kept)
        claimed.update(normalise_src(row["src"]) for row in kept)
        by_split[split] = kept
    return {split: by_split[split] for split in SPLITS}, removed

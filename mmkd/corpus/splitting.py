"""Train/dev/test split by English message, deterministic by seed.

A pair's split depends only on (seed, normalised src): blake2b of the two gives a 64-bit message
key k and a fraction u = k / 2**64 in [0, 1); u < test_fraction -> test, u < test_fraction +
dev_fraction -> dev, else train. The same English message therefore lands in the same split for
every language and every corpus built with that seed, and the normalisation (case-folded,
whitespace collapsed) keeps near-identical messages together too. The array functions do the same
over numpy arrays of message keys, for corpora of millions of pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from mmkd.corpus.schema import SPLITS, Row
from mmkd.errors import MMKDError

SPLIT_PRECEDENCE = ("test", "dev", "train")  # where given splits share a src, the earlier one keeps it


def normalise_src(src: str) -> str:
    """The key a split is drawn from: case-folded, whitespace runs collapsed to one space, stripped."""
    return " ".join(src.casefold().split())


def message_key(src: str, seed: int) -> int:
    """64-bit key of an English message under `seed`: blake2b of (seed, normalised src)."""
    key = f"{seed}\x00{normalise_src(src)}".encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def split_fraction(src: str, seed: int) -> float:
    """Uniform pseudo-random fraction in [0, 1) from (seed, normalised src)."""
    return message_key(src, seed) / 2**64


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


def split_codes(keys: np.ndarray, dev_fraction: float, test_fraction: float) -> np.ndarray:
    """Index into SPLITS of each message key (uint64 array), as `split_of` decides it."""
    fractions = keys.astype(np.float64) / 2**64
    codes = np.full(len(keys), SPLITS.index("train"), dtype=np.int8)
    codes[fractions < test_fraction + dev_fraction] = SPLITS.index("dev")
    codes[fractions < test_fraction] = SPLITS.index("test")
    return codes


def first_split_of_each_message(keys: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Mask of the rows to keep so that given splits are disjoint by English message: each message
    (uint64 key) stays in the first of SPLIT_PRECEDENCE it is given in (codes index SPLITS)."""
    rank_of_code = np.array([SPLIT_PRECEDENCE.index(split) for split in SPLITS], dtype=np.int8)
    ranks = rank_of_code[codes]
    messages, inverse = np.unique(keys, return_inverse=True)
    best = np.full(len(messages), len(SPLIT_PRECEDENCE), dtype=np.int8)
    np.minimum.at(best, inverse, ranks)
    return ranks == best[inverse]

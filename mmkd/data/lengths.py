"""Token lengths of a split's TLM pairs, for length-grouped batching (LanguageSampler's `lengths`)."""

from __future__ import annotations

import hashlib

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from mmkd.data.tokenization import encode_texts
from mmkd.teacher_cache.identity import tokenizer_sha256

LENGTH_COLUMN = "tlm_length"


def tlm_pair_lengths(split: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> np.ndarray:
    """(N,) int64: tokens of each row's [CLS] x [SEP] y [SEP] as the collator encodes it (at most max_length).

    Computed with `datasets.map` (batched, through `encode_texts`) under a fingerprint of the split,
    the tokenizer and max_length, so a split saved on disk computes it once and reads the cache file
    after; on several ranks let one rank compute first (the others then read its cache).
    """
    fingerprint = hashlib.sha256(
        f"{split._fingerprint}:{tokenizer_sha256(tokenizer)}:{max_length}:{LENGTH_COLUMN}".encode()).hexdigest()[:16]

    def lengths(batch: dict[str, list]) -> dict[str, list[int]]:
        pair = encode_texts(tokenizer, batch["src"], batch["tgt"], max_length=max_length)
        return {LENGTH_COLUMN: pair["attention_mask"].sum(dim=1).tolist()}

    measured = split.map(lengths, batched=True, batch_size=1000,
                         remove_columns=split.column_names, new_fingerprint=fingerprint,
                         desc="TLM pair lengths")
    return np.asarray(measured[LENGTH_COLUMN], dtype=np.int64)

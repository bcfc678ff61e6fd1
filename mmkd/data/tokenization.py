"""The one tokeniser call of MMKD: the collator and the teacher cache both encode through it, so
the teacher positions the collator matches are the positions the cache stores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], pairs: Sequence[str] | None = None,
                 *, max_length: int) -> BatchEncoding:
    """Encode texts (or text pairs, truncated longest-first) to at most `max_length` tokens each.

    Right-padded to the longest in the batch. Returns long tensors input_ids, attention_mask,
    special_tokens_mask (B, L) and offset_mapping (B, L, 2) (character spans in each text; (0, 0)
    for special and padding tokens), with the fast tokenizer's encodings kept for `sequence_ids`.
    Tensors are made here, not by the tokenizer (its return_tensors flattens nested lists in Python).
    """
    encoding = tokenizer(
        list(texts),
        None if pairs is None else list(pairs),
        truncation="longest_first",
        max_length=max_length,
        padding="longest",
        padding_side="right",
        return_attention_mask=True,
        return_token_type_ids=False,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    tensors = {key: torch.tensor(value, dtype=torch.long) for key, value in encoding.items()}
    return BatchEncoding(tensors, encoding=encoding.encodings)

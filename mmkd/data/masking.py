"""BERT-style masking for TLM: 15% of the ordinary tokens, of which 80% [MASK], 10% random, 10% kept."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor

IGNORE_INDEX = -100  # label of positions that were not selected (cross-entropy's ignore_index)
MASK_FRACTION = 0.8  # of the selected tokens, replaced by the mask token
RANDOM_FRACTION = 0.1  # of the selected tokens, replaced by a random ordinary token; the rest stay


def mask_tokens(input_ids: Tensor, special_tokens_mask: Tensor, vocab_size: int, mask_token_id: int,
                probability: float = 0.15, *, special_token_ids: Collection[int],
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Mask input_ids (B, L) long; returns (masked_ids (B, L), labels (B, L)), both long.

    Each token with special_tokens_mask False is selected with `probability` (independently); pass
    True at special AND padding tokens, which are never selected. Selected tokens become the mask
    token (80%), a random id drawn uniformly from [0, vocab_size) minus `special_token_ids` (10%), or
    stay (10%); labels hold the original id there and IGNORE_INDEX elsewhere. All draws come from
    `generator` (CPU) in a fixed order, so equal generators give equal masks.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"mask_tokens: probability must be in [0, 1], got {probability}")
    if input_ids.shape != special_tokens_mask.shape:
        raise ValueError(
            f"mask_tokens: input_ids {tuple(input_ids.shape)} and special_tokens_mask "
            f"{tuple(special_tokens_mask.shape)} differ in shape"
        )
    ordinary_ids = torch.ones(vocab_size, dtype=torch.bool)
    ordinary_ids[torch.tensor([i for i in special_token_ids if 0 <= i < vocab_size], dtype=torch.long)] = False
    candidates = torch.nonzero(ordinary_ids).squeeze(1)
    if len(candidates) == 0:
        raise ValueError("mask_tokens: every id in the vocabulary is special: no random replacement to draw")

    shape = input_ids.shape
    selected = (torch.rand(shape, generator=generator) < probability) & ~special_tokens_mask.bool()
    choice = torch.rand(shape, generator=generator)
    random_ids = candidates[torch.randint(len(candidates), shape, generator=generator)]
    to_mask = selected & (choice < MASK_FRACTION)
    to_random = selected & (choice >= MASK_FRACTION) & (choice < MASK_FRACTION + RANDOM_FRACTION)

    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids.to(input_ids.dtype), masked)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked, labels

"""TLM masking: proportions, special tokens, random replacements, determinism."""

from __future__ import annotations

import pytest
import torch

from mmkd.data.masking import IGNORE_INDEX, mask_tokens

VOCAB_SIZE = 1000
MASK_ID = 4
SPECIAL_IDS = [0, 1, 2, 3, 4]  # pad, unk, cls, sep, mask


def batch(rows: int = 200, length: int = 128, seed: int = 0):
    """Ordinary ids in [5, VOCAB_SIZE) framed by cls (2) / sep (3), rows padded (0) to random lengths."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB_SIZE, (rows, length), generator=generator)
    lengths = torch.randint(8, length + 1, (rows,), generator=generator)
    positions = torch.arange(length)[None, :]
    ids[:, 0] = 2
    ids[torch.arange(rows), lengths - 1] = 3
    ids[positions >= lengths[:, None]] = 0
    special = (positions == 0) | (positions >= lengths[:, None] - 1)
    return ids, special


def draw(ids, special, seed, probability=0.15, vocab_size=VOCAB_SIZE, special_ids=SPECIAL_IDS):
    return mask_tokens(ids, special, vocab_size, MASK_ID, probability, special_token_ids=special_ids,
                       generator=torch.Generator().manual_seed(seed))


def test_proportions_are_15_percent_then_80_10_10():
    ids, special = batch()
    masked, labels = draw(ids, special, seed=1)
    ordinary = ~special
    selected = labels != IGNORE_INDEX
    rate = selected.sum().item() / ordinary.sum().item()  # ~13k ordinary tokens: sd of the rate 0.003
    assert abs(rate - 0.15) < 0.012
    n = selected.sum().item()  # ~2k selected: sd of a fraction ~0.009 (80%), 0.007 (10%)
    to_mask = (selected & (masked == MASK_ID)).sum().item() / n
    unchanged = (selected & (masked == ids)).sum().item() / n
    replaced = (selected & (masked != MASK_ID) & (masked != ids)).sum().item() / n
    assert abs(to_mask - 0.8) < 0.03
    assert abs(replaced - 0.1) < 0.025  # a random id equal to the original (p = 1/995) counts as unchanged
    assert abs(unchanged - 0.1) < 0.025


def test_labels_hold_the_original_ids_only_where_selected():
    ids, special = batch(rows=50)
    masked, labels = draw(ids, special, seed=2)
    selected = labels != IGNORE_INDEX
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])


def test_special_and_padding_tokens_are_never_selected():
    ids, special = batch(rows=50)
    masked, labels = draw(ids, special, seed=3, probability=1.0)
    assert torch.equal(masked[special], ids[special])
    assert (labels[special] == IGNORE_INDEX).all()
    assert (labels[~special] != IGNORE_INDEX).all()  # probability 1 selects every ordinary token


def test_random_replacements_are_never_special_ids():
    ids, special = batch(rows=50)
    # vocabulary of 6 ids, 5 of them special: the only possible random id is 5
    small_ids = torch.where(special, ids, torch.full_like(ids, 5))
    masked, labels = draw(small_ids, special, seed=4, probability=1.0, vocab_size=6)
    selected = labels != IGNORE_INDEX
    assert set(masked[selected].unique().tolist()) == {MASK_ID, 5}
    masked, labels = draw(ids, special, seed=5, probability=1.0, special_ids=SPECIAL_IDS + [7])
    replaced = (labels != IGNORE_INDEX) & (masked != MASK_ID) & (masked != ids)
    assert replaced.sum() > 100
    assert not torch.isin(masked[replaced], torch.tensor(SPECIAL_IDS + [7])).any()
    assert (masked[replaced] < VOCAB_SIZE).all()


def test_masks_are_deterministic_given_the_generator():
    ids, special = batch(rows=20)
    first, second, other = draw(ids, special, seed=6), draw(ids, special, seed=6), draw(ids, special, seed=7)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


def test_shape_mismatch_is_refused():
    ids, special = batch(rows=4)
    with pytest.raises(ValueError, match="differ in shape"):
        draw(ids, special[:, :-1], seed=0)

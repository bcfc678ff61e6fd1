"""Pre-tokenised token columns: the encodings and batches assembled from them equal those of tokenising
each batch (`encode_texts`, the collator's path before the columns), truncation included; computed once
per split and cached by datasets; the collator never calls a tokenizer on rows that carry them."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from mmkd.data.collate import MMKDCollator, _segment_ids
from mmkd.data.masking import mask_tokens
from mmkd.data.seeding import seeded_generator
from mmkd.data.span_matching import match_aligned, match_spans, sequence_ids, special_tokens, token_spans
from mmkd.data.token_columns import TOKEN_FEATURES, TokenColumns
from mmkd.data.tokenization import encode_texts

HOUSE_EN = "The house is big, and the garden is small!"
HOUSE_DE = "Das Haus ist groß, und der Garten ist klein!"
PAIRS = {
    "src": [HOUSE_EN, "The café serves naïve coffee.", "Tokenizers split words into pieces.", "Über the [MASK] river.",
            "house " * 14 + "house", "Print"],
    "tgt": [HOUSE_DE, "Das Café ist naïv und schön.", "東京は日本の首都です。", "Über den Fluss ✈.",
            "haus " * 3 + "haus", "Drucken " * 20 + "jetzt"],
    "lang": ["de", "de", "ja", "de", "de", "de"],
    "alignment": [[[1, 1], [0, 1], [3, 3], [8, 8]], None, [], [[0, 0], [3, 3]], [[0, 0], [14, 3]], [[0, 20]]],
}
MAX_LENGTHS = (5, 6, 9, 10, 13, 128)


def reference_batch(collator: MMKDCollator, examples: list[dict]) -> dict:
    """The batch as the collator built it by tokenising each batch four times (encode_texts)."""
    src, tgt = [e["src"] for e in examples], [e["tgt"] for e in examples]
    index = [int(e["index"]) for e in examples]
    student, teacher_tokenizer, max_length = collator.student_tokenizer, collator.teacher_tokenizer, collator.max_length
    pair = encode_texts(student, src, tgt, max_length=max_length)
    x = encode_texts(student, src, max_length=max_length)
    y = encode_texts(student, tgt, max_length=max_length)
    teacher = encode_texts(teacher_tokenizer, src, max_length=max_length)
    student_special, teacher_special = student.all_special_ids, teacher_tokenizer.all_special_ids
    tlm_input_ids, tlm_labels = mask_tokens(
        pair["input_ids"], special_tokens(pair, student_special), vocab_size=len(student),
        mask_token_id=student.mask_token_id, probability=collator.mlm_probability, special_token_ids=student_special,
        generator=seeded_generator(collator.seed, collator.epoch, index))
    teacher_spans = token_spans(teacher, 0, teacher_special)
    return {
        "index": torch.tensor(index), "lang": [e["lang"] for e in examples], "src": src,
        "tlm_input_ids": tlm_input_ids, "tlm_attention_mask": pair["attention_mask"],
        "tlm_token_type_ids": _segment_ids(pair), "tlm_labels": tlm_labels,
        "x_input_ids": x["input_ids"], "x_attention_mask": x["attention_mask"],
        "y_input_ids": y["input_ids"], "y_attention_mask": y["attention_mask"],
        "x_token_mask": ~special_tokens(x, student_special),
        "teacher_input_ids": teacher["input_ids"], "teacher_attention_mask": teacher["attention_mask"],
        "teacher_token_mask": ~special_tokens(teacher, teacher_special),
        "match_x": match_spans(token_spans(x, 0, student_special), teacher_spans),
        "match_tlm_x": match_spans(token_spans(pair, 0, student_special), teacher_spans),
        "match_tlm_y": match_aligned(token_spans(pair, 1, student_special), teacher_spans, src, tgt,
                                     [e["alignment"] for e in examples], rows=index),
    }


def assert_same_encoding(assembled, tokenised) -> None:
    for key in ("input_ids", "attention_mask", "special_tokens_mask", "offset_mapping"):
        assert torch.equal(assembled[key], tokenised[key]), key
    assert torch.equal(assembled["sequence_ids"], sequence_ids(tokenised))


@pytest.mark.parametrize("side", ["right", "left"])
def test_assembled_encodings_equal_the_tokenizers_at_every_truncation(student_tokenizer, teacher_tokenizer, side):
    # x and y of 0..15 tokens each ("house" and "haus" are one token), every pair of lengths, at budgets
    # with even and odd numbers of tokens: longest-first ties, one side whole, both cut to halves
    student = type(student_tokenizer)(tokenizer_object=student_tokenizer.backend_tokenizer,
                                      **student_tokenizer.special_tokens_map, truncation_side=side)
    lengths = range(16)
    src = [" ".join(["house"] * n) for n in lengths for _ in lengths]
    tgt = [" ".join(["haus"] * n) for _ in lengths for n in lengths]
    for max_length in MAX_LENGTHS:
        columns = TokenColumns(student, teacher_tokenizer, max_length)
        rows = columns.with_columns([{"src": s, "tgt": t} for s, t in zip(src, tgt)])
        assert_same_encoding(columns.pair(rows), encode_texts(student, src, tgt, max_length=max_length))
        assert_same_encoding(columns.single(rows, "x"), encode_texts(student, src, max_length=max_length))
        assert_same_encoding(columns.single(rows, "y"), encode_texts(student, tgt, max_length=max_length))
        assert_same_encoding(columns.single(rows, "teacher"),
                             encode_texts(teacher_tokenizer, src, max_length=max_length))


@pytest.mark.parametrize("max_length", MAX_LENGTHS)
def test_batches_from_the_columns_equal_the_tokenising_collators(student_tokenizer, teacher_tokenizer, max_length):
    split = Dataset.from_dict(PAIRS)
    collator = MMKDCollator(student_tokenizer, teacher_tokenizer, max_length=max_length, mlm_probability=0.5,
                            seed=3)
    collator.set_epoch(2)
    pretokenised = collator.columns.of_split(split)
    assert set(TOKEN_FEATURES) <= set(pretokenised.column_names)
    for rows in ([0, 1, 2, 3], [4, 5], [5, 3, 0]):
        batch = collator([{**pretokenised[row], "index": row} for row in rows])
        expected = reference_batch(collator, [{**split[row], "index": row} for row in rows])
        assert batch.keys() == expected.keys()
        for key, value in expected.items():
            if torch.is_tensor(value):
                assert value.dtype == batch[key].dtype and torch.equal(batch[key], value), key
            else:
                assert batch[key] == value, key


def test_rows_with_columns_are_never_tokenised(student_tokenizer, teacher_tokenizer, monkeypatch):
    collator = MMKDCollator(student_tokenizer, teacher_tokenizer, max_length=9)
    pretokenised = collator.columns.of_split(Dataset.from_dict(PAIRS))
    for tokenizer in (student_tokenizer, teacher_tokenizer):
        monkeypatch.setattr(type(tokenizer), "__call__", lambda *args, **kwargs: pytest.fail("tokenised per batch"))
    batch = collator([{**pretokenised[row], "index": row} for row in range(6)])
    assert batch["tlm_input_ids"].shape == (6, 9)


def test_columns_are_computed_once_per_split_tokenizers_and_max_length(tmp_path, student_tokenizer,
                                                                       teacher_tokenizer, monkeypatch):
    Dataset.from_dict(PAIRS).save_to_disk(tmp_path / "split")
    split = Dataset.load_from_disk(tmp_path / "split")
    columns = TokenColumns(student_tokenizer, teacher_tokenizer, 9)
    first = columns.of_split(split)
    cached = sorted(path.name for path in (tmp_path / "split").glob("cache-*.arrow"))
    assert len(cached) == 1
    monkeypatch.setattr(TokenColumns, "encode", lambda *args: pytest.fail("tokenised again"))
    again = TokenColumns(student_tokenizer, teacher_tokenizer, 9).of_split(Dataset.load_from_disk(tmp_path / "split"))
    assert again[:] == first[:]
    assert sorted(path.name for path in (tmp_path / "split").glob("cache-*.arrow")) == cached
    monkeypatch.undo()
    TokenColumns(student_tokenizer, teacher_tokenizer, 10).of_split(split)
    assert len(list((tmp_path / "split").glob("cache-*.arrow"))) == 2  # another max_length: another cache file


def test_pair_lengths_are_the_collators(student_tokenizer, teacher_tokenizer):
    split = Dataset.from_dict(PAIRS)
    for max_length in MAX_LENGTHS:
        collator = MMKDCollator(student_tokenizer, teacher_tokenizer, max_length=max_length)
        batch = collator([{**row, "index": i} for i, row in enumerate(split)])
        lengths = collator.columns.pair_lengths(collator.columns.of_split(split))
        assert lengths.tolist() == batch["tlm_attention_mask"].sum(dim=1).tolist()

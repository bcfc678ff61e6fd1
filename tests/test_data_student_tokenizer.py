"""The small student tokenizer the data tests share (tests/small_tokenizer.py): checks that it gives what
batching needs."""

from __future__ import annotations


def test_student_tokenizer_keeps_accents_splits_cjk_and_suffixed_words(student_tokenizer):
    assert student_tokenizer.is_fast
    assert student_tokenizer.tokenize("The café serves naïve coffee.") == [
        "the", "café", "serves", "naïve", "coffee", "."
    ]
    assert student_tokenizer.tokenize("東京は日本の首都です。") == [
        "東", "京", "は", "日", "本", "の", "首", "都", "です", "。"
    ]
    assert student_tokenizer.tokenize("Tokenizers") == ["tokenizer", "##s"]
    assert student_tokenizer.tokenize("über") == ["[UNK]"]  # no "ü" in the training text


def test_student_tokenizer_pair_encoding_has_offsets_special_mask_and_sequence_ids(student_tokenizer):
    encoding = student_tokenizer(
        ["The house"], ["Das Haus"], return_offsets_mapping=True, return_special_tokens_mask=True
    )
    cls, sep = student_tokenizer.cls_token_id, student_tokenizer.sep_token_id
    assert encoding["input_ids"][0][0] == cls and encoding["input_ids"][0][3] == sep
    assert encoding["input_ids"][0][-1] == sep
    assert encoding["special_tokens_mask"][0] == [1, 0, 0, 1, 0, 0, 1]
    assert encoding.sequence_ids(0) == [None, 0, 0, None, 1, 1, None]
    # offsets refer to each text on its own: "the" [0, 3), "house" [4, 9); "das" [0, 3), "haus" [4, 8)
    assert encoding["offset_mapping"][0] == [(0, 0), (0, 3), (4, 9), (0, 0), (0, 3), (4, 8), (0, 0)]

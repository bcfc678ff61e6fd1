"""Span matching between the student and teacher tokenizers, and y-side matches by word alignment.

Expected matches are written by hand from the token lists each test asserts first (positions count
[CLS] as 0); character spans are noted beside them.
"""

from __future__ import annotations

import pytest
import torch

from mmkd.data.span_matching import NO_SPAN, match_aligned, match_spans, token_spans, word_spans
from mmkd.errors import MMKDError

HOUSE_EN = "The house is big, and the garden is small!"
HOUSE_DE = "Das Haus ist groß, und der Garten ist klein!"


def encode(tokenizer, texts, pairs=None, max_length=None):
    return tokenizer(
        texts, pairs, padding=True, truncation=max_length is not None, max_length=max_length,
        return_tensors="pt", return_offsets_mapping=True, return_special_tokens_mask=True,
    )


def span_matches(student, teacher, texts, student_max_length=None, teacher_max_length=None):
    student_encoding = encode(student, texts, max_length=student_max_length)
    teacher_encoding = encode(teacher, texts, max_length=teacher_max_length)
    student_spans = token_spans(student_encoding, 0, student.all_special_ids)
    teacher_spans = token_spans(teacher_encoding, 0, teacher.all_special_ids)
    return match_spans(student_spans, teacher_spans).tolist()


def test_accented_words_match_although_the_teacher_strips_accents(student_tokenizer, teacher_tokenizer):
    text = "The café serves naïve coffee."
    assert student_tokenizer.tokenize(text) == ["the", "café", "serves", "naïve", "coffee", "."]
    assert teacher_tokenizer.tokenize(text) == ["the", "cafe", "serves", "naive", "coffee", "."]
    # café [4, 8) and naïve [16, 21) in both, whatever the normalisation
    assert span_matches(student_tokenizer, teacher_tokenizer, [text]) == [[0, i, i] for i in range(1, 7)]


def test_cjk_characters_match_one_by_one(student_tokenizer, teacher_tokenizer):
    text = "東京は日本の首都です。"
    assert student_tokenizer.tokenize(text) == ["東", "京", "は", "日", "本", "の", "首", "都", "です", "。"]
    assert teacher_tokenizer.tokenize(text) == ["東", "京", "は", "日", "本", "の", "[UNK]", "都", "て", "##す", "。"]
    # 東..の [0, 6) one each; 首 [6, 7) is the teacher's [UNK]: no match; 都 [7, 8);
    # です [8, 10) against て [8, 9) + ##す [9, 10): no match; 。 [10, 11) at student 10, teacher 11
    expected = [[0, i, i] for i in range(1, 7)] + [[0, 8, 8], [0, 10, 11]]
    assert span_matches(student_tokenizer, teacher_tokenizer, [text]) == expected


def test_punctuation_matches_and_padding_never_does(student_tokenizer, teacher_tokenizer):
    texts = [HOUSE_EN, "Where is the station? It is near the river."]
    for text in texts:
        assert student_tokenizer.tokenize(text) == teacher_tokenizer.tokenize(text)
    # row 0: 11 tokens (",", "!" included), row 1: 11 tokens ("?" and "." included); same lengths
    # padded to 13 in both tokenizers, padding (span (0, 0)) gives nothing
    expected = [[0, i, i] for i in range(1, 12)] + [[1, i, i] for i in range(1, 12)]
    assert span_matches(student_tokenizer, teacher_tokenizer, texts) == expected
    padded = span_matches(student_tokenizer, teacher_tokenizer, ["The house is big.", HOUSE_EN])
    assert padded == [[0, i, i] for i in range(1, 6)] + [[1, i, i] for i in range(1, 12)]


def test_word_split_differently_matches_only_identical_pieces(student_tokenizer, teacher_tokenizer):
    text = "Tokenizers split words into pieces."
    assert student_tokenizer.tokenize(text) == ["tokenizer", "##s", "split", "words", "into", "pieces", "."]
    assert teacher_tokenizer.tokenize(text) == ["token", "##izer", "##s", "split", "words", "into", "pieces", "."]
    # tokenizer [0, 9) against token [0, 5) + ##izer [5, 9): no match; ##s [9, 10) and the rest match
    expected = [[0, 2, 3], [0, 3, 4], [0, 4, 5], [0, 5, 6], [0, 6, 7], [0, 7, 8]]
    assert span_matches(student_tokenizer, teacher_tokenizer, [text]) == expected


def test_unknown_tokens_never_match(student_tokenizer, teacher_tokenizer):
    text = "Über the river."
    assert student_tokenizer.tokenize(text) == ["[UNK]", "the", "river", "."]
    assert teacher_tokenizer.tokenize(text) == ["uber", "the", "river", "."]
    student = encode(student_tokenizer, [text])
    teacher_spans = token_spans(encode(teacher_tokenizer, [text]), 0, teacher_tokenizer.all_special_ids)
    with_unk = match_spans(token_spans(student, 0), teacher_spans).tolist()
    assert with_unk == [[0, 1, 1], [0, 2, 2], [0, 3, 3], [0, 4, 4]]  # [UNK] spans [0, 4) like "uber"
    without_unk = match_spans(token_spans(student, 0, student_tokenizer.all_special_ids), teacher_spans).tolist()
    assert without_unk == [[0, 2, 2], [0, 3, 3], [0, 4, 4]]


def test_pair_encoding_matches_only_the_x_side(student_tokenizer, teacher_tokenizer):
    x, y = "The house is big.", "Das Haus ist groß."
    pair = encode(student_tokenizer, [x], [y])
    assert pair.tokens(0) == [
        "[CLS]", "the", "house", "is", "big", ".", "[SEP]", "das", "haus", "ist", "groß", ".", "[SEP]"
    ]
    teacher_spans = token_spans(encode(teacher_tokenizer, [x]), 0)
    x_side = match_spans(token_spans(pair, 0), teacher_spans).tolist()
    assert x_side == [[0, i, i] for i in range(1, 6)]
    # y-side spans are offsets into y: "das" [0, 3) has the span of "the" in x, and only that
    y_side = match_spans(token_spans(pair, 1), teacher_spans).tolist()
    assert y_side == [[0, 7, 1]]


def test_truncated_tokens_are_never_matched(student_tokenizer, teacher_tokenizer):
    # student: [CLS] the house is big [SEP]; teacher: [CLS] the house is [SEP]
    matches = span_matches(student_tokenizer, teacher_tokenizer, [HOUSE_EN], student_max_length=6,
                           teacher_max_length=5)
    assert matches == [[0, 1, 1], [0, 2, 2], [0, 3, 3]]
    pair = encode(student_tokenizer, [HOUSE_EN], [HOUSE_DE], max_length=12)
    x_length = pair.sequence_ids(0).count(0)
    assert x_length < 11  # truncated longest-first from 11 x tokens
    teacher_spans = token_spans(encode(teacher_tokenizer, [HOUSE_EN]), 0)
    x_side = match_spans(token_spans(pair, 0), teacher_spans).tolist()
    assert x_side == [[0, i, i] for i in range(1, x_length + 1)]


def test_spans_that_repeat_on_one_side_are_ambiguous_and_skipped():
    pad = [NO_SPAN, NO_SPAN]
    student = torch.tensor([[pad, [0, 1], [0, 1], [1, 2], [2, 4], pad]])
    teacher = torch.tensor([[pad, [0, 1], [1, 2], [2, 4], [2, 4], pad, pad]])
    assert match_spans(student, teacher).tolist() == [[0, 3, 2]]


def test_word_spans_follow_str_split():
    spans = word_spans(["a  bb\tc ", "", "x x"])
    pad = [NO_SPAN, NO_SPAN]
    assert spans.tolist() == [[[0, 1], [3, 5], [6, 7]], [pad, pad, pad], [[0, 1], [2, 3], pad]]
    assert word_spans(["", " "]).tolist() == [[pad], [pad]]


def aligned(student, teacher, alignments, teacher_max_length=None, rows=None):
    n = len(alignments)
    y = encode(student, [HOUSE_DE] * n)
    teacher_spans = token_spans(encode(teacher, [HOUSE_EN] * n, max_length=teacher_max_length), 0)
    return match_aligned(token_spans(y, 0), teacher_spans, [HOUSE_EN] * n, [HOUSE_DE] * n, alignments, rows)


def test_y_tokens_take_the_teacher_token_of_the_first_aligned_x_word(student_tokenizer, teacher_tokenizer):
    assert student_tokenizer.tokenize(HOUSE_DE) == [
        "das", "haus", "ist", "groß", ",", "und", "der", "garten", "ist", "klein", "!"
    ]
    assert teacher_tokenizer.tokenize(HOUSE_EN) == [
        "the", "house", "is", "big", ",", "and", "the", "garden", "is", "small", "!"
    ]
    # y word 1 "Haus" -> x words 1 then 0: first link, "house" (teacher 2); y word 3 "groß," (tokens
    # 4, 5) -> x word 3 "big," (teacher 4); y word 8 "klein!" (tokens 10, 11) -> "small!" (teacher 10)
    links = [[1, 1], [0, 1], [3, 3], [8, 8]]
    expected = [[0, 2, 2], [0, 4, 4], [0, 5, 4], [0, 10, 10], [0, 11, 10]]
    matches = aligned(student_tokenizer, teacher_tokenizer, [links, None, []])
    assert matches.tolist() == expected  # rows 1 (unknown) and 2 (no links) give nothing


def test_y_tokens_aligned_to_a_truncated_x_word_are_not_matched(student_tokenizer, teacher_tokenizer):
    # teacher: [CLS] the house is big , and the garden [SEP]: "small!" is cut
    matches = aligned(student_tokenizer, teacher_tokenizer, [[[1, 1], [3, 3], [8, 8]]], teacher_max_length=10)
    assert matches.tolist() == [[0, 2, 2], [0, 4, 4], [0, 5, 4]]


@pytest.mark.parametrize("link", [[0, 9], [9, 0], [-1, 2]])
def test_alignment_links_out_of_range_name_the_dataset_row(student_tokenizer, teacher_tokenizer, link):
    with pytest.raises(MMKDError, match=rf"dataset row 42: alignment link {link[0]}-{link[1]} is out of range"):
        aligned(student_tokenizer, teacher_tokenizer, [[[0, 0]], [[0, 0], link]], rows=[41, 42])

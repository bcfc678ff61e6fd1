"""MMKDCollator: the batch contract of docs/architecture.md, "Batches".

Reference values come from encoding each example on its own (no padding), independently of the
collator's batched code.
"""

from __future__ import annotations

import os

import pytest
import torch

from mmkd.data.collate import MMKDCollator
from mmkd.errors import MMKDError

HOUSE_EN = "The house is big, and the garden is small!"
HOUSE_DE = "Das Haus ist groß, und der Garten ist klein!"
EXAMPLES = [
    {"src": HOUSE_EN, "tgt": HOUSE_DE, "lang": "de", "alignment": [[1, 1], [0, 1], [3, 3], [8, 8]], "index": 10},
    {"src": "The café serves naïve coffee.", "tgt": "Das Café ist naïv und schön.", "lang": "de",
     "alignment": None, "index": 11},
    {"src": "Tokenizers split words into pieces.", "tgt": "東京は日本の首都です。", "lang": "ja",
     "alignment": [], "index": 12},
    {"src": "Über the river.", "tgt": "Über den Fluss.", "lang": "de", "alignment": None, "index": 13},
]
KEYS = {
    "index", "lang", "src", "tlm_input_ids", "tlm_attention_mask", "tlm_token_type_ids", "tlm_labels",
    "x_input_ids", "x_attention_mask", "y_input_ids", "y_attention_mask", "x_token_mask",
    "teacher_input_ids", "teacher_attention_mask", "teacher_token_mask", "match_x", "match_tlm_x",
    "match_tlm_y",
}


@pytest.fixture(scope="module")
def collator(student_tokenizer, teacher_tokenizer):
    return MMKDCollator(student_tokenizer, teacher_tokenizer, max_length=128, mlm_probability=0.5, seed=3)


def single(tokenizer, text, pair=None, max_length=128):
    """One example encoded alone: ids, offsets, sequence ids and ordinary-token flags (lists)."""
    encoding = tokenizer(text, pair, truncation=True, max_length=max_length, return_offsets_mapping=True,
                         return_special_tokens_mask=True)
    ids = encoding["input_ids"]
    ordinary = [not special and token_id not in tokenizer.all_special_ids
                for token_id, special in zip(ids, encoding["special_tokens_mask"])]
    return ids, encoding["offset_mapping"], encoding.sequence_ids(), ordinary


def padded(rows, value):
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows])


def expected_span_matches(student, teacher):
    """Matches by a dict of spans per example: every span that occurs once on each side."""
    rows = []
    for b, (student_spans, teacher_spans) in enumerate(zip(student, teacher)):
        teacher_positions = {span: t for t, span in enumerate(teacher_spans) if span is not None
                             and teacher_spans.count(span) == 1}
        rows += [[b, s, teacher_positions[span]] for s, span in enumerate(student_spans)
                 if span is not None and student_spans.count(span) == 1 and span in teacher_positions]
    return rows


def ordinary_spans(tokenizer, texts, pairs=None, sequence=0, max_length=128):
    out = []
    for i, text in enumerate(texts):
        _, offsets, sequence_ids, ordinary = single(tokenizer, text, pairs[i] if pairs else None, max_length)
        out.append([tuple(span) if keep and seq == sequence else None
                    for span, seq, keep in zip(offsets, sequence_ids, ordinary)])
    return out


def test_keys_shapes_and_dtypes(collator, student_tokenizer, teacher_tokenizer):
    batch = collator(EXAMPLES)
    assert set(batch) == KEYS
    src = [e["src"] for e in EXAMPLES]
    assert batch["src"] == src
    tgt = [e["tgt"] for e in EXAMPLES]
    assert batch["index"].tolist() == [10, 11, 12, 13] and batch["index"].dtype == torch.long
    assert batch["lang"] == ["de", "de", "ja", "de"]
    encodings = [("tlm", student_tokenizer, src, tgt), ("x", student_tokenizer, src, None),
                 ("y", student_tokenizer, tgt, None), ("teacher", teacher_tokenizer, src, None)]
    for prefix, tokenizer, texts, pairs in encodings:
        ids = [single(tokenizer, text, pairs[i] if pairs else None)[0] for i, text in enumerate(texts)]
        attention = padded([[1] * len(row) for row in ids], 0)
        assert batch[f"{prefix}_attention_mask"].dtype == torch.long
        assert torch.equal(batch[f"{prefix}_attention_mask"], attention)
        assert batch[f"{prefix}_input_ids"].dtype == torch.long
        assert batch[f"{prefix}_input_ids"].shape == attention.shape
        if prefix != "tlm":  # unmasked: exactly the ids of each example, right-padded
            assert torch.equal(batch[f"{prefix}_input_ids"], padded(ids, tokenizer.pad_token_id))
    for key in ("match_x", "match_tlm_x", "match_tlm_y"):
        assert batch[key].dtype == torch.long and batch[key].dim() == 2 and batch[key].shape[1] == 3
    for key, ids_key in (("x_token_mask", "x_input_ids"), ("teacher_token_mask", "teacher_input_ids")):
        assert batch[key].dtype == torch.bool and batch[key].shape == batch[ids_key].shape


def test_token_masks_exclude_specials_unknown_and_padding(collator, student_tokenizer, teacher_tokenizer):
    batch = collator(EXAMPLES)
    for key, tokenizer in (("x_token_mask", student_tokenizer), ("teacher_token_mask", teacher_tokenizer)):
        expected = padded([single(tokenizer, e["src"])[3] for e in EXAMPLES], False)
        assert torch.equal(batch[key], expected)
    # by hand, row 3: student [CLS] [UNK] the river . [SEP] (no "ü" in its vocabulary), teacher uber
    assert batch["x_token_mask"][3, :7].tolist() == [False, False, True, True, True, False, False]
    assert batch["teacher_token_mask"][3, :7].tolist() == [False, True, True, True, True, False, False]


def test_token_type_ids_are_0_on_x_and_the_first_sep_then_1(collator, student_tokenizer):
    batch = collator(EXAMPLES)
    expected = []
    for e in EXAMPLES:
        ids = single(student_tokenizer, e["src"], e["tgt"])[0]
        first_sep = ids.index(student_tokenizer.sep_token_id)
        expected.append([0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1))
    assert torch.equal(batch["tlm_token_type_ids"], padded(expected, 0))


def test_tlm_labels_mark_exactly_the_changed_or_kept_selected_tokens(collator, student_tokenizer):
    batch = collator(EXAMPLES)
    encoded = [single(student_tokenizer, e["src"], e["tgt"]) for e in EXAMPLES]
    clean = padded([ids for ids, _, _, _ in encoded], student_tokenizer.pad_token_id)
    ordinary = padded([flags for _, _, _, flags in encoded], False)
    labels, inputs = batch["tlm_labels"], batch["tlm_input_ids"]
    selected = labels != -100
    assert selected.sum() > 10  # mlm_probability 0.5 over ~70 ordinary tokens
    assert not (selected & ~ordinary).any()
    assert torch.equal(labels[selected], clean[selected])
    assert torch.equal(inputs[~selected], clean[~selected])
    x_side = batch["tlm_token_type_ids"] == 0
    assert (selected & x_side).any() and (selected & ~x_side).any()  # both sides are masked


def test_span_matches_point_at_tokens_with_identical_spans(collator, student_tokenizer, teacher_tokenizer):
    batch = collator(EXAMPLES)
    src = [e["src"] for e in EXAMPLES]
    tgt = [e["tgt"] for e in EXAMPLES]
    teacher = ordinary_spans(teacher_tokenizer, src)
    student_x = ordinary_spans(student_tokenizer, src)
    student_tlm_x = ordinary_spans(student_tokenizer, src, tgt, sequence=0)
    assert batch["match_x"].tolist() == expected_span_matches(student_x, teacher)
    assert batch["match_tlm_x"].tolist() == expected_span_matches(student_tlm_x, teacher)
    for b, s, t in batch["match_tlm_x"].tolist():
        assert student_tlm_x[b][s] == teacher[b][t] is not None
    # by hand, row 2: tokenizer [0, 9) against token + ##izer: not matched; ##s [9, 10) matched
    assert [row for row in batch["match_x"].tolist() if row[0] == 2] == [[2, i, i + 1] for i in range(2, 8)]


def test_y_matches_follow_the_alignment_and_skip_unknown_alignments(collator):
    batch = collator(EXAMPLES)
    # row 0 pair: [CLS] + 11 x tokens + [SEP] at 12, then das 13 haus 14 ist 15 groß 16 , 17 ... klein 22 ! 23
    # teacher: house 2, big 4, small 10 (see test_data_span_matching); rows 1, 3 (None) and 2 ([]) give none
    expected = [[0, 14, 2], [0, 16, 4], [0, 17, 4], [0, 22, 10], [0, 23, 10]]
    assert batch["match_tlm_y"].tolist() == expected


def test_masks_depend_on_seed_epoch_and_rows_only(student_tokenizer, teacher_tokenizer):
    def masks(seed, epoch, examples=EXAMPLES):
        collator = MMKDCollator(student_tokenizer, teacher_tokenizer, max_length=128, mlm_probability=0.5, seed=seed)
        collator.set_epoch(epoch)
        return collator(examples)["tlm_input_ids"]

    first = masks(0, 0)
    assert torch.equal(first, masks(0, 0))  # a resumed run masks the same batch the same way
    assert not torch.equal(first, masks(0, 1))
    assert not torch.equal(first, masks(1, 0))
    renumbered = [dict(e, index=e["index"] + 100) for e in EXAMPLES]
    assert not torch.equal(first, masks(0, 0, renumbered))


def test_truncation_keeps_every_match_inside_the_encodings(student_tokenizer, teacher_tokenizer):
    collator = MMKDCollator(student_tokenizer, teacher_tokenizer, max_length=9)
    batch = collator(EXAMPLES)
    for prefix in ("tlm", "x", "y", "teacher"):
        assert batch[f"{prefix}_input_ids"].shape[1] <= 9
    lengths = {prefix: batch[f"{prefix}_attention_mask"].sum(dim=1) for prefix in ("tlm", "x", "teacher")}
    for key, student_prefix in (("match_x", "x"), ("match_tlm_x", "tlm"), ("match_tlm_y", "tlm")):
        b, s, t = batch[key].T
        assert (s < lengths[student_prefix][b] - 1).all() and (t < lengths["teacher"][b] - 1).all()
    src = [e["src"] for e in EXAMPLES]
    tgt = [e["tgt"] for e in EXAMPLES]
    teacher = ordinary_spans(teacher_tokenizer, src, max_length=9)
    student_x = ordinary_spans(student_tokenizer, src, max_length=9)
    student_tlm_x = ordinary_spans(student_tokenizer, src, tgt, max_length=9)
    assert batch["match_x"].tolist() == expected_span_matches(student_x, teacher)
    assert batch["match_tlm_x"].tolist() == expected_span_matches(student_tlm_x, teacher)
    # row 0 truncated longest-first: [CLS] the house is [SEP] das haus ist [SEP]; y word 1 "Haus" at 6
    # -> x word 1 "house", teacher 2 (the teacher keeps [CLS] the house is big , and the [SEP])
    labels = batch["tlm_labels"][0]
    clean = torch.where(labels != -100, labels, batch["tlm_input_ids"][0])
    assert student_tokenizer.convert_ids_to_tokens(clean.tolist()) == [
        "[CLS]", "the", "house", "is", "[SEP]", "das", "haus", "ist", "[SEP]"
    ]
    assert batch["match_tlm_y"].tolist() == [[0, 6, 2]]


def test_slow_tokenizer_is_refused(student_tokenizer, teacher_dir):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    slow = BertTokenizerLegacy(os.path.join(teacher_dir, "vocab.txt"))
    with pytest.raises(MMKDError, match="teacher tokenizer BertTokenizerLegacy is not a fast"):
        MMKDCollator(student_tokenizer, slow, max_length=128)


def test_out_of_range_alignment_names_the_dataset_row(collator):
    bad = dict(EXAMPLES[1], alignment=[[0, 0], [5, 6]], index=77)  # x has 5 words, y has 6
    with pytest.raises(MMKDError, match="dataset row 77: alignment link 5-6 is out of range"):
        collator([EXAMPLES[0], bad])

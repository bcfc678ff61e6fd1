"""Matching tokens of two tokenizers by character spans, and y tokens to teacher tokens by alignment.

Spans come from fast tokenizers' offset mappings, which refer to the original text whatever the
tokenizer's normalisation (lowercasing, accent stripping), so "café" tokenized whole by a student
and "cafe" by an accent-stripping teacher both span characters [0, 4). A span tensor (B, L, 2) holds
(start, end) character offsets per token, `NO_SPAN` = (-1, -1) at tokens that take no part:
special tokens (with [UNK]), padding, tokens of the other sequence of a pair, and empty spans.

Words are whitespace words, `text.split()`, the unit of the corpus's Pharaoh alignments.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import Tensor
from transformers import BatchEncoding

from mmkd.errors import MMKDError

NO_SPAN = -1  # start and end of a token that takes no part in matching; also "no word / no token"


def special_tokens(encoding: BatchEncoding, special_ids: Collection[int] = ()) -> Tensor:
    """(B, L) bool: tokens that are special or padding.

    Special = marked by the tokenizer's special-tokens mask ([CLS], [SEP], added special tokens) or
    with an id in `special_ids` (pass `tokenizer.all_special_ids` to include [UNK], which carries
    nothing of its span's text). `encoding` is a batch from a tokenizer called with
    `return_special_tokens_mask=True`, padded to one length (tensors or lists).
    """
    if "special_tokens_mask" not in encoding:
        raise ValueError("special_tokens: encode with return_special_tokens_mask=True")
    input_ids = torch.as_tensor(encoding["input_ids"])
    special = torch.as_tensor(encoding["special_tokens_mask"]).bool()
    special |= torch.isin(input_ids, torch.tensor(sorted(special_ids), dtype=input_ids.dtype))
    if "attention_mask" in encoding:
        special |= ~torch.as_tensor(encoding["attention_mask"]).bool()
    return special


def sequence_ids(encoding: BatchEncoding) -> Tensor:
    """(B, L) long: the text of a pair (0 or 1) each token comes from, NO_SPAN at special and padding tokens.

    From the encoding's "sequence_ids" tensor (`mmkd.data.token_columns` assembles one), else from the
    fast tokenizer's encodings it carries.
    """
    if "sequence_ids" in encoding:
        return torch.as_tensor(encoding["sequence_ids"], dtype=torch.long)
    shape = torch.as_tensor(encoding["input_ids"]).shape
    rows = [[NO_SPAN if s is None else s for s in encoding.sequence_ids(b)] for b in range(shape[0])]
    return torch.tensor(rows, dtype=torch.long).reshape(shape)


def token_spans(encoding: BatchEncoding, sequence: int = 0, special_ids: Collection[int] = ()) -> Tensor:
    """Character spans (B, L, 2) long of the ordinary tokens of `sequence` (0 = text, 1 = pair).

    `encoding` is a batch from a fast tokenizer called with `return_offsets_mapping=True` and
    `return_special_tokens_mask=True`, padded to one length, or one with the same keys and
    "sequence_ids" (`mmkd.data.token_columns`). Spans of sequence 1 are offsets into
    the second text. Special tokens (see `special_tokens`), padding, tokens of the
    other sequence and empty spans get (NO_SPAN, NO_SPAN).
    """
    if "offset_mapping" not in encoding:
        raise ValueError("token_spans: encode with return_offsets_mapping=True")
    offsets = torch.as_tensor(encoding["offset_mapping"], dtype=torch.long)
    taking_part = (
        (sequence_ids(encoding) == sequence) & ~special_tokens(encoding, special_ids)
        & (offsets[..., 1] > offsets[..., 0])
    )
    return torch.where(taking_part[..., None], offsets, torch.full_like(offsets, NO_SPAN))


def match_spans(student_spans: Tensor, teacher_spans: Tensor) -> Tensor:
    """(M, 3) long rows (b, student pos, teacher pos) whose character spans are identical.

    student_spans (B, Ls, 2), teacher_spans (B, Lt, 2) from `token_spans` on the same texts. A span
    that occurs more than once among one side's tokens of a row (byte-level tokenizers can split one
    character into several tokens) is ambiguous and not matched, so matches are one-to-one. Rows
    are sorted by (b, student pos).
    """
    if student_spans.shape[0] != teacher_spans.shape[0]:
        raise ValueError(
            f"match_spans: batch sizes differ: {student_spans.shape[0]} and {teacher_spans.shape[0]}"
        )
    same = _same_spans(student_spans, teacher_spans)
    unique_student = _same_spans(student_spans, student_spans).sum(dim=2) == 1
    unique_teacher = _same_spans(teacher_spans, teacher_spans).sum(dim=2) == 1
    return torch.nonzero(same & unique_student[:, :, None] & unique_teacher[:, None, :])


def word_spans(texts: Sequence[str]) -> Tensor:
    """Character spans (B, W, 2) long of the words `text.split()` of each text, padded with NO_SPAN.

    W >= 1 even when every text is empty, so that lookups by word never index an empty dimension.
    """
    rows = []
    for text in texts:
        spans, end = [], 0
        for word in text.split():
            start = text.index(word, end)
            end = start + len(word)
            spans.append((start, end))
        rows.append(spans)
    width = max(max((len(spans) for spans in rows), default=0), 1)
    padded = [spans + [(NO_SPAN, NO_SPAN)] * (width - len(spans)) for spans in rows]
    return torch.tensor(padded, dtype=torch.long).reshape(len(rows), width, 2)


def words_of_tokens(spans: Tensor, words: Tensor) -> Tensor:
    """Word index (B, L) long of each token: the word whose span holds the token's start; NO_SPAN if none.

    spans (B, L, 2) from `token_spans`, words (B, W, 2) from `word_spans` on the same texts.
    """
    start = spans[..., 0][:, :, None]
    inside = (start >= words[..., 0][:, None, :]) & (start < words[..., 1][:, None, :]) & (start >= 0)
    return torch.where(inside.any(dim=2), inside.int().argmax(dim=2), NO_SPAN)


def first_token_of_words(token_words: Tensor, num_words: int) -> Tensor:
    """Position (B, W) long of the first token of each word; NO_SPAN where a word has no token.

    token_words (B, L) from `words_of_tokens`.
    """
    positions = torch.arange(token_words.shape[1])
    of_word = token_words[:, :, None] == torch.arange(num_words)[None, None, :]
    first = torch.where(of_word, positions[None, :, None], token_words.shape[1]).amin(dim=1)
    return torch.where(first < token_words.shape[1], first, NO_SPAN)


def alignment_links(alignments: Sequence[Sequence[Sequence[int]] | None], x_words: Tensor, y_words: Tensor,
                    rows: Sequence[int] | None = None) -> Tensor:
    """Pharaoh links (B, K, 2) long (x word, y word) in their given order, padded with NO_SPAN (K >= 1).

    None (alignment unknown) and [] give no links. x_words (B, Wx, 2), y_words (B, Wy, 2) from
    `word_spans`, to check the indices. A link outside the words raises MMKDError naming the dataset
    row (`rows[b]`, default b).
    """
    per_row = [list(links) if links is not None else [] for links in alignments]
    for b, links in enumerate(per_row):
        if any(len(link) != 2 for link in links):
            raise MMKDError(f"dataset row {_row(rows, b)}: alignment must be a list of [x word, y word] pairs")
    counts = torch.tensor([len(links) for links in per_row], dtype=torch.long)
    flat = torch.tensor([link for links in per_row for link in links], dtype=torch.long).reshape(-1, 2)
    row_of = torch.repeat_interleave(torch.arange(len(per_row)), counts)
    num_x = (x_words[..., 0] >= 0).sum(dim=1)[row_of]
    num_y = (y_words[..., 0] >= 0).sum(dim=1)[row_of]
    bad = (flat < 0).any(dim=1) | (flat[:, 0] >= num_x) | (flat[:, 1] >= num_y)
    if bad.any():
        first = int(bad.int().argmax())
        x_word, y_word = flat[first].tolist()
        raise MMKDError(
            f"dataset row {_row(rows, int(row_of[first]))}: alignment link {x_word}-{y_word} is out of range: "
            f"src has {int(num_x[first])} words, tgt has {int(num_y[first])} (words = str.split(), from 0)"
        )
    width = max((len(links) for links in per_row), default=0)
    out = torch.full((len(per_row), max(width, 1), 2), NO_SPAN, dtype=torch.long)
    out[row_of, torch.arange(len(flat)) - (torch.cumsum(counts, 0) - counts)[row_of]] = flat
    return out


def first_aligned_x_words(links: Tensor, num_y_words: int) -> Tensor:
    """x word (B, Wy) long of each y word's first link (in list order); NO_SPAN for unaligned words.

    links (B, K >= 1, 2) from `alignment_links`. A y word linked to several x words takes the first
    link listed (one positive per y token, as XWCL needs).
    """
    of_word = links[..., 1][:, None, :] == torch.arange(num_y_words)[None, :, None]
    x_words = torch.gather(links[..., 0], 1, of_word.int().argmax(dim=2))
    return torch.where(of_word.any(dim=2), x_words, NO_SPAN)


def match_aligned(y_spans: Tensor, teacher_spans: Tensor, x_texts: Sequence[str], y_texts: Sequence[str],
                  alignments: Sequence[Sequence[Sequence[int]] | None],
                  rows: Sequence[int] | None = None) -> Tensor:
    """(J, 3) long rows (b, y token pos, teacher pos) linking y tokens to teacher tokens by alignment.

    y_spans (B, Ly, 2): spans into y (`token_spans(pair_encoding, 1)` or of y alone); teacher_spans
    (B, Lt, 2): spans into x. A y token's word is the y word whose span holds the token's start; that
    word's first link gives x word w; the teacher position is the first teacher token of w that takes
    part (an [UNK] does not). Tokens whose word is unaligned, or whose x word has no such teacher
    token (e.g. truncated), get no row.
    Rows are sorted by (b, y token pos).
    """
    x_words, y_words = word_spans(x_texts), word_spans(y_texts)
    links = alignment_links(alignments, x_words, y_words, rows)
    y_token_words = words_of_tokens(y_spans, y_words)
    x_word_of_y_word = first_aligned_x_words(links, y_words.shape[1])
    teacher_first = first_token_of_words(words_of_tokens(teacher_spans, x_words), x_words.shape[1])
    x_word = _lookup(x_word_of_y_word, y_token_words)
    teacher_pos = _lookup(teacher_first, x_word)
    b, pos = torch.nonzero(teacher_pos >= 0, as_tuple=True)
    return torch.stack([b, pos, teacher_pos[b, pos]], dim=1)


def _same_spans(a: Tensor, b: Tensor) -> Tensor:
    """(B, La, Lb) bool: a's token i and b's token j both take part and have the same span."""
    key_a, key_b = _span_keys(a), _span_keys(b)
    return (key_a[:, :, None] == key_b[:, None, :]) & (key_a >= 0)[:, :, None]


def _span_keys(spans: Tensor) -> Tensor:
    """One long per span (B, L): start * 2^32 + end, negative for NO_SPAN."""
    return torch.where(spans[..., 0] >= 0, spans[..., 0] * 2**32 + spans[..., 1], NO_SPAN)


def _lookup(table: Tensor, index: Tensor) -> Tensor:
    """table[b, index[b, i]] (B, L), NO_SPAN where index is NO_SPAN. table (B, W >= 1), index (B, L)."""
    found = torch.gather(table, 1, index.clamp(min=0))
    return torch.where(index >= 0, found, NO_SPAN)


def _row(rows: Sequence[int] | None, b: int) -> int:
    return rows[b] if rows is not None else b

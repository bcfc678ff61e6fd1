"""Pre-tokenised token columns of a corpus split, and the batch encodings assembled from them.

Each example is tokenised once per (split, student tokenizer, teacher tokenizer, max_length), by
`TokenColumns.of_split` (`datasets.Dataset.map`, batched, cached under a fingerprint of those four:
a split saved on disk gets a cache file beside its Arrow files, computed once and read after). The
columns hold each text's tokens WITHOUT the tokenizer's special tokens ("content"), cut to the most a
single text keeps at max_length:
```
x_ids, x_offsets, x_length              student tokens of src: ids, character spans (start, end),
                                        number of tokens before cutting
y_ids, y_offsets, y_length              student tokens of tgt
teacher_ids, teacher_offsets, teacher_length   teacher tokens of src
```
The collator then only concatenates, truncates and pads: `single` gives [CLS] x [SEP] (the
tokenizer's own template), `pair` gives [CLS] x [SEP] y [SEP] truncated longest-first. Both equal
`mmkd.data.tokenization.encode_texts` of the same texts, key for key (tests/test_data_token_columns.py),
because a fast tokenizer tokenises each text of a pair on its own, then truncates the token lists,
then adds the template's special tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset, Features, List, Value, concatenate_datasets
from transformers import BatchEncoding, PreTrainedTokenizerBase

from mmkd.data.span_matching import NO_SPAN
from mmkd.errors import MMKDError
from mmkd.teacher_cache.identity import tokenizer_sha256

COLUMNS_VERSION = 1  # part of the cache fingerprint: bump when the columns change
ENCODINGS = {"x": ("student", "src"), "y": ("student", "tgt"), "teacher": ("teacher", "src")}  # name: (tokenizer, text)
TOKEN_FEATURES = Features({
    column: feature for name in ENCODINGS for column, feature in (
        (f"{name}_ids", List(Value("int32"))),
        (f"{name}_offsets", List(List(Value("int32"), length=2))),
        (f"{name}_length", Value("int32")),
    )
})


@dataclass(frozen=True)
class SpecialTemplate:
    """The special-token ids a tokenizer puts around one text (prefix, suffix) and a pair (prefix,
    middle, suffix), read from its encodings of a probe text, and the side it truncates."""

    single: tuple[tuple[int, ...], tuple[int, ...]]
    pair: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    truncation_side: str

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, role: str) -> SpecialTemplate:
        """MMKDError naming `role` if the template cannot be read (a probe text gives no token)."""
        probe = "a"
        single = tokenizer(probe)
        pair = tokenizer(probe, probe)
        parts = [_special_runs(single.input_ids, single.sequence_ids()),
                 _special_runs(pair.input_ids, pair.sequence_ids())]
        if len(parts[0]) != 2 or len(parts[1]) != 3:
            raise MMKDError(f"{role} tokenizer {type(tokenizer).__name__}: cannot read its special-token template "
                            f"from its encoding of {probe!r} (sequence ids {pair.sequence_ids()})")
        return cls(single=tuple(parts[0]), pair=tuple(parts[1]), truncation_side=tokenizer.truncation_side)

    def single_budget(self, max_length: int) -> int:
        """Tokens of one text kept at `max_length`."""
        return max_length - sum(map(len, self.single))

    def pair_budget(self, max_length: int) -> int:
        """Tokens of both texts of a pair kept at `max_length`."""
        return max_length - sum(map(len, self.pair))

    def cut(self, tokens: Sequence[Any], keep: int) -> Sequence[Any]:
        """The `keep` tokens truncation leaves of `tokens` (the first ones, or the last on the left side)."""
        if self.truncation_side == "left":
            return tokens[max(len(tokens) - keep, 0):]
        return tokens[:keep]


def _special_runs(ids: Sequence[int], sequence_ids: Sequence[int | None]) -> list[tuple[int, ...]]:
    """The runs of special tokens (sequence id None) before, between and after the texts' tokens."""
    runs, current, previous = [], [], None
    for token, sequence in zip(ids, sequence_ids):
        if sequence is None:
            current.append(token)
        elif sequence != previous:
            runs.append(tuple(current))
            current, previous = [], sequence
    return [*runs, tuple(current)]


def truncated_pair_lengths(first: np.ndarray, second: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens kept of each text of pairs of `first` and `second` tokens (int arrays of one shape) when
    both together may keep `budget`: the fast tokenizers' "longest_first" truncation (tokenizers,
    src/utils/truncation.rs, TruncationStrategy::LongestFirst): the shorter text is kept whole if the
    longer can take the rest, else each keeps half (the second text, or the longer one, the odd token).
    """
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    shorter = np.minimum(first, second)
    longer_keep = np.where(shorter > budget, shorter, np.maximum(shorter, budget - shorter))
    halve = shorter + longer_keep > budget
    shorter_keep = np.where(halve, budget // 2, shorter)
    longer_keep = np.where(halve, budget // 2 + budget % 2, longer_keep)
    first_is_longer = first > second  # on a tie the first text takes the shorter one's share
    first_keep = np.minimum(first, np.where(first_is_longer, longer_keep, shorter_keep))
    second_keep = np.minimum(second, np.where(first_is_longer, shorter_keep, longer_keep))
    fits = first + second <= budget
    return np.where(fits, first, first_keep), np.where(fits, second, second_keep)


@dataclass
class TokenColumns:
    """Tokenises texts into the token columns (module docstring) and assembles batch encodings from them.

    Picklable (DataLoader workers get a copy). `max_length` counts special tokens, as `encode_texts`'s does.
    """

    student_tokenizer: PreTrainedTokenizerBase
    teacher_tokenizer: PreTrainedTokenizerBase
    max_length: int
    templates: dict[str, SpecialTemplate] = field(init=False)

    def __post_init__(self) -> None:
        self.templates = {role: SpecialTemplate.of(self.tokenizer(role), role) for role in ("student", "teacher")}
        for role, template in self.templates.items():
            if template.pair_budget(self.max_length) < 0:
                raise MMKDError(f"max_length {self.max_length} is shorter than the {role} tokenizer's special tokens "
                                f"of a pair ({sum(map(len, template.pair))})")

    def tokenizer(self, role: str) -> PreTrainedTokenizerBase:
        return self.student_tokenizer if role == "student" else self.teacher_tokenizer

    def encode(self, batch: Mapping[str, Sequence[str]]) -> pa.Table:
        """The token columns (TOKEN_FEATURES) of a batch of texts {"src": [...], "tgt": [...]}, the
        `datasets.map` function; built as Arrow arrays (Python lists of lists convert ~10x slower)."""
        columns = {}
        for name, (role, text) in ENCODINGS.items():
            template = self.templates[role]
            keep = template.single_budget(self.max_length)
            encoding = self.tokenizer(role)(list(batch[text]), add_special_tokens=False, return_offsets_mapping=True,
                                            return_attention_mask=False, return_token_type_ids=False, verbose=False)
            ids = [template.cut(row, keep) for row in encoding["input_ids"]]
            spans = [template.cut(row, keep) for row in encoding["offset_mapping"]]
            row_starts = pa.array(np.cumsum([0, *map(len, ids)]), pa.int32())
            flat_ids = np.fromiter(chain.from_iterable(ids), dtype=np.int32)
            flat_spans = np.fromiter(chain.from_iterable(chain.from_iterable(spans)), dtype=np.int32)
            columns[f"{name}_ids"] = pa.ListArray.from_arrays(row_starts, pa.array(flat_ids))
            columns[f"{name}_offsets"] = pa.ListArray.from_arrays(
                row_starts, pa.FixedSizeListArray.from_arrays(pa.array(flat_spans), 2))
            columns[f"{name}_length"] = pa.array(np.fromiter(map(len, encoding["input_ids"]), dtype=np.int32))
        return pa.table(columns)

    def fingerprint(self, split: Dataset) -> str:
        """The datasets fingerprint of `split` with its token columns: split, both tokenizers, max_length."""
        key = (f"{split._fingerprint}:{tokenizer_sha256(self.student_tokenizer)}:"
               f"{tokenizer_sha256(self.teacher_tokenizer)}:{self.max_length}:token-columns-{COLUMNS_VERSION}")
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def of_split(self, split: Dataset) -> Dataset:
        """`split` with its token columns added (`datasets.map`, cached beside a split saved on disk, so
        the first call tokenises and later ones read the cache file; on several ranks let one rank run
        first). A split that already has them is returned as it is."""
        if set(TOKEN_FEATURES) <= set(split.column_names):
            return split
        tokens = split.map(self.encode, batched=True, batch_size=1000, remove_columns=split.column_names,
                           features=TOKEN_FEATURES, new_fingerprint=self.fingerprint(split), desc="pre-tokenising")
        return concatenate_datasets([split, tokens], axis=1)  # the cache file holds the token columns only

    def with_columns(self, examples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """`examples` with their token columns: tokenised here unless every example has them already."""
        if all(set(TOKEN_FEATURES) <= set(example) for example in examples):
            return list(examples)
        columns = self.encode({"src": [e["src"] for e in examples], "tgt": [e["tgt"] for e in examples]}).to_pylist()
        return [{**example, **tokens} for example, tokens in zip(examples, columns)]

    def single(self, examples: Sequence[Mapping[str, Any]], name: str) -> BatchEncoding:
        """Encoding of one text of each example (name "x", "y" or "teacher"), as `encode_texts` gives it:
        input_ids, attention_mask, special_tokens_mask (B, L) long, offset_mapping (B, L, 2) long,
        sequence_ids (B, L) long (0 on the text, NO_SPAN on special and padding tokens)."""
        role = ENCODINGS[name][0]
        template = self.templates[role]
        prefix, suffix = template.single
        keep = template.single_budget(self.max_length)
        rows = [[_special(prefix), _text(example, name, template, keep, 0), _special(suffix)] for example in examples]
        return _padded(rows, self.tokenizer(role).pad_token_id)

    def pair(self, examples: Sequence[Mapping[str, Any]]) -> BatchEncoding:
        """Encoding of the student's [CLS] x [SEP] y [SEP] of each example, truncated longest-first as
        `encode_texts(student_tokenizer, src, tgt)` truncates; keys as `single`'s (sequence ids 0 and 1)."""
        template = self.templates["student"]
        prefix, middle, suffix = template.pair
        x_keep, y_keep = truncated_pair_lengths([e["x_length"] for e in examples], [e["y_length"] for e in examples],
                                                template.pair_budget(self.max_length))
        rows = [[_special(prefix), _text(example, "x", template, int(x_keep[b]), 0), _special(middle),
                 _text(example, "y", template, int(y_keep[b]), 1), _special(suffix)]
                for b, example in enumerate(examples)]
        return _padded(rows, self.student_tokenizer.pad_token_id)

    def pair_lengths(self, split: Dataset) -> np.ndarray:
        """(N,) int64: tokens of each row's [CLS] x [SEP] y [SEP] (at most max_length), from the columns'
        lengths (`split` as `of_split` returns it); nothing is tokenised."""
        lengths = split.with_format("numpy", columns=["x_length", "y_length"])
        x_keep, y_keep = truncated_pair_lengths(lengths["x_length"], lengths["y_length"],
                                                self.templates["student"].pair_budget(self.max_length))
        return x_keep + y_keep + sum(map(len, self.templates["student"].pair))


def _special(ids: Sequence[int]) -> tuple[list[int], list[list[int]], int, int]:
    """A piece of an encoding: (ids, offsets, special flag, sequence id) of template tokens."""
    return list(ids), [[0, 0]] * len(ids), 1, NO_SPAN


def _text(example: Mapping[str, Any], name: str, template: SpecialTemplate, keep: int,
          sequence: int) -> tuple[list[int], list[list[int]], int, int]:
    """A piece of an encoding: the `keep` tokens truncation leaves of an example's text `name` (the
    columns hold a single text's share, cut the same way, so cutting them again gives the same tokens)."""
    ids, offsets = template.cut(example[f"{name}_ids"], keep), template.cut(example[f"{name}_offsets"], keep)
    return list(ids), list(offsets), 0, sequence


def _padded(rows: Sequence[Sequence[tuple[list[int], list[list[int]], int, int]]], pad_id: int) -> BatchEncoding:
    """Right-padded tensors of encodings given as pieces (see `_special`, `_text`); padding is special,
    masked out, spans (0, 0), sequence id NO_SPAN. Rows are joined as Python lists, one tensor made per key."""
    joined = [[list(chain.from_iterable(piece[part] for piece in row)) for part in (0, 1)]
              + [list(chain.from_iterable([piece[part]] * len(piece[0]) for piece in row)) for part in (2, 3)]
              for row in rows]
    width = max((len(ids) for ids, *_ in joined), default=0)

    def padded(part: int, value: Any) -> torch.Tensor:
        return torch.tensor([row[part] + [value] * (width - len(row[part])) for row in joined], dtype=torch.long)

    input_ids = padded(0, pad_id).reshape(len(rows), width)
    return BatchEncoding({
        "input_ids": input_ids,
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, *_ in joined],
                                       dtype=torch.long).reshape(input_ids.shape),
        "special_tokens_mask": padded(2, 1).reshape(input_ids.shape),
        "offset_mapping": padded(1, [0, 0]).reshape(*input_ids.shape, 2),
        "sequence_ids": padded(3, NO_SPAN).reshape(input_ids.shape),
    })

"""The batch every objective reads: MMKDCollator (docs/architecture.md, "Batches").

From a list of pairs it builds the student's TLM input [CLS] x [SEP] y [SEP] (masked), the
student's x and y alone (clean), the teacher's x, and the token matches between them:
match_x and match_tlm_x by identical character spans in x, match_tlm_y by word alignment.
The encodings are assembled from the examples' token columns (mmkd.data.token_columns), computed
once per split by `collator.columns.of_split`; examples without them are tokenised here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformers import BatchEncoding, PreTrainedTokenizerBase

from mmkd.data.masking import mask_tokens
from mmkd.data.seeding import seeded_generator
from mmkd.data.span_matching import match_aligned, match_spans, sequence_ids, special_tokens, token_spans
from mmkd.data.token_columns import TokenColumns
from mmkd.errors import MMKDError


@dataclass
class MMKDCollator:
    """Turns examples {"src", "tgt", "lang", "alignment", "index"} into an MMKD batch.

    Examples carrying their token columns (a split from `self.columns.of_split`) are not tokenised
    again: the collator concatenates, truncates, pads and masks ids.
    Every encoding is truncated to `max_length` tokens (the pair longest-first) and right-padded to
    the longest in the batch. "Special" means the tokenizer's own special tokens and any id in its
    `all_special_ids` ([UNK] included): never masked, never matched, False in the token masks.
    Masking draws from a generator seeded with (seed, epoch, the batch's `index` values), so a
    resumed run masks the same batch the same way. With DataLoader workers, call `set_epoch` before
    the epoch's iterator is created (persistent workers keep their copy).
    """

    student_tokenizer: PreTrainedTokenizerBase
    teacher_tokenizer: PreTrainedTokenizerBase
    max_length: int  # tokens per encoding: the train config's max_length
    mlm_probability: float = 0.15
    seed: int = 0
    epoch: int = field(default=0, init=False)
    columns: TokenColumns = field(init=False)

    def __post_init__(self) -> None:
        for role, tokenizer in (("student", self.student_tokenizer), ("teacher", self.teacher_tokenizer)):
            if not getattr(tokenizer, "is_fast", False):
                raise MMKDError(
                    f"{role} tokenizer {type(tokenizer).__name__} is not a fast (Rust) tokenizer: span "
                    "matching needs its offset mappings; save the model with a tokenizer.json"
                )
            if tokenizer.pad_token_id is None:
                raise MMKDError(f"{role} tokenizer {type(tokenizer).__name__} has no pad token")
        if self.student_tokenizer.mask_token_id is None:
            raise MMKDError(f"student tokenizer {type(self.student_tokenizer).__name__} has no mask token")
        if self.max_length < 5:
            raise MMKDError(f"max_length must be at least 5 ([CLS] x [SEP] y [SEP]), got {self.max_length}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise MMKDError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        self.columns = TokenColumns(self.student_tokenizer, self.teacher_tokenizer, self.max_length)

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` in the masking seed of the batches collated from now on."""
        self.epoch = epoch

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The batch dict of docs/architecture.md, "Batches"."""
        examples = self.columns.with_columns(examples)
        src = [example["src"] for example in examples]
        tgt = [example["tgt"] for example in examples]
        index = [int(example["index"]) for example in examples]
        alignments = [example["alignment"] for example in examples]

        pair = self.columns.pair(examples)
        x = self.columns.single(examples, "x")
        y = self.columns.single(examples, "y")
        teacher = self.columns.single(examples, "teacher")
        student_special = self.student_tokenizer.all_special_ids
        teacher_special = self.teacher_tokenizer.all_special_ids

        tlm_input_ids, tlm_labels = mask_tokens(
            pair["input_ids"],
            special_tokens(pair, student_special),
            vocab_size=len(self.student_tokenizer),
            mask_token_id=self.student_tokenizer.mask_token_id,
            probability=self.mlm_probability,
            special_token_ids=student_special,
            generator=seeded_generator(self.seed, self.epoch, index),
        )
        teacher_spans = token_spans(teacher, 0, teacher_special)
        return {
            "index": torch.tensor(index, dtype=torch.long),
            "lang": [example["lang"] for example in examples],
            "src": src,
            "tlm_input_ids": tlm_input_ids,
            "tlm_attention_mask": pair["attention_mask"],
            "tlm_token_type_ids": _segment_ids(pair),
            "tlm_labels": tlm_labels,
            "x_input_ids": x["input_ids"],
            "x_attention_mask": x["attention_mask"],
            "y_input_ids": y["input_ids"],
            "y_attention_mask": y["attention_mask"],
            "x_token_mask": ~special_tokens(x, student_special),
            "teacher_input_ids": teacher["input_ids"],
            "teacher_attention_mask": teacher["attention_mask"],
            "teacher_token_mask": ~special_tokens(teacher, teacher_special),
            "match_x": match_spans(token_spans(x, 0, student_special), teacher_spans),
            "match_tlm_x": match_spans(token_spans(pair, 0, student_special), teacher_spans),
            "match_tlm_y": match_aligned(
                token_spans(pair, 1, student_special), teacher_spans, src, tgt, alignments, rows=index
            ),
        }


def _segment_ids(pair: BatchEncoding) -> Tensor:
    """Token type ids (B, L) long of a pair encoding: 0 up to the first y token, 1 from it, 0 on padding.

    With an empty y, the final [SEP] (the last non-padding token) starts segment 1.
    """
    length = pair["input_ids"].shape[1]
    positions = torch.arange(length)
    is_y = sequence_ids(pair) == 1
    first_y = torch.where(is_y, positions, length).amin(dim=1)
    last_token = pair["attention_mask"].sum(dim=1) - 1
    start = torch.minimum(first_y, last_token)
    return ((positions[None, :] >= start[:, None]) & pair["attention_mask"].bool()).long()

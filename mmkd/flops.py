"""The FLOPs a training micro-step does, counted from its shapes (the numerator of train/tflops and MFU).

Counted, forward and backward, as 2 x multiply-adds of the matrix products (what
torch.utils.flop_counter.FlopCounterMode counts; element-wise work, softmax and normalisation are
left out, as there):
- the student's passes that the loss weights run (TLM pair, x alone, y alone; MMKDLoss), each a
  BERT-style encoder on its padded (B, L): per layer and position the Q, K, V and output projections
  (4 h^2) and the feed-forward (2 h f), per layer and sequence the attention scores and weighted sum
  (2 L^2 h); embedding look-ups cost none;
- the MLM head (transform h^2 + decoder h V per row) on the masked rows, or on every position with
  MMKDLoss(full_logits=True);
- the losses' products: P_w on the XWCL queries and their K x C similarities to the teacher tokens,
  P_s on the 2B pooled sentences, StrucA's N x N similarities (student d_S, teacher d_T) at sentence
  and token level;
- a live teacher's forward pass (none with the cache).
Backward is twice the forward of each product whose inputs both need a gradient (weight and
activation), once where one side is the teacher's (XWCL candidates); StrucA's backward is
4 N^2 d_S, plus the forward's 2 N^2 (d_S + d_T) again for the chunked and Triton paths, which
recompute the similarity blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mmkd.objectives.combined import MMKDLoss
from mmkd.objectives.tlm import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import PretrainedConfig


@dataclass(frozen=True)
class EncoderShape:
    """A BERT-style encoder's sizes: layers, hidden h, feed-forward f, vocabulary V."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config: PretrainedConfig) -> EncoderShape:
        """From a transformers config (num_hidden_layers, hidden_size, vocab_size and the feed-forward size:
        intermediate_size, or hidden_dim as DistilBERT names it)."""
        intermediate = getattr(config, "intermediate_size", None) or config.hidden_dim
        return cls(config.num_hidden_layers, config.hidden_size, intermediate, config.vocab_size)

    def forward_flops(self, batch: int, length: int) -> float:
        """Forward FLOPs of the encoder on `batch` sequences padded to `length`."""
        h = self.hidden
        return 2.0 * self.layers * (batch * length * (4 * h * h + 2 * h * self.intermediate)
                                    + 2 * batch * length * length * h)

    def head_forward_flops(self, rows: int) -> float:
        """Forward FLOPs of the MLM head (transform, then decoder to the vocabulary) on `rows` states."""
        return 2.0 * rows * (self.hidden * self.hidden + self.hidden * self.vocab)


def struca_flops(rows: int, d_student: int, d_teacher: int, recompute: bool) -> float:
    """Forward + backward FLOPs of StrucA on `rows` rows (see the module docstring)."""
    forward = 2.0 * rows * rows * (d_student + d_teacher)
    return forward + 4.0 * rows * rows * d_student + (forward if recompute else 0.0)


@dataclass(frozen=True)
class MicroStepFlops:
    """Callable: the forward + backward FLOPs (float) of one micro-batch of this rank.

    student: the student encoder's shape; d_teacher: d_T; loss: the run's MMKDLoss (weights, full
    logits, StrucA implementation, gathering); world: data-parallel ranks (gathered rows and
    candidates, counted as this rank's times the world size); teacher: a live teacher's shape, None
    with the cache; d_sentence: d_E, the teacher's sentence embedding size (None: d_T).
    """

    student: EncoderShape
    d_teacher: int
    loss: MMKDLoss
    world: int = 1
    teacher: EncoderShape | None = None
    d_sentence: int | None = None

    def __call__(self, batch: Mapping[str, Any]) -> float:
        """FLOPs of MMKDLoss's forward and backward on `batch` (architecture.md "Batches")."""
        w, s, d_t = self.loss.weights, self.student, self.d_teacher
        d_e = d_t if self.d_sentence is None else self.d_sentence
        h = s.hidden
        recompute = self.loss.struct_impl != "reference"
        flops = 0.0
        if w.tlm or w.xwcl:
            flops += 3 * s.forward_flops(*batch["tlm_input_ids"].shape)
        if w.tlm:
            masked = batch["tlm_labels"].numel() if self.loss.full_logits else \
                int((batch["tlm_labels"] != IGNORE_INDEX).sum())
            flops += 3 * s.head_forward_flops(masked)
        if w.senta or w.struca_tok:
            flops += 3 * s.forward_flops(*batch["x_input_ids"].shape)
        if w.senta or w.struca_sent:
            flops += 3 * s.forward_flops(*batch["y_input_ids"].shape)
        pairs = batch["x_input_ids"].shape[0]
        if w.xwcl:
            queries = xwcl_query_count(batch)
            candidates = int(batch["teacher_token_mask"].sum()) * (self.world if self.loss.gather_negatives else 1)
            flops += 3 * 2.0 * queries * h * d_t + 2 * 2.0 * queries * candidates * d_t
        if w.senta:
            flops += 3 * 2.0 * 2 * pairs * h * d_e
        if w.struca_sent:
            rows = pairs * (self.world if self.loss.gather_sentence_rows else 1)
            flops += struca_flops(rows, h, d_e, recompute)
            if self.loss.struct_bank is not None:  # y rows against the bank: forward and the gradient to y
                flops += 2 * 2.0 * pairs * len(self.loss.struct_bank) * d_e
        if w.struca_tok:
            rows = len(batch["match_x"]) * (self.world if self.loss.gather_token_rows else 1)
            flops += struca_flops(rows, h, d_t, recompute)
        if self.teacher is not None:
            flops += self.teacher.forward_flops(*batch["teacher_input_ids"].shape)
        return flops


def xwcl_query_count(batch: Mapping[str, Any]) -> int:
    """XWCL's queries: the matched TLM positions (x side and y side) that are masked."""
    match = torch.cat([batch["match_tlm_x"], batch["match_tlm_y"]])
    return int((batch["tlm_labels"][match[:, 0], match[:, 1]] != IGNORE_INDEX).sum()) if len(match) else 0

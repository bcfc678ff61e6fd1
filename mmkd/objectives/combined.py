"""MMKDLoss: the weighted sum of the four levels' objectives (mmkd-method.md, section 6).

L = w_tlm L_TLM + w_xwcl L_XWCL + w_sent L_SentA + w_struct_sent L_StrucA(sentence)
    + w_struct_tok L_StrucA(token)
Each term goes by one name: its LossWeights field, its key in the train config's `weights`, its
TensorBoard tags (train/<term>, dev/<term>) and its profile phase (loss/<term>). In the formula's
order: tlm (w_tlm), xwcl (w_xwcl), senta (w_sent), struca_sent (w_struct_sent), struca_tok (w_struct_tok).
A term whose weight is 0 is not computed, and a student forward pass that no remaining term needs
is not run: TLM pass (tlm, xwcl), x alone (senta, struca_tok), y alone (senta, struca_sent). The
MLM head runs on the masked TLM positions only, and not at all when the tlm weight is 0.
The passes and each term run in `mmkd.phases.phase` ranges (student_forward, loss/<term>) for
`mmkd profile`; with no profiler recording they cost ~1 us each.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Mapping, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mmkd.models.pooling import mean_pool
from mmkd.objectives.gather import gather_rows
from mmkd.objectives.sentence import senta_loss
from mmkd.objectives.structure import FORMS, IMPLS, SENTENCE_MODES, cross_lingual_struca_loss, struca_loss
from mmkd.objectives.tlm import IGNORE_INDEX, tlm_loss
from mmkd.objectives.word import gather_candidates, xwcl_loss
from mmkd.phases import phase

if TYPE_CHECKING:
    from mmkd.models.student import MMKDStudent
    from mmkd.models.teacher import TeacherOutputs


@dataclass(frozen=True)
class LossWeights:
    """Weight of each term in the total, under the term's name; non-negative, not all zero."""

    tlm: float = 1.0  # the method's w_tlm
    xwcl: float = 1.0  # w_xwcl
    senta: float = 1.0  # w_sent
    struca_sent: float = 1.0  # w_struct_sent: StrucA over sentences
    struca_tok: float = 1.0  # w_struct_tok: StrucA over matched tokens

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        negative = [name for name, value in values.items() if value < 0]
        if negative:
            raise ValueError(f"LossWeights: weights must be >= 0, got {', '.join(negative)} < 0")
        if not any(values.values()):
            raise ValueError("LossWeights: every weight is 0, nothing to train")


TERMS = tuple(spec.name for spec in fields(LossWeights))  # the loss terms, in the order they are computed


class MMKDLossOutput(NamedTuple):
    """total: 0-dim weighted sum, carrying the graph; terms: detached value of each computed term.

    `terms` holds only the terms that were computed (weight > 0), under the names of TERMS.
    A tuple, so that DeepSpeed finds `total` among the module's outputs and hooks its backward
    prologue there (its backward timers, wall_clock_breakdown and the flops profiler need that).
    """

    total: Tensor
    terms: dict[str, Tensor]


class MMKDLoss(nn.Module):
    """The MMKD objective on one batch (architecture.md "Batches") and its cached teacher outputs.

    tau_w: XWCL temperature; struct_tau, struct_form, struct_impl: StrucA's tau, form and impl (both
    granularities). Each argument is the train config key of the same name.
    struct_sent_mode: sentence StrucA "monolingual" (the method's: e^S(y) among themselves) or
    "cross_lingual" (structure.cross_lingual_struca_loss: P_s e^S(y_i) against every P_s e^S(x_j)).
    struct_bank: teacher sentence embeddings (K, d_E) that cross_lingual sentence StrucA adds as K
    more columns of its y -> x rows (config struct_bank_size; mmkd.train draws them from the train
    cache); a buffer kept out of the state dict, so it moves with the module and is never saved.
    struct_sent_detach_x: cross_lingual sentence StrucA gives no gradient to P_s e^S(x): only the
    translations move towards the teacher's structure, and the English side is trained by SentA alone
    (as in the MSE recipe).
    gather_negatives: XWCL negatives from every data-parallel rank. gather_sentence_rows: sentence
    StrucA over the global batch; gather_token_rows: token StrucA over the matched tokens of every
    rank (N ~ 7k at the paper's shapes on 8 ranks, against ~0.8k per rank). Gathered, gradients flow
    to the local rows only, scaled by the world size so that the data-parallel average of the ranks'
    gradients is the global loss's gradient.
    The MLM head scores the masked TLM positions only; full_logits scores every position (the same
    loss at ~V x d_S x B x L more FLOPs: the layout before issue 14, which scripts/bench_step.py
    measures against).
    """

    def __init__(self, weights: LossWeights | None = None, *, tau_w: float = 0.05, struct_tau: float = 0.1,
                 struct_form: str = "kl", struct_impl: str = "auto", gather_negatives: bool = False,
                 gather_sentence_rows: bool = False, gather_token_rows: bool = False,
                 full_logits: bool = False, struct_sent_mode: str = "monolingual",
                 struct_bank: Tensor | None = None, struct_sent_detach_x: bool = False) -> None:
        super().__init__()
        if struct_sent_mode not in SENTENCE_MODES:
            raise ValueError(f"MMKDLoss: struct_sent_mode must be one of {SENTENCE_MODES}, got {struct_sent_mode!r}")
        if struct_sent_mode == "cross_lingual" and gather_sentence_rows:
            raise ValueError("MMKDLoss: struct_sent_mode cross_lingual works within the local batch; "
                             "set gather_sentence_rows false")
        for name, value in (("struct_bank", struct_bank is not None), ("struct_sent_detach_x", struct_sent_detach_x)):
            if value and struct_sent_mode != "cross_lingual":
                raise ValueError(f"MMKDLoss: {name} applies to cross_lingual sentence StrucA; "
                                 f"struct_sent_mode is {struct_sent_mode!r}")
        if struct_form not in FORMS:
            raise ValueError(f"MMKDLoss: struct_form must be one of {FORMS}, got {struct_form!r}")
        if struct_impl not in IMPLS:
            raise ValueError(f"MMKDLoss: struct_impl must be one of {IMPLS}, got {struct_impl!r}")
        self.weights = weights or LossWeights()
        self.tau_w, self.struct_tau = tau_w, struct_tau
        self.struct_form, self.struct_impl = struct_form, struct_impl
        self.gather_negatives, self.gather_sentence_rows = gather_negatives, gather_sentence_rows
        self.gather_token_rows, self.full_logits = gather_token_rows, full_logits
        self.struct_sent_mode, self.struct_sent_detach_x = struct_sent_mode, struct_sent_detach_x
        self.register_buffer("struct_bank", struct_bank, persistent=False)

    def forward(self, student: MMKDStudent, batch: Mapping[str, Tensor],
                teacher: TeacherOutputs) -> MMKDLossOutput:
        """The terms and their weighted total; `teacher` holds the teacher's outputs for the batch's x."""
        w = self.weights
        cross_lingual = bool(w.struca_sent) and self.struct_sent_mode == "cross_lingual"
        terms: dict[str, Tensor] = {}
        with phase("student_forward"):  # the passes in the order that draws their dropout masks
            tlm_inputs = (batch["tlm_input_ids"], batch["tlm_attention_mask"], batch["tlm_token_type_ids"])
            if w.tlm:
                masked = batch["tlm_labels"] != IGNORE_INDEX
                logits, hidden_tlm = student.mlm_forward(*tlm_inputs, rows=None if self.full_logits else masked)
                labels = batch["tlm_labels"] if self.full_logits else batch["tlm_labels"][masked]
            elif w.xwcl:
                hidden_tlm = student.hidden_states(*tlm_inputs)
            if w.senta or w.struca_tok or cross_lingual:
                hidden_x = student.hidden_states(batch["x_input_ids"], batch["x_attention_mask"])
            if w.senta or w.struca_sent:
                hidden_y = student.hidden_states(batch["y_input_ids"], batch["y_attention_mask"])
                pooled_y = mean_pool(hidden_y, batch["y_attention_mask"])
        if w.tlm:
            with phase("loss/tlm"):
                terms["tlm"] = tlm_loss(logits, labels)
        if w.xwcl:
            with phase("loss/xwcl"):
                terms["xwcl"] = self._xwcl(student, batch, teacher, hidden_tlm)
        if w.senta or cross_lingual:
            projected_x = student.project_sentence(mean_pool(hidden_x, batch["x_attention_mask"]))
            projected_y = student.project_sentence(pooled_y)
        if w.senta:
            with phase("loss/senta"):
                terms["senta"] = senta_loss(projected_x, projected_y, teacher.sentence_embedding)
        if w.struca_sent:
            with phase("loss/struca_sent"):
                terms["struca_sent"] = (
                    cross_lingual_struca_loss(projected_y,
                                              projected_x.detach() if self.struct_sent_detach_x else projected_x,
                                              teacher.sentence_embedding,
                                              tau=self.struct_tau, form=self.struct_form,
                                              bank=self.struct_bank) if cross_lingual
                    else self._struca(pooled_y, teacher.sentence_embedding, self.gather_sentence_rows))
        if w.struca_tok:
            with phase("loss/struca_tok"):
                match = batch["match_x"]
                terms["struca_tok"] = self._struca(hidden_x[match[:, 0], match[:, 1]],
                                                   teacher.token_states[match[:, 0], match[:, 2]],
                                                   self.gather_token_rows)
        total = sum(getattr(w, name) * value for name, value in terms.items())
        return MMKDLossOutput(total, {name: value.detach() for name, value in terms.items()})

    def _xwcl(self, student: MMKDStudent, batch: Mapping[str, Tensor], teacher: TeacherOutputs,
              hidden_tlm: Tensor) -> Tensor:
        """Queries at the masked matched TLM positions (x side, then y side) against teacher tokens."""
        match = torch.cat([batch["match_tlm_x"], batch["match_tlm_y"]])
        match = match[batch["tlm_labels"][match[:, 0], match[:, 1]] != IGNORE_INDEX]
        queries = student.heads.word(hidden_tlm[match[:, 0], match[:, 1]])
        token_mask = batch["teacher_token_mask"]
        if not bool(token_mask[match[:, 0], match[:, 2]].all()):
            raise ValueError("MMKDLoss: a TLM match points at a teacher position outside teacher_token_mask")
        candidate_index = token_mask.flatten().cumsum(0).view_as(token_mask) - 1
        positives = candidate_index[match[:, 0], match[:, 2]]
        candidates = teacher.token_states[token_mask]
        if self.gather_negatives:
            candidates, offset = gather_candidates(candidates)
            positives = positives + offset
        return xwcl_loss(queries, candidates, positives, self.tau_w)

    def _struca(self, student_rows: Tensor, teacher_rows: Tensor, gather: bool) -> Tensor:
        """StrucA over this rank's rows (sentence: U = e^S(y), V = e^T(x); token: matched states), or,
        with `gather`, over every rank's rows, the local rows' gradient scaled by the world size."""
        if gather:
            student_rows, _ = gather_rows(student_rows)
            teacher_rows, _ = gather_rows(teacher_rows)
        loss = struca_loss(student_rows, teacher_rows, tau=self.struct_tau, form=self.struct_form,
                           impl=self.struct_impl)
        if not gather:
            return loss
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        return _scale_gradient(loss, world)


def _scale_gradient(value: Tensor, factor: float) -> Tensor:
    """`value` unchanged, its gradient multiplied by `factor` (value * f - value * (f - 1), detached)."""
    return value * factor - (value * (factor - 1)).detach()

"""MicroStepFlops: the counted FLOPs of a micro-step within 5% of torch's FlopCounterMode on tiny models."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertForMaskedLM

from mmkd.data.collate import MMKDCollator
from mmkd.flops import EncoderShape, MicroStepFlops
from mmkd.models.heads import create_projection_heads
from mmkd.models.student import MMKDStudent
from mmkd.objectives.combined import LossWeights, MMKDLoss

D_T = 24
PAIRS = [("Open the file in a new window.", "Ouvrez le fichier dans une nouvelle fenêtre.", [[0, 0], [2, 2]]),
         ("Save it", "Sauvez-le", None),
         ("Close all open windows now, please", "Fermez maintenant toutes les fenêtres ouvertes", [[0, 0]]),
         ("The file could not be read because it is too large", "Le fichier est trop grand", None)]


def tiny_student(tokenizer, hidden: int = 32, intermediate: int = 64, vocab: int | None = None,
                 d_sentence: int = D_T) -> MMKDStudent:
    config = BertConfig(vocab_size=vocab or len(tokenizer), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=intermediate, max_position_embeddings=64)
    torch.manual_seed(0)
    return MMKDStudent(BertForMaskedLM(config).train(), create_projection_heads(hidden, D_T, d_sentence=d_sentence),
                       tokenizer,
                       {"name": "tiny", "weights_sha256": ""})


@pytest.fixture(scope="module")
def batch(teacher_tokenizer):
    examples = [{"src": src, "tgt": tgt, "lang": "fr", "alignment": links, "index": i}
                for i, (src, tgt, links) in enumerate(PAIRS)]
    collated = MMKDCollator(teacher_tokenizer, teacher_tokenizer, max_length=32, mlm_probability=0.3, seed=1)(examples)
    assert (collated["tlm_labels"] != -100).sum() >= 4 and len(collated["match_x"]) > 8
    return collated


def teacher_outputs(batch, d_sentence: int = D_T):
    gen = torch.Generator().manual_seed(0)
    b, length = batch["teacher_input_ids"].shape
    return SimpleNamespace(token_states=torch.randn(b, length, D_T, generator=gen),
                           sentence_embedding=torch.randn(b, d_sentence, generator=gen),
                           attention_mask=batch["teacher_attention_mask"])


def measured_flops(student, loss, batch) -> int:
    with FlopCounterMode(display=False) as counter:
        loss(student, batch, teacher_outputs(batch, student.d_sentence)).total.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize(("weights", "options"), [
    (LossWeights(), {}),
    (LossWeights(), {"full_logits": True}),
    (LossWeights(), {"struct_impl": "reference"}),
    (LossWeights(tlm=0.0, struca_sent=0.0), {}),
    (LossWeights(xwcl=0.0, senta=0.0, struca_tok=0.0), {}),
])
@pytest.mark.parametrize("sizes", [{"hidden": 32, "intermediate": 64}, {"hidden": 64, "intermediate": 256,
                                                                       "vocab": 500}])
def test_counted_flops_are_within_5_percent_of_flop_counter_mode(teacher_tokenizer, batch, weights, options, sizes):
    if sizes.get("vocab"):
        batch = {**batch, **{key: batch[key] % sizes["vocab"] for key in ("tlm_input_ids", "x_input_ids",
                                                                            "y_input_ids")},
                 "tlm_labels": torch.where(batch["tlm_labels"] >= 0, batch["tlm_labels"] % sizes["vocab"], -100)}
    student = tiny_student(teacher_tokenizer, **sizes)
    loss = MMKDLoss(weights, struct_impl=options.get("struct_impl", "chunked"),
                    full_logits=options.get("full_logits", False))
    counted = MicroStepFlops(EncoderShape.of(student.mlm.config), D_T, loss)(batch)
    measured = measured_flops(student, loss, batch)
    assert counted == pytest.approx(measured, rel=0.05)


@pytest.mark.parametrize("mode,bank_size", [("monolingual", 0), ("cross_lingual", 0), ("cross_lingual", 4096)])
def test_a_sentence_embedding_of_another_size_is_counted_at_its_size(teacher_tokenizer, batch, mode, bank_size):
    """A teacher whose Dense module changes the size: P_s, SentA and sentence StrucA work in d_E = 8;
    a bank of teacher embeddings adds its columns to cross-lingual StrucA."""
    student = tiny_student(teacher_tokenizer, d_sentence=8)
    bank = torch.randn(bank_size, 8) if bank_size else None
    loss = MMKDLoss(LossWeights(tlm=0.0, xwcl=0.0, struca_tok=0.0), struct_sent_mode=mode, struct_bank=bank)
    counted = MicroStepFlops(EncoderShape.of(student.mlm.config), D_T, loss, d_sentence=8)(batch)
    assert counted == pytest.approx(measured_flops(student, loss, batch), rel=0.05)


def test_full_logits_cost_the_head_on_every_position(teacher_tokenizer, batch):
    student = tiny_student(teacher_tokenizer)
    shape = EncoderShape.of(student.mlm.config)
    masked = MicroStepFlops(shape, D_T, MMKDLoss())(batch)
    full = MicroStepFlops(shape, D_T, MMKDLoss(full_logits=True))(batch)
    rows = batch["tlm_labels"].numel() - int((batch["tlm_labels"] != -100).sum())
    assert full - masked == pytest.approx(3 * shape.head_forward_flops(rows))


def test_a_live_teacher_adds_its_forward_pass(teacher_tokenizer, batch):
    student = tiny_student(teacher_tokenizer)
    shape = EncoderShape.of(student.mlm.config)
    teacher = EncoderShape(layers=2, hidden=D_T, intermediate=48, vocab=100)
    live = MicroStepFlops(shape, D_T, MMKDLoss(), teacher=teacher)(batch)
    assert live - MicroStepFlops(shape, D_T, MMKDLoss())(batch) == \
        pytest.approx(teacher.forward_flops(*batch["teacher_input_ids"].shape))


def test_shapes_read_bert_and_distilbert_configs():
    from transformers import BertConfig, DistilBertConfig

    from mmkd.flops import EncoderShape

    bert = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, intermediate_size=64)
    distilbert = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    assert EncoderShape.of(bert) == EncoderShape.of(distilbert) == EncoderShape(2, 32, 64, 100)

"""MMKDStudent and load_student on small random masked-LM models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

from mmkd.errors import MMKDError
from mmkd.models.heads import HEADS_FILE, create_projection_heads
from mmkd.models.model_files import weights_sha256
from mmkd.models.student import STUDENT_FILE, MMKDStudent, load_student
from mmkd.objectives.tlm import IGNORE_INDEX, tlm_loss

D_TEACHER = 24


def tiny_mlm_dir(path, tokenizer, type_vocab_size: int = 2):
    """A small random BERT masked LM with the teacher's tokenizer, saved as a plain HF directory."""
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, type_vocab_size=type_vocab_size)
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory, teacher_tokenizer):
    return tiny_mlm_dir(tmp_path_factory.mktemp("plain"), teacher_tokenizer)


def pair_batch(tokenizer):
    return tokenizer(["Open the file.", "Save it"], ["Ouvrez le fichier.", "Sauvez"], padding=True,
                     return_tensors="pt")


def test_plain_model_gets_seeded_heads_and_its_identity(plain_dir):
    first = load_student(str(plain_dir), teacher_hidden_size=D_TEACHER)
    second = load_student(str(plain_dir), teacher_hidden_size=D_TEACHER)
    assert (first.d_student, first.d_teacher) == (16, D_TEACHER)
    torch.testing.assert_close(first.heads.word.weight, second.heads.word.weight)
    torch.testing.assert_close(first.heads.word.weight, create_projection_heads(16, D_TEACHER).word.weight)
    assert first.source == {"name": str(plain_dir), "weights_sha256": weights_sha256(plain_dir)}


def test_plain_model_without_teacher_size_is_refused(plain_dir):
    with pytest.raises(MMKDError, match=HEADS_FILE):
        load_student(str(plain_dir))


def test_missing_student_path_names_it(tmp_path):
    with pytest.raises(MMKDError, match=str(tmp_path / "absent")):
        load_student(str(tmp_path / "absent"), teacher_hidden_size=D_TEACHER)


def test_mlm_forward_is_one_pass_and_matches_hidden_states(plain_dir):
    student = load_student(str(plain_dir), teacher_hidden_size=D_TEACHER)
    batch = pair_batch(student.tokenizer)
    calls = []
    handle = student.mlm.base_model.register_forward_hook(lambda *args: calls.append(1))
    logits, hidden = student.mlm_forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    handle.remove()
    assert len(calls) == 1
    batch_size, length = batch["input_ids"].shape
    assert logits.shape == (batch_size, length, len(student.tokenizer))
    assert hidden.shape == (batch_size, length, 16)
    alone = student.hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(hidden, alone)
    torch.testing.assert_close(logits, student.mlm.cls(hidden))
    (logits.sum() + student.heads.word(hidden).sum()).backward()
    assert student.mlm.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert student.heads.word.weight.grad is not None


def masked_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Labels at every third real position after [CLS], -100 elsewhere."""
    positions = torch.arange(input_ids.shape[1])[None, :]
    picked = (positions % 3 == 1) & attention_mask.bool()
    return torch.where(picked, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


def test_masked_rows_only_tlm_loss_equals_full_logits_loss(plain_dir):
    """The head on the masked rows gives the full-logits TLM loss, its gradients, and no other logits."""
    batch = pair_batch(load_student(str(plain_dir), teacher_hidden_size=D_TEACHER).tokenizer)
    labels = masked_labels(batch["input_ids"], batch["attention_mask"])
    rows = labels != IGNORE_INDEX
    results = []
    for masked_only in (False, True):
        student = load_student(str(plain_dir), teacher_hidden_size=D_TEACHER).double()
        logits, _ = student.mlm_forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                        rows=rows if masked_only else None)
        loss = tlm_loss(logits, labels[rows] if masked_only else labels)
        loss.backward()
        results.append((logits.shape, loss, {name: p.grad for name, p in student.named_parameters()
                                             if p.grad is not None}))
    (full_shape, full_loss, full_grads), (rows_shape, rows_loss, rows_grads) = results
    assert full_shape == (*batch["input_ids"].shape, len(load_student(str(plain_dir), D_TEACHER).tokenizer))
    assert rows_shape == (int(rows.sum()), full_shape[-1])
    torch.testing.assert_close(rows_loss, full_loss, rtol=1e-12, atol=1e-12)
    assert rows_grads.keys() == full_grads.keys() and "mlm.cls.predictions.transform.dense.weight" in rows_grads
    for name, grad in full_grads.items():
        torch.testing.assert_close(rows_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_masked_rows_only_runs_the_head_on_those_rows(plain_dir):
    student = load_student(str(plain_dir), teacher_hidden_size=D_TEACHER)
    batch = pair_batch(student.tokenizer)
    rows = masked_labels(batch["input_ids"], batch["attention_mask"]) != IGNORE_INDEX
    seen = []
    handle = student.mlm.cls.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    logits, hidden = student.mlm_forward(batch["input_ids"], batch["attention_mask"], rows=rows)
    handle.remove()
    assert seen == [(int(rows.sum()), 16)]
    torch.testing.assert_close(logits, student.mlm.cls(hidden)[rows])


def test_segment_ids_reach_a_model_that_has_them(plain_dir):
    student = load_student(str(plain_dir), teacher_hidden_size=D_TEACHER)
    batch = pair_batch(student.tokenizer)
    with_segments = student.hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    without = student.hidden_states(batch["input_ids"], batch["attention_mask"])
    assert not torch.allclose(with_segments, without)


def test_segment_ids_are_dropped_for_a_model_without_them(tmp_path, teacher_tokenizer):
    directory = tiny_mlm_dir(tmp_path / "one-type", teacher_tokenizer, type_vocab_size=1)
    student = load_student(str(directory), teacher_hidden_size=D_TEACHER)
    assert not student.uses_token_type_ids
    batch = pair_batch(student.tokenizer)
    with_segments = student.hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(with_segments, student.hidden_states(batch["input_ids"], batch["attention_mask"]))


def test_save_and_load_round_trip(plain_dir, tmp_path):
    student = load_student(str(plain_dir), teacher_hidden_size=D_TEACHER)
    out = student.save(tmp_path / "student")
    description = json.loads((out / STUDENT_FILE).read_text())
    assert description == {"d_student": 16, "d_teacher": D_TEACHER, "d_sentence": D_TEACHER, "source": student.source}
    reloaded = load_student(str(out), teacher_hidden_size=D_TEACHER)
    assert reloaded.source == student.source
    batch = pair_batch(student.tokenizer)
    torch.testing.assert_close(reloaded.mlm_forward(**batch)[0], student.mlm_forward(**batch)[0])
    torch.testing.assert_close(reloaded.heads.sentence.weight, student.heads.sentence.weight)
    assert isinstance(AutoModelForMaskedLM.from_pretrained(out), BertForMaskedLM)
    with pytest.raises(MMKDError, match="d_T = 24"):
        load_student(str(out), teacher_hidden_size=32)


def test_heads_must_fit_the_model(plain_dir, teacher_tokenizer):
    mlm = AutoModelForMaskedLM.from_pretrained(plain_dir)
    with pytest.raises(MMKDError, match="d_S = 8"):
        MMKDStudent(mlm, create_projection_heads(8, D_TEACHER), teacher_tokenizer, {"name": "x"})


def test_evaluating_turns_dropout_and_autograd_off_and_restores_the_mode(plain_dir):
    student = load_student(str(plain_dir), teacher_hidden_size=D_TEACHER)
    batch = pair_batch(student.tokenizer)
    for mode in (True, False):
        student.train(mode)
        with student.evaluating():
            first = student.hidden_states(batch["input_ids"], batch["attention_mask"])
            second = student.hidden_states(batch["input_ids"], batch["attention_mask"])
            assert not student.training and not student.mlm.training
        assert not first.requires_grad
        torch.testing.assert_close(first, second, rtol=0, atol=0)  # no dropout
        assert student.training is mode and student.mlm.training is mode
    student.train()
    with pytest.raises(RuntimeError, match="inside"):
        with student.evaluating():
            raise RuntimeError("inside")
    assert student.training and student.mlm.training

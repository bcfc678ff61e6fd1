"""The sentence-transformers MSE baseline: its schedule, its time budget, and what it trains and saves."""

from __future__ import annotations

import pytest
import torch

from mmkd.errors import MMKDError
from mmkd.evaluation.mse_baseline import MSEBaselineConfig, TimeBudget, lr_factor, train_mse_baseline
from mmkd.models.sentence_transformer import save_sentence_transformer
from mmkd.models.student import load_student
from tiny_setup import synthetic_pairs


def test_lr_warms_up_from_the_first_step_and_decays_to_zero_with_time():
    assert lr_factor(0, 4, 0.0) == pytest.approx(0.25)  # the first step already moves the weights
    assert lr_factor(3, 4, 0.0) == lr_factor(50, 4, 0.0) == 1.0
    assert lr_factor(50, 4, 0.25) == pytest.approx(0.75)
    assert lr_factor(1, 4, 0.5) == pytest.approx(0.25)
    assert lr_factor(50, 4, 1.0) == lr_factor(50, 4, 1.7) == 0.0


def test_time_budget_measures_from_start_with_any_clock():
    now = [100.0]
    budget = TimeBudget(10.0, clock=lambda: now[0])
    assert budget.progress == 0.0
    budget.start()
    now[0] = 104.0
    assert budget.elapsed == 4.0 and budget.progress == pytest.approx(0.4)


def test_settings_that_cannot_train_are_refused():
    with pytest.raises(MMKDError, match="bad settings"):
        MSEBaselineConfig(budget_seconds=0)


def tiny_student_dir(root, tokenizer):
    """A 2-layer random BERT masked LM (hidden 16) with `tokenizer`, as a student directory with heads to d_T 32."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)).save_pretrained(root / "plain")
    tokenizer.save_pretrained(root / "plain")
    return load_student(root / "plain", teacher_hidden_size=32).save(root / "student")


def test_trains_every_column_towards_the_teacher_and_saves_a_loadable_model(tmp_path, teacher_tokenizer):
    from sentence_transformers import SentenceTransformer

    student = load_student(tiny_student_dir(tmp_path, teacher_tokenizer))
    init = save_sentence_transformer(student, tmp_path / "init", max_length=32, normalize=False)
    rows = synthetic_pairs()[:48]
    english, translations = [r["src"] for r in rows], [r["tgt"] for r in rows]
    noise = torch.randn(len(rows), 32, generator=torch.Generator().manual_seed(0))
    targets = torch.nn.functional.normalize(noise, dim=-1)
    before = SentenceTransformer(str(init), device="cpu")

    def mse(model) -> float:
        both = model.encode(english + translations, convert_to_tensor=True)
        return float(((both - torch.cat([targets, targets])) ** 2).mean())

    config = MSEBaselineConfig(budget_seconds=600, batch_size=8, learning_rate=1e-3, warmup_steps=1, max_length=32)
    summary = train_mse_baseline(init, english, translations, targets, tmp_path / "mse", config)
    assert summary["steps"] == 6 and summary["pairs"] == 48 and summary["seconds"] > 0  # one pass: 48 / 8
    after = SentenceTransformer(str(tmp_path / "mse"), device="cpu")
    assert mse(after) < mse(before)
    with pytest.raises(MMKDError, match="need equal counts"):
        train_mse_baseline(init, english, translations[:-1], targets, tmp_path / "bad", config)

"""The sentence-transformers MSE baseline: its schedule, its time budget, and what it trains and saves."""

from __future__ import annotations

import pytest
import torch

from mmkd.errors import MMKDError
from mmkd.evaluation.mse_baseline import MSEBaselineConfig, train_mse_baseline, warmup_decay
from mmkd.models.sentence_transformer import save_sentence_transformer
from mmkd.models.student import load_student
from tiny_setup import synthetic_pairs


def test_schedule_is_deepspeeds_linear_warmup_decay():
    assert warmup_decay(1, 4, 10) == pytest.approx(0.25)  # the first step already moves the weights
    assert warmup_decay(4, 4, 10) == 1.0 and warmup_decay(7, 4, 10) == pytest.approx(0.5)
    assert warmup_decay(10, 4, 10) == 0.0 and warmup_decay(12.5, 4, 10) == 0.0


def test_settings_that_cannot_train_are_refused():
    with pytest.raises(MMKDError, match="bad settings"):
        MSEBaselineConfig(total_steps=10, budget_seconds=-1)
    assert MSEBaselineConfig(total_steps=10, budget_seconds=0, warmup_steps=1).budget_seconds == 0  # steps only
    with pytest.raises(MMKDError, match="bad settings"):
        MSEBaselineConfig(total_steps=10, budget_seconds=60, warmup_steps=10)


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

    config = MSEBaselineConfig(total_steps=5, budget_seconds=600, batch_size=8, learning_rate=1e-3, warmup_steps=1,
                               max_length=32)
    summary = train_mse_baseline(init, english, translations, targets, tmp_path / "mse", config)
    assert summary["steps"] == 5 and summary["pairs"] == 40 and summary["seconds"] > 0  # the step budget, not 48 / 8
    after = SentenceTransformer(str(tmp_path / "mse"), device="cpu")
    assert mse(after) < mse(before)
    with pytest.raises(MMKDError, match="need equal counts"):
        train_mse_baseline(init, english, translations[:-1], targets, tmp_path / "bad", config)

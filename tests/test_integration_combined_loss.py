"""Acceptance (objectives): a short CPU run of the combined MMKD loss on a real batch of the built-in
corpus, with the real teacher and a student made by init-student, decreases every term."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmkd.corpus.builtin import build_builtin_corpus
from mmkd.data.collate import MMKDCollator
from mmkd.models.init_student import corpus_training_texts, make_student
from mmkd.models.teacher import load_teacher
from mmkd.objectives.combined import TERMS, MMKDLoss

LANGS = ("eu", "xh")
BATCH = 16
STEPS = 6

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_batch():
    if not all(any((Path("/usr/share/locale") / lang / "LC_MESSAGES").glob("*.mo")) for lang in LANGS):
        pytest.skip(f"no gettext catalogs for {LANGS}")
    corpus, _ = build_builtin_corpus(langs=LANGS)
    student, _ = make_student(corpus_training_texts(corpus), vocab_size=6000, seed=0)
    teacher = load_teacher()
    train = corpus["train"].shuffle(seed=0).select(range(BATCH))
    examples = [dict(row, index=i) for i, row in enumerate(train)]
    batch = MMKDCollator(student.tokenizer, teacher.tokenizer, max_length=40, seed=0)(examples)
    return student, batch, teacher.encode(batch["teacher_input_ids"], batch["teacher_attention_mask"])


def test_every_term_decreases(real_batch):
    student, batch, teacher_outputs = real_batch
    assert len(batch["match_x"]) > BATCH and (batch["tlm_labels"] != -100).any()
    loss_fn = MMKDLoss(struct_impl="chunked")

    def terms() -> dict[str, float]:
        student.eval()
        with torch.no_grad():
            return {name: float(value) for name, value in loss_fn(student, batch, teacher_outputs).terms.items()}

    before = terms()
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-5)
    torch.manual_seed(0)
    student.train()
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(student, batch, teacher_outputs).total.backward()
        optimizer.step()
    after = terms()
    assert set(before) == set(after) == set(TERMS)
    for name in TERMS:
        assert after[name] < before[name], f"{name} did not decrease: {before[name]:.4f} -> {after[name]:.4f}"

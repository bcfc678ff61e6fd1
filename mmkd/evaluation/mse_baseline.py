"""The peer MMKD must beat: sentence-transformers' multilingual distillation (Reimers & Gurevych, EMNLP
2020, "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation"), trained with
that library itself under a wall-clock budget.

The student's sentence embedding of the English sentence x and of its translation y are both regressed
onto the teacher's embedding of x: sentence-transformers' MSELoss over the columns (english,
translation) with the teacher's embedding as the label, its SentenceTransformerTrainer, AdamW. The
learning rate warms up linearly over `warmup_steps` optimizer steps and decays linearly to 0 at the
end of the time budget, the shape of the MMKD recipe's WarmupDecayLR with time as the horizon, so
that both end with a decayed schedule whatever the machine's speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mmkd.errors import MMKDError
from mmkd.models.sentence_transformer import read_model_kwargs, save_with_model_kwargs


@dataclass(frozen=True)
class MSEBaselineConfig:
    """The recipe's knobs: seconds of training loop, pairs per optimizer step, peak lr, warmup steps."""

    budget_seconds: float
    batch_size: int = 16
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    max_length: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.budget_seconds > 0 and self.batch_size >= 1 and self.learning_rate > 0
                and self.warmup_steps >= 1 and self.max_length >= 8):
            raise MMKDError(f"MSE baseline: bad settings {self}")


class TimeBudget:
    """Seconds since `start()`; `progress` = elapsed / budget, in [0, inf)."""

    def __init__(self, budget_seconds: float, clock=time.monotonic) -> None:
        self.budget_seconds, self.clock, self.started = budget_seconds, clock, None

    def start(self) -> None:
        self.started = self.clock()

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    @property
    def progress(self) -> float:
        return self.elapsed / self.budget_seconds


def lr_factor(step: int, warmup_steps: int, progress: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warmup over warmup_steps
    (step 0 already takes 1/warmup_steps, so the first step changes the weights), times a linear
    decay from 1 at time progress 0 to 0 at progress 1."""
    return min(1.0, (step + 1) / warmup_steps) * max(0.0, 1.0 - progress)


def train_mse_baseline(student_dir: str | Path, english: Sequence[str], translations: Sequence[str],
                       teacher_embeddings: Tensor, out_dir: str | Path, config: MSEBaselineConfig) -> dict:
    """Train the sentence-transformers model at `student_dir` on (english[i], translations[i]) -> the
    teacher's embedding of english[i] (teacher_embeddings (N, d_T)) for config.budget_seconds of
    training loop (or one pass over the N pairs, whichever ends first); save it to `out_dir`.

    Returns {"steps", "pairs", "seconds"}: optimizer steps, pairs seen, training-loop seconds.
    Raises MMKDError when the inputs disagree in length or are shorter than one batch.
    """
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MSELoss
    from transformers import TrainerCallback

    if not len(english) == len(translations) == len(teacher_embeddings) >= config.batch_size:
        raise MMKDError(f"MSE baseline: {len(english)} English, {len(translations)} translations and "
                        f"{len(teacher_embeddings)} teacher embeddings; need equal counts >= {config.batch_size}")
    model = SentenceTransformer(str(student_dir), device="cpu")
    model.max_seq_length = config.max_length
    dataset = Dataset.from_dict({"english": list(english), "translation": list(translations),
                                 "label": teacher_embeddings.float().tolist()})
    budget = TimeBudget(config.budget_seconds)

    class StopAtBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            budget.start()

        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = budget.progress >= 1.0

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.warmup_steps, budget.progress))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(out_dir) / "trainer"), per_device_train_batch_size=config.batch_size,
        num_train_epochs=1, dataloader_drop_last=True, save_strategy="no", report_to="none",
        logging_steps=max(1, math.ceil(len(dataset) / config.batch_size / 100)), seed=config.seed,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=MSELoss(model),
                                         optimizers=(optimizer, scheduler), callbacks=[StopAtBudget()])
    trainer.train()
    seconds = budget.elapsed
    save_with_model_kwargs(model, out_dir, read_model_kwargs(student_dir))
    steps = trainer.state.global_step
    return {"steps": steps, "pairs": steps * config.batch_size, "seconds": seconds}

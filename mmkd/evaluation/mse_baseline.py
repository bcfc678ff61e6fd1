"""The peer MMKD must beat: sentence-transformers' multilingual distillation (Reimers & Gurevych, EMNLP
2020, "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation"), trained with
that library itself under the same step and time budget as an MMKD run.

The student's sentence embedding of the English sentence x and of its translation y are both regressed
onto the teacher's embedding of x: sentence-transformers' MSELoss over the columns (english,
translation) with the teacher's embedding as the label, its SentenceTransformerTrainer, AdamW. The
learning rate follows the MMKD recipe's WarmupDecayLR (linear warmup over `warmup_steps` iterations,
linear decay to 0 at iteration `total_steps`) at the iteration mmkd.schedule.RunBudget gives MMKD's
training: total_steps x max(step / total_steps, elapsed / budget_seconds). Both runs therefore warm up
and decay over whichever budget runs out first, whatever the machine's speed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mmkd.errors import MMKDError
from mmkd.models.sentence_transformer import read_model_kwargs, save_with_model_kwargs
from mmkd.schedule import RunBudget


@dataclass(frozen=True)
class MSEBaselineConfig:
    """The run's budget (optimizer steps, seconds of training loop, 0 = no time bound, as
    mmkd.schedule.RunBudget), pairs per step, peak lr, warmup iterations, tokens per sentence, seed."""

    total_steps: int
    budget_seconds: float
    batch_size: int = 16
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    max_length: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.total_steps >= 1 and self.budget_seconds >= 0 and self.batch_size >= 1 and self.learning_rate > 0
                and 0 <= self.warmup_steps < self.total_steps and self.max_length >= 8):
            raise MMKDError(f"MSE baseline: bad settings {self}")


def warmup_decay(iteration: float, warmup_steps: int, total_steps: int) -> float:
    """DeepSpeed WarmupDecayLR's multiplier of the peak lr (warmup_type linear, warmup_min_lr 0) at
    `iteration`: iteration / warmup_steps during the warmup, then (total - iteration) / (total - warmup)."""
    if iteration < warmup_steps:
        return iteration / warmup_steps
    return max(0.0, (total_steps - iteration) / max(1.0, total_steps - warmup_steps))


def train_mse_baseline(student_dir: str | Path, english: Sequence[str], translations: Sequence[str],
                       teacher_embeddings: Tensor, out_dir: str | Path, config: MSEBaselineConfig) -> dict:
    """Train the sentence-transformers model at `student_dir` on (english[i], translations[i]) -> the
    teacher's embedding of english[i] (teacher_embeddings (N, d_E)) for config.total_steps optimizer
    steps or config.budget_seconds of training loop (or one pass over the N pairs), whichever ends
    first; save it to `out_dir`.

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
    budget = RunBudget(config.total_steps, config.budget_seconds)

    class StopAtBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            budget.started = budget.clock()  # the loop's time starts here, as MMKD's does

        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = (state.global_step >= config.total_steps
                                            or budget.time_up(budget.elapsed()))

    def lr_factor(done_steps: int) -> float:  # LambdaLR counts the optimizer steps done before this one
        iteration = budget.iteration(done_steps + 1, budget.elapsed())
        return warmup_decay(iteration, config.warmup_steps, config.total_steps)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, fused=True)  # Trainer's default
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(out_dir) / "trainer"), per_device_train_batch_size=config.batch_size,
        num_train_epochs=1, dataloader_drop_last=True, save_strategy="no", report_to="none",
        logging_steps=max(1, math.ceil(len(dataset) / config.batch_size / 100)), seed=config.seed,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=MSELoss(model),
                                         optimizers=(optimizer, scheduler), callbacks=[StopAtBudget()])
    trainer.train()
    seconds = budget.elapsed()
    save_with_model_kwargs(model, out_dir, read_model_kwargs(student_dir))
    steps = trainer.state.global_step
    return {"steps": steps, "pairs": steps * config.batch_size, "seconds": seconds}

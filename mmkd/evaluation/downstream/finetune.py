"""The shared core: fine-tune a model on a task's English training data, test it on every language.

One loop serves every task (AdamW, linear decay without warmup, gradient clipping at 1.0, as the
XTREME scripts); a task's `kind` only chooses the head (AutoModelForSequenceClassification or
AutoModelForQuestionAnswering), how examples become features and how predictions are scored.
On a GPU the forward passes run under autocast (`mixed_precision`: bf16 where the GPU has it, else
fp16 with dynamic loss scaling); on a CPU in fp32. A progress bar per epoch and per test language.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from mmkd.errors import MMKDError
from mmkd.evaluation.downstream.data import TaskData, load_task_data
from mmkd.evaluation.downstream.qa_processing import best_answers, qa_eval_features, qa_train_features
from mmkd.evaluation.downstream.squad_metric import squad_scores
from mmkd.evaluation.downstream.tasks import TaskSpec, task_languages
from mmkd.models.model_files import model_dir

MAX_GRAD_NORM = 1.0


@dataclass
class RunOptions:
    """What a run may change besides the task's settings."""

    epochs: int | None = None  # None: the task's
    languages: list[str] | None = None  # None: all of the task's
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    seed: int = 42
    data_dir: Path | None = None  # None: the `datasets` hub


def evaluate_task(task: TaskSpec, model_path: str | Path, options: RunOptions, data: TaskData | None = None) -> dict:
    """Fine-tune `model_path` on `task`'s English data, test it zero-shot on each language; the
    results dict: per-language metrics (percent) and example counts, their average, the settings.
    `data`: the task's examples when they are built at run time (the catalog task); None = load them."""
    languages = task_languages(task, options.languages)
    epochs = task.epochs if options.epochs is None else options.epochs
    if epochs < 1:
        raise MMKDError(f"--epochs must be at least 1, not {epochs}")
    if data is None:
        data = load_task_data(task, languages, options.data_dir, options.max_train_examples,
                              options.max_eval_examples)
    if not data.train:
        raise MMKDError(f"{task.name}: no training examples")
    model, tokenizer = load_model(task, model_path, options.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    train_loss = finetune(model, tokenizer, train_features(task, tokenizer, data), task, epochs, options.seed, device)
    per_language = {lang: test_language(task, model, tokenizer, data, lang, device) for lang in languages}
    average = {metric: sum(scores[metric] for scores in per_language.values()) / len(per_language)
               for metric in task.metrics}
    return {"task": task.name, "model": str(model_path), "languages": per_language, "average": average,
            "train_examples": len(data.train), "train_loss": train_loss,
            "settings": {**asdict(task), "epochs": epochs, "seed": options.seed,
                         "max_train_examples": options.max_train_examples,
                         "max_eval_examples": options.max_eval_examples,
                         "data": str(options.data_dir) if options.data_dir else "hub"}}


def load_model(task: TaskSpec, model_path: str | Path, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The encoder at `model_path` (an exported student or any HF model) with a fresh task head."""
    directory = model_dir(model_path, "model")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if task.kind == "qa" and not tokenizer.is_fast:
        raise MMKDError(f"model {directory}: question answering needs a fast tokenizer (tokenizer.json) for offsets")
    torch.manual_seed(seed)  # the new head's initialisation
    try:
        if task.kind == "qa":
            model = AutoModelForQuestionAnswering.from_pretrained(directory)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=task.num_labels)
    except ValueError as err:  # a config type without a head of this kind
        raise MMKDError(f"model {directory}: no {task.kind} model for this config: {err}") from err
    return model, tokenizer


def classification_features(tokenizer: PreTrainedTokenizerBase, examples: list[dict], max_length: int,
                            with_labels: bool) -> list[dict]:
    pairs = [e["text_b"] for e in examples] if any(e["text_b"] is not None for e in examples) else None
    encoding = tokenizer([e["text_a"] for e in examples], pairs, truncation=True, max_length=max_length)
    features = [{key: encoding[key][i] for key in encoding} for i in range(len(examples))]
    if with_labels:
        for feature, example in zip(features, examples):
            feature["labels"] = example["label"]
    return features


def train_features(task: TaskSpec, tokenizer: PreTrainedTokenizerBase, data: TaskData) -> list[dict]:
    if task.kind == "qa":
        return qa_train_features(tokenizer, data.train, task.max_length, task.doc_stride)
    return classification_features(tokenizer, data.train, task.max_length, with_labels=True)


def mixed_precision(device: torch.device) -> torch.dtype | None:
    """Autocast dtype of the forward passes: bf16 on a GPU that supports it, else fp16 on a GPU; None
    (fp32) on any other device."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def finetune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, features: list[dict], task: TaskSpec,
             epochs: int, seed: int, device: torch.device) -> float:
    """Train on `features` (shuffled with `seed`) under `mixed_precision(device)` (fp16 with a dynamic
    loss scale); returns the mean loss of the last epoch."""
    loader = DataLoader(features, batch_size=task.batch_size, shuffle=True,
                        collate_fn=DataCollatorWithPadding(tokenizer), generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.learning_rate, eps=1e-8, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, epochs * len(loader))
    dtype = mixed_precision(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        bar = tqdm(loader, desc=f"{task.name} epoch {epoch + 1}/{epochs}", unit="batch", file=sys.stderr,
                   dynamic_ncols=True)
        for count, batch in enumerate(bar, start=1):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model(**batch.to(device)).loss
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total += loss.item()
            bar.set_postfix(mean_loss=f"{total / count:.4f}")
    model.eval()
    return total / len(loader)


@torch.no_grad()
def predict(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, features: list[dict], batch_size: int,
            outputs: tuple[str, ...], device: torch.device, desc: str) -> dict[str, list[Tensor]]:
    """Each output named in `outputs`, one float CPU row per feature (padding positions included), under
    `mixed_precision(device)`; a progress bar titled `desc`."""
    rows: dict[str, list[Tensor]] = {name: [] for name in outputs}
    dtype = mixed_precision(device)
    loader = DataLoader(features, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer))
    for batch in tqdm(loader, desc=desc, unit="batch", file=sys.stderr, dynamic_ncols=True, leave=False):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            result = model(**batch.to(device))
        for name in outputs:
            rows[name].extend(result[name].float().cpu())
    return rows


def test_language(task: TaskSpec, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: TaskData,
                  lang: str, device: torch.device) -> dict[str, float]:
    """The task's metrics (percent) on `lang`'s test examples, and their number."""
    examples = data.test[lang]
    if not examples:
        raise MMKDError(f"{task.name}: no test examples for {lang}")
    if task.kind == "qa":
        features, example_of, offsets = qa_eval_features(tokenizer, examples, task.max_length, task.doc_stride)
        logits = predict(model, tokenizer, features, task.batch_size, ("start_logits", "end_logits"), device,
                         f"{task.name} {lang}")
        predictions = best_answers(examples, example_of, offsets, logits["start_logits"], logits["end_logits"])
        scores = squad_scores(predictions, {e["id"]: e["answers"]["text"] for e in examples})
    else:
        features = classification_features(tokenizer, examples, task.max_length, with_labels=False)
        logits = predict(model, tokenizer, features, task.batch_size, ("logits",), device,
                         f"{task.name} {lang}")["logits"]
        correct = sum(int(row.argmax()) == example["label"] for row, example in zip(logits, examples))
        scores = {"accuracy": 100.0 * correct / len(examples)}
    print(f"{task.name} {lang}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()), file=sys.stderr, flush=True)
    return {**scores, "examples": len(examples)}

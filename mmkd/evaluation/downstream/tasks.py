"""The downstream tasks as data: one row of settings per task (XTREME's hyper-parameters)."""

from __future__ import annotations

from dataclasses import dataclass

from mmkd.errors import MMKDError


@dataclass(frozen=True)
class TaskSpec:
    """Settings of one task; `kind` picks the head and metric: "classification" (accuracy) or "qa"
    (SQuAD F1 / exact match, with `doc_stride` windows over long contexts)."""

    name: str
    kind: str
    languages: tuple[str, ...]
    learning_rate: float
    max_length: int
    batch_size: int
    epochs: int
    num_labels: int = 0
    doc_stride: int = 0

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("accuracy",) if self.kind == "classification" else ("f1", "exact_match")


TASKS = {
    "xnli": TaskSpec("xnli", "classification",
                     ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"),
                     learning_rate=2e-5, max_length=128, batch_size=32, epochs=2, num_labels=3),
    "pawsx": TaskSpec("pawsx", "classification", ("de", "en", "es", "fr", "ja", "ko", "zh"),
                      learning_rate=2e-5, max_length=128, batch_size=32, epochs=2, num_labels=2),
    "xquad": TaskSpec("xquad", "qa", ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"),
                      learning_rate=3e-5, max_length=384, batch_size=32, epochs=2, doc_stride=128),
}


def task_languages(task: TaskSpec, requested: list[str] | None) -> tuple[str, ...]:
    """The test languages: `requested` (each checked against the task's), or all of the task's."""
    if not requested:
        return task.languages
    unknown = [lang for lang in requested if lang not in task.languages]
    if unknown:
        raise MMKDError(f"{task.name} has no language {', '.join(unknown)}; it has {' '.join(task.languages)}")
    return tuple(dict.fromkeys(requested))

"""Downstream data: English training examples and per-language test examples, from the `datasets`
hub (the names XTREME uses) or from the official files in a local directory.

Examples are plain dicts. Classification: {"text_a", "text_b", "label"}; question answering (SQuAD
layout): {"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}.

Local layout (`--data-dir DIR`, the official archives unpacked into DIR):
  xnli   DIR/multinli_1.0/multinli_1.0_train.txt (MultiNLI 1.0), DIR/XNLI-1.0/xnli.test.tsv (XNLI 1.0)
  pawsx  DIR/x-final/en/train.tsv, DIR/x-final/<lang>/test_2k.tsv (PAWS-X x-final)
  xquad  DIR/train-v1.1.json (SQuAD v1.1), DIR/xquad.<lang>.json (XQuAD)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mmkd.errors import MMKDError
from mmkd.evaluation.downstream.tasks import TaskSpec

NLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}  # the hub's xnli label ids
NO_GOLD_LABEL = "-"  # MultiNLI/XNLI: annotators reached no consensus; such rows are skipped
HUB_NAMES = {"xnli": "xnli (configs en, <lang>)", "pawsx": "paws-x (configs en, <lang>)",
             "xquad": "squad and xquad (configs xquad.<lang>)"}


@dataclass
class TaskData:
    """English training examples and test examples by language."""

    train: list[dict]
    test: dict[str, list[dict]]


def local_files(task: TaskSpec, languages: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Relative paths of the training file and of each language's test file."""
    if task.name == "xnli":
        return "multinli_1.0/multinli_1.0_train.txt", {lang: "XNLI-1.0/xnli.test.tsv" for lang in languages}
    if task.name == "pawsx":
        return "x-final/en/train.tsv", {lang: f"x-final/{lang}/test_2k.tsv" for lang in languages}
    return "train-v1.1.json", {lang: f"xquad.{lang}.json" for lang in languages}


def expected_data_message(task: TaskSpec, languages: tuple[str, ...], data_dir: Path | str) -> str:
    """What to provide: the hub datasets, or the files under `data_dir`."""
    train, test = local_files(task, languages)
    files = ", ".join(str(Path(data_dir) / name) for name in dict.fromkeys([train, *test.values()]))
    return (f"{task.name} needs the hub datasets {HUB_NAMES[task.name]} (not reachable) or, with --data-dir DIR, "
            f"the official files: {files}")


def load_task_data(task: TaskSpec, languages: tuple[str, ...], data_dir: Path | None = None,
                   max_train: int | None = None, max_eval: int | None = None) -> TaskData:
    """Training and test examples of `task` from `data_dir`, or from the hub when it is None; at most
    `max_train` training and `max_eval` test examples per language (the first ones)."""
    if data_dir is None:
        return load_from_hub(task, languages, max_train, max_eval)
    train_name, test_names = local_files(task, languages)
    missing = [name for name in dict.fromkeys([train_name, *test_names.values()]) if not (data_dir / name).is_file()]
    if missing:
        raise MMKDError(f"{data_dir}: missing {', '.join(missing)}; "
                        + expected_data_message(task, languages, data_dir))
    if task.kind == "qa":
        return TaskData(read_squad_json(data_dir / train_name, max_train),
                        {lang: read_squad_json(data_dir / name, max_eval) for lang, name in test_names.items()})
    if task.name == "xnli":
        return TaskData(read_nli_tsv(data_dir / train_name, None, max_train),
                        {lang: read_nli_tsv(data_dir / name, lang, max_eval) for lang, name in test_names.items()})
    return TaskData(read_pawsx_tsv(data_dir / train_name, max_train),
                    {lang: read_pawsx_tsv(data_dir / name, max_eval) for lang, name in test_names.items()})


def load_from_hub(task: TaskSpec, languages: tuple[str, ...], max_train: int | None,
                  max_eval: int | None) -> TaskData:
    """The XTREME hub datasets: train on the English training split, test on each language's test
    split (XQuAD has only `validation`)."""
    import datasets

    def rows(name: str, config: str | None, split: str, limit: int | None) -> list[dict]:
        try:
            return list(datasets.load_dataset(name, config, split=split if limit is None else f"{split}[:{limit}]"))
        except Exception as err:  # offline, unknown name, network: every failure means "not available"
            raise MMKDError(f"{expected_data_message(task, languages, 'DIR')} ({name}: {err})") from err

    if task.kind == "qa":
        return TaskData(rows("squad", None, "train", max_train),
                        {lang: rows("xquad", f"xquad.{lang}", "validation", max_eval) for lang in languages})
    name, first, second = (("xnli", "premise", "hypothesis") if task.name == "xnli"
                           else ("paws-x", "sentence1", "sentence2"))

    def pairs(config: str, split: str, limit: int | None) -> list[dict]:
        return [{"text_a": row[first], "text_b": row[second], "label": int(row["label"])}
                for row in rows(name, config, split, limit)]

    return TaskData(pairs("en", "train", max_train), {lang: pairs(lang, "test", max_eval) for lang in languages})


def read_tsv(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a tab-separated file with a header naming at least `columns`; no quoting
    (the official files hold bare quote characters)."""
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        absent = [column for column in columns if column not in header]
        if absent:
            raise MMKDError(f"{path}:1: header has no column {', '.join(absent)} (it has {' '.join(header)})")
        for number, line in enumerate(handle, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise MMKDError(f"{path}:{number}: {len(fields)} tab-separated fields, the header has {len(header)}")
            yield number, dict(zip(header, fields))


def read_rows(path: Path, columns: tuple[str, ...], convert: Callable[[int, dict[str, str]], dict | None],
              limit: int | None) -> list[dict]:
    """The examples `convert` makes of the rows of a TSV file (None: row skipped), at most `limit`."""
    examples = []
    for number, row in read_tsv(path, columns):
        if limit is not None and len(examples) >= limit:
            break
        example = convert(number, row)
        if example is not None:
            examples.append(example)
    return examples


def read_nli_tsv(path: Path, language: str | None, limit: int | None) -> list[dict]:
    """MultiNLI (`language` None) or XNLI rows of `language`: sentence1, sentence2, gold_label."""
    columns = ("gold_label", "sentence1", "sentence2") + (("language",) if language else ())

    def convert(number: int, row: dict[str, str]) -> dict | None:
        if (language and row["language"] != language) or row["gold_label"] == NO_GOLD_LABEL:
            return None
        if row["gold_label"] not in NLI_LABELS:
            raise MMKDError(f"{path}:{number}: gold_label {row['gold_label']!r} is not one of {', '.join(NLI_LABELS)}")
        return {"text_a": row["sentence1"], "text_b": row["sentence2"], "label": NLI_LABELS[row["gold_label"]]}

    return read_rows(path, columns, convert, limit)


def read_pawsx_tsv(path: Path, limit: int | None) -> list[dict]:
    """PAWS-X rows: id, sentence1, sentence2, label (0 or 1)."""
    def convert(number: int, row: dict[str, str]) -> dict:
        if row["label"] not in ("0", "1"):
            raise MMKDError(f"{path}:{number}: label {row['label']!r} is not 0 or 1")
        return {"text_a": row["sentence1"], "text_b": row["sentence2"], "label": int(row["label"])}

    return read_rows(path, ("sentence1", "sentence2", "label"), convert, limit)


def read_squad_json(path: Path, limit: int | None) -> list[dict]:
    """Questions of a SQuAD v1.1-format file: data[].paragraphs[].{context, qas[].{id, question, answers}}."""
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    except json.JSONDecodeError as err:
        raise MMKDError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from err
    except (KeyError, TypeError) as err:
        raise MMKDError(f"{path}: no top-level 'data' list (SQuAD v1.1 format)") from err
    examples = []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(paragraph.get("qas", [])):
                if limit is not None and len(examples) >= limit:
                    return examples
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                try:
                    answers = qa["answers"]
                    examples.append({"id": str(qa["id"]), "question": qa["question"], "context": paragraph["context"],
                                     "answers": {"text": [answer["text"] for answer in answers],
                                                 "answer_start": [int(answer["answer_start"]) for answer in answers]}})
                except (KeyError, TypeError, ValueError) as err:
                    raise MMKDError(f"{path}: {where}: not a SQuAD question ({type(err).__name__}: {err})") from err
                if not answers:
                    raise MMKDError(f"{path}: {where}: no answers")
    return examples

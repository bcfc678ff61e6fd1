"""Translation retrieval: can a model find a sentence's translation among a pool of candidates?

Per language, a pool of pairs (x English, y translation) of a held-out split: the first `pool` pairs
of that language in a seeded shuffle (all of them when it has fewer; a pair whose x or y is already
in the pool is skipped, since a duplicate candidate makes top-1 ill-defined). Reported per language
and model:
  x2y   top-1 accuracy of x_i -> y_i: y_i is strictly the most cosine-similar of the pool's y to x_i
        (a tie with another candidate counts as a miss); y2x the same the other way;
  mse   mean over pairs and d_E of (model(y) - teacher(x))^2: the distance to SentA's target (None
        for a model outside the teacher's space: any other model);
  mse_x the same of model(x): how far the English side has moved from the teacher's embedding
        (SentA's other term; 0 for the teacher);
  pool  the pool size actually used.
Languages are grouped by their TRAIN pair count: low-resource below a threshold, else high-resource;
each group gets the mean of its languages' figures.

Embeddings (an Encoder maps N texts to (N, d_E) float32 on the CPU, batched, under no_grad):
  teacher   the teacher's sentence embedding (its own pooling and normalisation), on both sides;
  student   P_s(mean_pool(last hidden states)), normalised when the teacher's embedding is: the
            projection into the teacher's space that SentA trains (so the MSE to the teacher is
            meaningful), and exactly what the export's sentence-transformers model computes;
  any other model (a sentence-transformers or Hugging Face path or hub name: LaBSE, a
            paraphrase-multilingual model, another student) its `SentenceTransformer.encode` (its own
            pipeline, prompt and max_seq_length; a plain HF encoder is mean-pooled).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from mmkd.corpus.schema import SPLITS, column, language_counts, load_corpus
from mmkd.data.tokenization import encode_texts
from mmkd.errors import MMKDError
from mmkd.models.model_files import model_dir
from mmkd.models.student import STUDENT_FILE, MMKDStudent, load_student
from mmkd.models.teacher import Teacher, load_teacher, sentence_pipeline

if TYPE_CHECKING:
    from datasets import Dataset

Encoder = Callable[[Sequence[str]], Tensor]  # N texts -> (N, d_E) float32, CPU
TEACHER = "teacher"  # the model name that selects the teacher (on both sides)
DIRECTIONS = ("x2y", "y2x")
GROUPS = ("high", "low")
MEAN_GROUPS = ("all", *GROUPS)  # direction_means: every language, then each group
LOW_RESOURCE_BELOW = 10_000  # train pairs: a language with fewer is low-resource
DEV_RETRIEVAL_POOL = 200  # pool per language of the retrieval logged at training's dev evaluations
REPORT_FILES = {"json": "retrieval.json", "markdown": "retrieval.md", "png": "retrieval.png"}


# ---- the metrics ----
def top1_accuracy(queries: Tensor, candidates: Tensor) -> float:
    """Fraction of rows i of queries (N, d) whose candidate i (candidates (N, d)) is strictly the most
    cosine-similar to it; a tie with another candidate counts as a miss. In [0, 1]."""
    if queries.shape != candidates.shape or queries.dim() != 2 or len(queries) == 0:
        raise ValueError(f"top1_accuracy: expected two equal (N, d) tensors with N > 0, got "
                         f"{tuple(queries.shape)} and {tuple(candidates.shape)}")
    sims = F.normalize(queries.double(), dim=-1) @ F.normalize(candidates.double(), dim=-1).T
    others = sims.masked_fill(torch.eye(len(sims), dtype=torch.bool), float("-inf")).max(dim=1).values
    return float((sims.diagonal() > others).double().mean())


def retrieval_scores(x: Tensor, y: Tensor) -> dict[str, float]:
    """{"x2y": top-1 of x_i -> y_i, "y2x": top-1 of y_i -> x_i} for aligned x, y (N, d)."""
    return {"x2y": top1_accuracy(x, y), "y2x": top1_accuracy(y, x)}


def mean_squared_distance(embeddings: Tensor, targets: Tensor) -> float:
    """Mean over rows and dimensions of (embeddings - targets)^2, both (N, d_E) (SentA's MSE)."""
    return float(F.mse_loss(embeddings.double(), targets.double()))


def pool_rows(langs: Sequence[str], texts: Sequence[tuple[str, str]], pool: int, seed: int) -> dict[str, list[int]]:
    """Per language (sorted), its first `pool` rows in a `seed`-shuffle of all rows, skipping a row whose
    x or y (texts[row] = (x, y)) is already in that language's pool."""
    order = list(range(len(langs)))
    random.Random(seed).shuffle(order)
    rows: dict[str, list[int]] = {lang: [] for lang in sorted(set(langs))}
    seen: dict[str, set[str]] = {lang: set() for lang in rows}
    for row in order:
        lang, (x, y) = langs[row], texts[row]
        if len(rows[lang]) < pool and x not in seen[lang] and y not in seen[lang]:
            rows[lang].append(row)
            seen[lang].update((x, y))
    return rows


def group_languages(train_pairs: Mapping[str, int], languages: Sequence[str], below: int) -> dict[str, list[str]]:
    """{"high": [...], "low": [...]}: a language with fewer than `below` train pairs is low-resource."""
    low = [lang for lang in languages if train_pairs.get(lang, 0) < below]
    return {"high": [lang for lang in languages if lang not in low], "low": low}


def group_means(per_language: Mapping[str, Mapping[str, Mapping[str, float | None]]],
                groups: Mapping[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Mean of each model's figures over each group's languages; per_language[lang][model][metric]
    (a metric that is None, the MSE of a model outside the teacher's space, stays None)."""
    def mean(values: list[float | None]) -> float | None:
        return None if None in values else sum(values) / len(values)

    means = {}
    for group, langs in groups.items():
        models = per_language[langs[0]].keys() if langs else ()
        means[group] = {"languages": list(langs), "models": {
            model: {metric: mean([per_language[lang][model][metric] for lang in langs])
                    for metric in per_language[langs[0]][model]} for model in models}}
    return means


# ---- encoders ----
def batched(encode_batch: Callable[[list[str]], Tensor], texts: Sequence[str], batch_size: int,
            progress: str | None = None) -> Tensor:
    """encode_batch over `texts` in batches of similar length (less padding), under no_grad, returned in
    the order of `texts` as (N, d) float32 on the CPU; `progress` titles a progress bar (None: none)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    starts = tqdm(range(0, len(order), batch_size), desc=progress, unit="batch", disable=progress is None,
                  leave=False, dynamic_ncols=True)
    with torch.no_grad():
        chunks = [encode_batch([texts[i] for i in order[start:start + batch_size]]).float().cpu()
                  for start in starts]
    embeddings = torch.cat(chunks)
    result = torch.empty_like(embeddings)
    result[torch.tensor(order)] = embeddings
    return result


def teacher_encoder(teacher: Teacher, max_length: int, batch_size: int, device: torch.device,
                    progress: str | None = None) -> Encoder:
    """The teacher's sentence embeddings (B, d_E) (Teacher.encode), the teacher moved to `device`;
    `progress` titles a progress bar per call (as in `batched`)."""
    teacher.model.to(device)

    def encode(texts: list[str]) -> Tensor:
        encoded = encode_texts(teacher.tokenizer, texts, max_length=max_length)
        return teacher.encode(encoded["input_ids"].to(device), encoded["attention_mask"].to(device),
                              texts).sentence_embedding

    return lambda texts: batched(encode, texts, batch_size, progress)


def student_encoder(student: MMKDStudent, max_length: int, batch_size: int, device: torch.device,
                    normalize: bool = False, progress: str | None = None) -> Encoder:
    """The student's sentence embedding (B, d_E), P_s(mean_pool(last hidden)), unit length when `normalize`
    (as the teacher's is): what the export's sentence-transformers model computes. The student is
    already on `device`; eval mode while encoding; `progress` titles a progress bar (as in `batched`)."""

    def encode(texts: list[str]) -> Tensor:
        encoded = encode_texts(student.tokenizer, texts, max_length=max_length)
        return student.sentence_embedding(encoded["input_ids"].to(device), encoded["attention_mask"].to(device),
                                          normalize)

    def encode_all(texts: Sequence[str]) -> Tensor:
        with student.evaluating():
            return batched(encode, texts, batch_size, progress)

    return encode_all


def parse_models(text: str) -> dict[str, str]:
    """`teacher,before=runs/s,runs/t/export/hf` -> {label: model}; a label defaults to the model itself."""
    models: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        label, sep, model = item.partition("=")
        label, model = (label, model) if sep else (item, item)
        if not label or not model or label in models:
            raise MMKDError(f"--models {text!r}: {item!r} is empty or a repeated label (use label=path)")
        models[label] = model
    if not models:
        raise MMKDError("--models: give at least one model (teacher, a student directory or a training export)")
    return models


def is_student(model: str) -> bool:
    """True for an MMKD student directory (`mmkd init-student` output or a training run's export/hf)."""
    return (Path(model) / STUDENT_FILE).is_file()


def load_student_encoder(model: str, teacher: Teacher, max_length: int, batch_size: int, device: torch.device,
                         progress: str | None = None) -> Encoder:
    """The encoder of a student directory (`is_student`)."""
    student = load_student(Path(model), teacher_hidden_size=teacher.hidden_size,
                           teacher_sentence_size=teacher.sentence_size).to(device)
    return student_encoder(student, max_length, batch_size, device, normalize=teacher.normalize, progress=progress)


def sentence_transformer_encoder(model: str, batch_size: int, device: torch.device,
                                 progress: str | None = None) -> Encoder:
    """`SentenceTransformer.encode` of any model path or hub name (its own pipeline, default prompt and
    max_seq_length; a plain Hugging Face encoder is mean-pooled). MMKDError when it cannot be loaded."""
    pipeline = sentence_pipeline(model_dir(model, "model"), role="model").to(device)

    def encode(texts: list[str]) -> Tensor:  # encode runs under inference_mode: clone into a normal tensor
        return pipeline.encode(texts, batch_size=len(texts), convert_to_tensor=True, show_progress_bar=False).clone()

    return lambda texts: batched(encode, texts, batch_size, progress)


# ---- the evaluation ----
def evaluate_split(split: Dataset, encoders: Mapping[str, Encoder], teacher_encode: Encoder | None, pool: int,
                   seed: int, other_space: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """{lang: {"pool": n, "models": {label: {"x2y", "y2x"[, "mse", "mse_x"]}}}} on a corpus split (Dataset).

    Each distinct x is encoded once per model. "mse" (of y) and "mse_x" (of x), both to teacher(x), only
    with a teacher_encode; None for the labels in `other_space` (models that do not embed into the
    teacher's space).
    """
    texts = list(zip(column(split, "src"), column(split, "tgt")))
    rows = pool_rows(column(split, "lang"), texts, pool, seed)
    chosen = [row for lang_rows in rows.values() for row in lang_rows]
    distinct_x = list(dict.fromkeys(texts[row][0] for row in chosen))
    x_index = {x: i for i, x in enumerate(distinct_x)}
    teacher_x = None if teacher_encode is None else teacher_encode(distinct_x)
    results: dict[str, dict[str, Any]] = {lang: {"pool": len(r), "models": {}} for lang, r in rows.items()}
    for label, encode in encoders.items():
        all_x = teacher_x if encode is teacher_encode else encode(distinct_x)
        all_y = encode([texts[row][1] for row in chosen])
        start = 0
        for lang, lang_rows in rows.items():
            x_rows = torch.tensor([x_index[texts[row][0]] for row in lang_rows])
            y = all_y[start:start + len(lang_rows)]
            start += len(lang_rows)
            scores = retrieval_scores(all_x[x_rows], y)
            if teacher_x is not None:
                foreign = label in other_space
                scores["mse"] = None if foreign else mean_squared_distance(y, teacher_x[x_rows])
                scores["mse_x"] = None if foreign else mean_squared_distance(all_x[x_rows], teacher_x[x_rows])
            results[lang]["models"][label] = scores
    return results


def evaluate_retrieval(corpus: str | Path, models: Mapping[str, str], *, split: str = "test",
                       teacher: str | None = None, pool: int = 1000, seed: int = 0, batch_size: int = 64,
                       max_length: int, low_resource_below: int = LOW_RESOURCE_BELOW,
                       device: str | None = None, out_of_domain: str | None = None,
                       progress: bool = False) -> dict[str, Any]:
    """The retrieval report of `models` ({label: "teacher" | student directory | any sentence-transformers
    or Hugging Face path or hub name}) on a corpus split, or, with `out_of_domain` (a source of
    mmkd.evaluation.out_of_domain), on that source's pairs whose English is in no split of the corpus;
    languages are grouped by the corpus's train pairs either way. Every sentence is cut at `max_length`
    tokens (the max_length the students trained with). `progress` shows a bar per model and side."""
    if split not in SPLITS:
        raise MMKDError(f"{corpus}: no split {split!r} (a corpus has {', '.join(SPLITS)})")
    if pool < 1:
        raise MMKDError(f"--pool {pool}: must be at least 1")
    dsd = load_corpus(corpus)
    train_pairs = {lang: row["train"] for lang, row in language_counts(dsd).items()}
    source_report = None
    if out_of_domain is not None:
        from mmkd.evaluation.out_of_domain import build_out_of_domain

        langs = [lang for lang, count in train_pairs.items() if count > 0]
        ood, source_report = build_out_of_domain(out_of_domain, langs, dsd)
        dsd, split = ood, "test"
    if len(dsd[split]) == 0:
        raise MMKDError(f"{out_of_domain or corpus}: split {split!r} is empty")
    run_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    the_teacher = load_teacher(teacher)

    def title(label: str) -> str | None:
        return f"retrieval: {label}" if progress else None

    teacher_encode = teacher_encoder(the_teacher, max_length, batch_size, run_device, title(TEACHER))
    encoders = {label: teacher_encode if model == TEACHER else
                load_student_encoder(model, the_teacher, max_length, batch_size, run_device, title(label))
                if is_student(model) else sentence_transformer_encoder(model, batch_size, run_device, title(label))
                for label, model in models.items()}
    other_space = [label for label, model in models.items() if model != TEACHER and not is_student(model)]
    per_language = evaluate_split(dsd[split], encoders, teacher_encode, pool, seed, other_space)
    groups = group_languages(train_pairs, list(per_language), low_resource_below)
    languages = {lang: {**result, "train_pairs": train_pairs.get(lang, 0),
                        "group": "low" if lang in groups["low"] else "high"}
                 for lang, result in per_language.items()}
    return {"corpus": str(corpus), "split": split if out_of_domain is None else "out-of-domain",
            "out_of_domain": source_report, "pool": pool, "seed": seed, "max_length": max_length,
            "teacher": the_teacher.name, "models": dict(models), "low_resource_below": low_resource_below,
            "languages": languages,
            "groups": group_means({lang: r["models"] for lang, r in per_language.items()}, groups)}


def dev_retrieval(student: MMKDStudent, split: Dataset, pool: int, seed: int, max_length: int, batch_size: int,
                  device: torch.device) -> dict[str, float]:
    """{"retrieval/<lang>/x2y": ..., "retrieval/<lang>/y2x": ..., "retrieval/mean": their mean (the one
    figure to choose checkpoints by)} of a student on a split (training's dev evaluation: no teacher, so
    no MSE). Under ZeRO-3 every rank must call it."""
    per_language = evaluate_split(split, {"student": student_encoder(student, max_length, batch_size, device)},
                                  None, pool, seed)
    scores = {f"retrieval/{lang}/{direction}": result["models"]["student"][direction]
              for lang, result in per_language.items() for direction in DIRECTIONS}
    return {**scores, "retrieval/mean": sum(scores.values()) / max(len(scores), 1)}


# ---- the outputs ----
def percent(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown_table(report: Mapping[str, Any]) -> str:
    """Per language (and group means): train pairs, pool, and per model x->y, y->x top-1 (%) and the
    MSE of y and of x to the teacher's x."""
    labels = list(report["models"])
    header = ["lang", "train pairs", "pool"] + [f"{label} {name}" for label in labels
                                                for name in ("x→y %", "y→x %", "MSE y", "MSE x")]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

    def mse(value: float | None) -> str:
        return "–" if value is None else f"{value:.4g}"

    def cells(models: Mapping[str, Mapping[str, float]]) -> list[str]:
        return [cell for label in labels for cell in (percent(models[label]["x2y"]), percent(models[label]["y2x"]),
                                                      mse(models[label]["mse"]), mse(models[label].get("mse_x")))]

    for lang, result in report["languages"].items():
        lines.append("| " + " | ".join([lang, str(result["train_pairs"]), str(result["pool"]),
                                        *cells(result["models"])]) + " |")
    below = report["low_resource_below"]
    for group, title in (("high", f"high-resource mean (≥ {below} train pairs)"),
                         ("low", f"low-resource mean (< {below} train pairs)")):
        means = report["groups"][group]
        if means["languages"]:
            lines.append("| " + " | ".join([f"{title}: {', '.join(means['languages'])}", "", "",
                                            *cells(means["models"])]) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(report: Mapping[str, Any], path: str | Path) -> Path:
    """PNG: per language and group mean, one bar per model, x->y and y->x top-1 (%) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["models"])
    columns = {lang: result["models"] for lang, result in report["languages"].items()}
    columns.update({f"{group} mean": means["models"] for group, means in report["groups"].items()
                    if means["languages"]})
    names = list(columns)
    width = 0.8 / len(labels)
    figure, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.2 * len(names)) * 2, 4.5), sharey=True)
    for axis, direction, title in zip(axes, DIRECTIONS, ("x → y (English → translation)",
                                                         "y → x (translation → English)")):
        for i, label in enumerate(labels):
            axis.bar([j + (i - (len(labels) - 1) / 2) * width for j in range(len(names))],
                     [100 * columns[name][label][direction] for name in names], width, label=label)
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
        axis.set_title(f"top-1 retrieval, {title}")
        axis.set_ylim(0, 100)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"accuracy % (pool ≤ {report['pool']}, split {report['split']})")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def write_report(report: Mapping[str, Any], out: str | Path) -> dict[str, Path]:
    """Write retrieval.json, retrieval.md and retrieval.png into `out`; returns {kind: path}."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {kind: directory / name for kind, name in REPORT_FILES.items()}
    paths["markdown"].write_text(markdown_table(report), encoding="utf-8")
    bar_chart(report, paths["png"])
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")  # last: done
    return paths


def read_report(path: str | Path) -> dict[str, Any]:
    """A retrieval.json (a file, or the directory holding it)."""
    file = Path(path)
    file = file / REPORT_FILES["json"] if file.is_dir() else file
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise MMKDError(f"{file}: cannot read a retrieval report: {err}") from err


def direction_means(report: Mapping[str, Any], model: str) -> dict[str, dict[str, float]]:
    """{"all" | "high" | "low": {"x2y" | "y2x": top-1 %}}: `model`'s means over every language of a
    retrieval report and over each group's (a group without a language is left out)."""
    langs = report["languages"]
    groups = {"all": list(langs), **{g: [lang for lang in langs if langs[lang]["group"] == g] for g in GROUPS}}
    return {group: {d: 100 * sum(langs[lang]["models"][model][d] for lang in members) / len(members)
                    for d in DIRECTIONS} for group, members in groups.items() if members}


def means_cell(figures: Mapping[str, float] | None) -> str:
    """"x->y / y->x" of {"x2y": %, "y2x": %}, one decimal; "" for none."""
    return "" if not figures else f"{figures['x2y']:.1f} / {figures['y2x']:.1f}"


def comparison_table(reports: Mapping[str, Mapping[str, Any]], model: str | None = None) -> str:
    """Markdown: one row per named report (e.g. an ablation config), columns per language x->y / y->x
    top-1 (%) and the mean over all languages and the high-/low-resource means, for model `model`
    (default: each report's last model)."""
    first = next(iter(reports.values()))
    langs = list(first["languages"])
    header = ["config"] + [f"{lang} {arrow}" for lang in langs for arrow in ("x→y", "y→x")]
    header += [f"{group} mean {arrow}" for group in MEAN_GROUPS for arrow in ("x→y", "y→x")]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, report in reports.items():
        label = model or list(report["models"])[-1]
        if label not in report["models"] or list(report["languages"]) != langs:
            raise MMKDError(f"report {name}: no model {label!r}, or other languages than {langs}")
        figures = [{d: 100 * report["languages"][lang]["models"][label][d] for d in DIRECTIONS} for lang in langs]
        means = direction_means(report, label)
        figures += [means.get(group, {}) for group in MEAN_GROUPS]
        lines.append("| " + " | ".join([name] + [f"{f[d]:.1f}" if d in f else "" for f in figures
                                                 for d in DIRECTIONS]) + " |")
    return "\n".join(lines) + "\n"

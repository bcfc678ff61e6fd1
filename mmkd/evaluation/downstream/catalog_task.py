"""A zero-shot cross-lingual transfer check that runs offline: which program's catalog is a message from?

XNLI, PAWS-X and XQuAD fine-tune on English and test on other languages; their data is not reachable
here. This task is built at run time in the same setting from the corpus and the catalogs it came
from: a message's label is its gettext domain (the catalog's file name: coreutils, gtk30, apt, ...).
  train  English messages of the corpus's TRAIN split, at most `per_label` per label (balanced);
  test   for each language, the translations of the TEST split's messages (messages no fine-tuning
         saw, in any language), and "en" the English test messages themselves.
Only messages found in exactly one domain count (a message that gtk30 and glib20 both carry has no
label). The `num_labels` labels are chosen so that every language's messages carry two of them where
its catalogs allow (`choose_labels`): a low-resource language's messages often come from catalogs that
the large languages' most frequent domains leave out, and a language whose test messages all carry one
label measures nothing (any encoder scores 100%). The model is
fine-tuned on English (mmkd.evaluation.downstream.finetune, as XNLI) and tested zero-shot on each
language; `majority` reports per language the share of its most frequent label, the floor an
encoder that ignored its input would reach.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from mmkd.corpus.builtin import DEFAULT_LOCALE_DIR
from mmkd.corpus.cleaning import clean_text
from mmkd.corpus.gettext_catalogs import PARSE_ERRORS, find_catalogs, read_catalog
from mmkd.corpus.schema import column, load_corpus
from mmkd.corpus.splitting import normalise_src
from mmkd.errors import MMKDError
from mmkd.evaluation.downstream.data import TaskData
from mmkd.evaluation.downstream.tasks import TaskSpec

ENGLISH = "en"


def message_domains(catalogs: Mapping[str, Iterable[Path]]) -> dict[str, set[str]]:
    """{normalised cleaned English message: the domains (catalog file stems) that carry it}.

    Messages are cleaned as the corpus cleans them (clean_text) and keyed as the split keys them
    (normalise_src), so a corpus row's src finds its catalogs. Unreadable catalogs are skipped, as
    the corpus builder skips them.
    """
    domains: dict[str, set[str]] = defaultdict(set)
    for paths in catalogs.values():
        for path in paths:
            try:
                pairs = read_catalog(path, Counter())
            except PARSE_ERRORS:
                continue
            for src, _ in pairs:
                domains[normalise_src(clean_text(src))].add(path.stem)
    return domains


def choose_labels(overall: Counter, per_language: Mapping[str, Counter], num_labels: int,
                  per_language_labels: int = 2) -> list[str]:
    """`num_labels` domains: in rounds, each language's next most frequent domain (languages with the
    fewest labelled train messages first) until each has `per_language_labels`, then the most frequent
    domains overall (`overall`: distinct train messages per domain)."""
    labels: list[str] = []
    order = sorted(per_language, key=lambda lang: (sum(per_language[lang].values()), lang))
    for round_ in range(per_language_labels):
        for lang in order:
            ranked = [name for name, _ in per_language[lang].most_common()]
            have = [name for name in ranked if name in labels]
            missing = [name for name in ranked if name not in labels]
            if len(have) <= round_ and missing and len(labels) < num_labels:
                labels.append(missing[0])
    labels += [name for name, _ in overall.most_common() if name not in labels][:num_labels - len(labels)]
    return labels


def catalog_task(corpus: str | Path, locale_dir: str | Path = DEFAULT_LOCALE_DIR, num_labels: int = 8,
                 per_label: int = 250, seed: int = 0) -> tuple[TaskSpec, TaskData, list[str]]:
    """(task settings, data, label names) of the catalog task on `corpus` (module docstring).

    Raises MMKDError when fewer than 2 domains have labelled train messages or a language has no
    labelled test message.
    """
    if num_labels < 2 or per_label < 1:
        raise MMKDError(f"catalog task: need num_labels >= 2 and per_label >= 1, got {num_labels}, {per_label}")
    dsd = load_corpus(corpus)
    langs = sorted(set(column(dsd["train"], "lang")))
    domains = message_domains(find_catalogs(locale_dir, langs))

    def domain(src: str) -> str | None:
        found = domains.get(normalise_src(src), set())
        return next(iter(found)) if len(found) == 1 else None

    train_src = sorted({src for src in column(dsd["train"], "src") if domain(src) is not None})
    per_language: dict[str, Counter] = defaultdict(Counter)
    for src, lang in zip(column(dsd["train"], "src"), column(dsd["train"], "lang")):
        if (name := domain(src)) is not None:
            per_language[lang][name] += 1
    labels = choose_labels(Counter(domain(src) for src in train_src), per_language, num_labels)
    if len(labels) < 2:
        raise MMKDError(f"catalog task: {corpus} has train messages from {len(labels)} catalog(s) of "
                        f"{locale_dir}; need 2 (is it the corpus of these catalogs?)")
    index = {name: i for i, name in enumerate(labels)}
    random.Random(seed).shuffle(train_src)
    taken: Counter = Counter()
    train = []
    for src in train_src:
        name = domain(src)
        if name in index and taken[name] < per_label:
            taken[name] += 1
            train.append({"text_a": src, "text_b": None, "label": index[name]})
    test: dict[str, list[dict]] = {lang: [] for lang in [ENGLISH, *langs]}
    seen_english = set()
    for src, tgt, lang in zip(column(dsd["test"], "src"), column(dsd["test"], "tgt"), column(dsd["test"], "lang")):
        name = domain(src)
        if name not in index:
            continue
        test[lang].append({"text_a": tgt, "text_b": None, "label": index[name]})
        if src not in seen_english:
            seen_english.add(src)
            test[ENGLISH].append({"text_a": src, "text_b": None, "label": index[name]})
    empty = [lang for lang, examples in test.items() if not examples]
    if empty:
        raise MMKDError(f"catalog task: no labelled test message for {', '.join(empty)} in {corpus}")
    task = TaskSpec("catalog", "classification", tuple(test), learning_rate=5e-5, max_length=64, batch_size=32,
                    epochs=3, num_labels=len(labels))
    return task, TaskData(train=train, test=test), labels


def majority_share(examples: list[dict]) -> float:
    """Percent of `examples` whose label is the most frequent one."""
    counts = Counter(example["label"] for example in examples)
    return 100.0 * max(counts.values()) / len(examples)


def catalog_transfer(corpus: str | Path, model: str, *, locale_dir: str | Path = DEFAULT_LOCALE_DIR,
                     num_labels: int = 8, per_label: int = 250, epochs: int | None = None, seed: int = 42) -> dict:
    """Fine-tune `model` ('teacher' = the packaged teacher, a student directory, any HF model path or
    name) on the catalog task of `corpus` and test it on every language; the downstream results dict
    (mmkd.evaluation.downstream.finetune.evaluate_task) plus "labels", per language and on average the
    "majority" floor, and "zero_shot_accuracy": the mean accuracy over the languages other than English
    whose test messages carry more than one label (the others, named in "single_label_languages", score
    100% with any encoder); NaN when there is none."""
    from mmkd.evaluation.downstream.finetune import RunOptions, evaluate_task
    from mmkd.models.teacher import teacher_files

    task, data, labels = catalog_task(corpus, locale_dir, num_labels, per_label, seed)
    model_path = teacher_files(None)[0] if model == "teacher" else model
    results = evaluate_task(task, model_path, RunOptions(epochs=epochs, seed=seed), data)
    for lang, examples in data.test.items():
        results["languages"][lang]["majority"] = majority_share(examples)
    results["average"]["majority"] = sum(r["majority"] for r in results["languages"].values()) / len(data.test)
    single = [lang for lang, examples in data.test.items() if len({e["label"] for e in examples}) == 1]
    zero_shot = [r["accuracy"] for lang, r in results["languages"].items() if lang not in (ENGLISH, *single)]
    return {**results, "model": model, "labels": labels, "single_label_languages": single,
            "zero_shot_accuracy": sum(zero_shot) / len(zero_shot) if zero_shot else float("nan")}

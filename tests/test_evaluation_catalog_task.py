"""The offline zero-shot transfer check: catalog labels, a balanced English train set, held-out test
messages in every language, and the command end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmkd import cli
from mmkd.corpus.builtin import build_builtin_corpus
from mmkd.corpus.schema import column, save_corpus
from mmkd.errors import MMKDError
from mmkd.evaluation.downstream.catalog_task import catalog_task
from mo_files import catalog, write_mo

TOPICS = {"files": ("Could not open the file {i} for reading", "Datei {i} konnte nicht gelesen werden",
                    "Impossible de lire le fichier {i}"),
          "network": ("The network connection {i} was refused by the server", "Die Verbindung {i} wurde abgelehnt",
                      "La connexion {i} a été refusée"),
          "printer": ("The printer {i} has run out of paper now", "Dem Drucker {i} ist das Papier ausgegangen",
                      "L'imprimante {i} n'a plus de papier")}


@pytest.fixture(scope="module")
def catalog_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """Catalogs of three programs in de and fr (60 messages each), one message in two programs; their corpus."""
    root = tmp_path_factory.mktemp("catalogs")
    locale = root / "locale"
    numbers = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    for lang, column_index in (("de", 1), ("fr", 2)):
        for domain, texts in TOPICS.items():
            messages = {texts[0].format(i=f"{a} {b}"): texts[column_index].format(i=f"{a} {b}")
                        for a in numbers for b in numbers[:6]}
            messages["Shared message seen in every program"] = f"Gemeinsame Nachricht {lang}"
            write_mo(catalog(locale, lang, domain), messages)
    dsd, report = build_builtin_corpus(["de", "fr"], locale_dir=str(locale), seed=0, test_fraction=0.2)
    save_corpus(dsd, report, root / "corpus")
    return locale, root / "corpus"


def test_labels_train_and_test_messages(catalog_corpus):
    locale, corpus = catalog_corpus
    task, data, labels = catalog_task(corpus, locale, num_labels=2, per_label=20, seed=0)
    assert len(labels) == 2 and set(labels) < set(TOPICS) and task.num_labels == 2
    assert task.languages == ("en", "de", "fr")
    assert sorted(e["label"] for e in data.train) == [0] * 20 + [1] * 20  # balanced, at most per_label
    train_text = {e["text_a"] for e in data.train}
    assert "Shared message seen in every program" not in train_text  # in three catalogs: no label
    from mmkd.corpus.schema import load_corpus

    dsd = load_corpus(corpus)
    assert train_text <= set(column(dsd["train"], "src"))
    english_test = {e["text_a"] for e in data.test["en"]}
    assert english_test and english_test <= set(column(dsd["test"], "src"))
    for lang, examples in data.test.items():
        for example in examples:  # each test label is the catalog the message's words come from
            topic = labels[example["label"]]
            assert any(word in example["text_a"] for word in TOPICS[topic][("en", "de", "fr").index(lang)].split()[:2])
    with pytest.raises(MMKDError, match="per_label >= 1"):
        catalog_task(corpus, locale, num_labels=2, per_label=0)


def test_every_language_gets_two_labels_where_its_catalogs_allow(tmp_path):
    """de carries three large programs, fr two small other ones: the most frequent domains overall
    would give fr's test messages one label at most."""
    topics = {"files": "de", "network": "de", "disk": "de", "printer": "fr", "sound": "fr"}
    locale = tmp_path / "locale"
    for domain, lang in topics.items():
        count = 40 if lang == "de" else 16
        messages = {f"Message {i} about {domain} number {i}": f"Nachricht {domain} {i} {lang}" for i in range(count)}
        write_mo(catalog(locale, lang, domain), messages)
    dsd, report = build_builtin_corpus(["de", "fr"], locale_dir=str(locale), seed=0, test_fraction=0.25)
    save_corpus(dsd, report, tmp_path / "corpus")
    task, data, labels = catalog_task(tmp_path / "corpus", locale, num_labels=4, per_label=20, seed=0)
    assert len(labels) == 4 and {"printer", "sound"} <= set(labels)
    for lang in ("de", "fr"):
        assert len({example["label"] for example in data.test[lang]}) == 2, lang


def test_choose_labels_takes_each_languages_top_domains_in_rounds_then_the_most_frequent():
    from collections import Counter

    from mmkd.evaluation.downstream.catalog_task import choose_labels

    per_language = {"de": Counter(a=50, b=40, c=30, d=20), "xh": Counter(e=5, b=3, f=1)}
    overall = Counter(a=50, b=43, c=30, d=20, e=5, f=1)
    assert choose_labels(overall, per_language, 5) == ["e", "a", "b", "c", "d"]  # xh: e then b (already in)
    assert choose_labels(overall, per_language, 2) == ["e", "a"]
    assert choose_labels(overall, per_language, 6, per_language_labels=3) == ["e", "a", "b", "f", "c", "d"]


def test_command_fine_tunes_on_english_and_reports_every_language(catalog_corpus, tmp_path, teacher_tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    locale, corpus = catalog_corpus
    torch.manual_seed(0)
    model = tmp_path / "model"
    BertForMaskedLM(BertConfig(vocab_size=len(teacher_tokenizer), hidden_size=16, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
                    ).save_pretrained(model)
    teacher_tokenizer.save_pretrained(model)
    out = tmp_path / "eval"
    assert cli.main(["eval", "catalog", "--corpus", str(corpus), "--model", str(model), "--out", str(out),
                     "--locale-dir", str(locale), "--labels", "3", "--per-label", "8", "--epochs", "1"]) == 0
    results = json.loads((out / "catalog.json").read_text())
    assert list(results["languages"]) == ["en", "de", "fr"] and results["train_examples"] == 24
    for scores in results["languages"].values():
        assert 0 <= scores["accuracy"] <= 100 and 100 / 3 <= scores["majority"] <= 100 and scores["examples"] > 0
    assert results["zero_shot_accuracy"] == pytest.approx(
        (results["languages"]["de"]["accuracy"] + results["languages"]["fr"]["accuracy"]) / 2)
    assert results["single_label_languages"] == []
    assert "| majority |" in (out / "catalog.md").read_text()

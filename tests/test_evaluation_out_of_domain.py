"""The out-of-domain retrieval set: catalogs from another source, cleaned like the corpus, without
any English message of the training corpus, aliases for other projects' locale names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmkd import cli
from mmkd.corpus.schema import column, make_corpus
from mmkd.errors import MMKDError
from mmkd.evaluation.out_of_domain import build_out_of_domain, package_locale_dirs
from mo_files import catalog, write_mo
from tiny_setup import build_tiny

TRAINING_SRC = "Could not open the archive for reading"


def training_corpus():
    row = {"src": TRAINING_SRC, "tgt": "Archiv konnte nicht gelesen werden", "lang": "de", "alignment": None}
    return make_corpus({"train": [], "dev": [], "test": [row]})


@pytest.fixture
def other_source(tmp_path: Path) -> Path:
    """A project's locale tree: de (one message the training corpus has, in other case and spacing),
    zh_Hans (the project's name for zh_CN), a second tree for fr."""
    root = tmp_path / "project"
    write_mo(catalog(root / "locale", "de", "django"), {
        "could not open the  archive for reading": "Archiv konnte nicht gelesen werden",
        "This field is required for every order": "Dieses Feld ist für jede Bestellung erforderlich",
        "Enter a valid email address please": "Bitte eine gültige E-Mail-Adresse eingeben",
        "%(count)s": "%(count)s",
    })
    write_mo(catalog(root / "locale", "zh_Hans", "django"),
             {"This field is required for every order": "每个订单都必须填写此字段"})
    write_mo(catalog(root / "contrib" / "locale", "fr", "admin"),
             {"Select an item to change it now": "Sélectionnez un élément pour le modifier"})
    return root


def test_pairs_of_the_training_corpus_are_dropped_and_aliases_resolve(other_source):
    dirs = [other_source / "locale", other_source / "contrib" / "locale"]
    ood, report = build_out_of_domain(str(dirs[0]), ["de", "zh_CN", "fr"], training_corpus())
    test = ood["test"]
    assert sorted(zip(column(test, "lang"), column(test, "src"))) == [
        ("de", "Enter a valid email address please"), ("de", "This field is required for every order"),
        ("zh_CN", "This field is required for every order")]
    assert len(ood["train"]) == len(ood["dev"]) == 0
    assert report["in_training_corpus"] == 1 and report["languages_without_catalogs"] == ["fr"]
    assert report["pairs"] == {"de": 2, "zh_CN": 1}
    with pytest.raises(MMKDError, match="no catalog for any of eu"):
        build_out_of_domain(str(dirs[1]), ["eu"], training_corpus())
    with pytest.raises(MMKDError, match="no such directory"):
        build_out_of_domain(str(other_source / "nowhere"), ["de"], training_corpus())


def test_package_sources_are_every_locale_tree_of_an_installed_package(other_source, monkeypatch):
    (other_source / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(other_source.parent))
    assert package_locale_dirs("project") == [other_source / "contrib" / "locale", other_source / "locale"]
    with pytest.raises(MMKDError, match="package 'no_such_package_here' is not installed"):
        package_locale_dirs("no_such_package_here")


def test_eval_retrieval_scores_the_out_of_domain_pairs(tmp_path, teacher_dir):
    tiny = build_tiny(tmp_path / "tiny", teacher_dir)
    root = tmp_path / "locale"
    write_mo(catalog(root, "de"), {"the red cat sees the dog": "die rote katze sieht den hund",  # in the corpus
                                   "a green frog jumps over the old fence":
                                       "ein grüner frosch springt über den alten zaun",
                                   "two blue birds sing in the small tree": "zwei blaue vögel singen im kleinen baum"})
    write_mo(catalog(root, "fr"),
             {"a green frog jumps over the old fence": "une grenouille verte saute la vieille clôture"})
    out = tmp_path / "eval"
    assert cli.main(["eval", "retrieval", "--corpus", str(tiny / "corpus"), "--teacher", str(tiny / "teacher"),
                     "--models", f"teacher,before={tiny / 'student'}", "--out", str(out), "--max-length", "32",
                     "--low-resource-below", "40", "--out-of-domain", str(root)]) == 0
    report = json.loads((out / "retrieval.json").read_text())
    assert report["split"] == "out-of-domain" and report["out_of_domain"]["in_training_corpus"] == 1
    assert {lang: (r["pool"], r["train_pairs"], r["group"]) for lang, r in report["languages"].items()} == {
        "de": (2, 70, "high"), "fr": (1, 35, "low")}

"""The built-in corpus: .mo extraction (catalogs written here), language selection, split, CLI.

The last test reads the machine's own catalogs (two small languages) when they are installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmkd import cli
from mmkd.corpus.builtin import build_builtin_corpus
from mmkd.corpus.gettext_catalogs import extract_pairs, find_catalogs
from mmkd.corpus.schema import SPLITS, column, language_counts, load_corpus
from mmkd.errors import MMKDError
from mo_files import ARABIC_LIKE_PLURAL, catalog, write_mo

SYSTEM_LOCALE_DIR = Path("/usr/share/locale")


def numbered_messages(lang_template: str, count: int) -> dict[str, str]:
    return {f"Could not open archive number {i} for reading": lang_template.format(i=i) for i in range(count)}


@pytest.fixture
def locale_dir(tmp_path: Path) -> Path:
    """de and fr with 80 shared messages each (plus edge cases), eu with 5, English variants."""
    root = tmp_path / "locale"
    write_mo(catalog(root, "de"), {
        **numbered_messages("Archiv Nummer {i} konnte nicht gelesen werden", 80),
        "menu\x04Save the current document": "Das aktuelle Dokument speichern",
        "Deleted one old file\x00Deleted %d old files": ["Eine alte Datei gelöscht", "%d alte Dateien gelöscht"],
        "Keep this text untouched": "Keep this text untouched",
    })
    write_mo(catalog(root, "de", "legacy"), {"Change the file size": "Größe der Datei ändern"},
             charset="ISO-8859-1")
    write_mo(catalog(root, "fr"), numbered_messages("Impossible de lire l'archive numéro {i}", 80))
    write_mo(catalog(root, "eu"), numbered_messages("Ezin da {i}. artxiboa irakurri", 5))
    write_mo(catalog(root, "en_GB"), {"Change the colour now": "Change the colour now"})
    write_mo(catalog(root, "en@quot"), {"Say 'hello' to them": "Say ‘hello’ to them"})
    return root


def test_extractor_reads_contexts_plurals_and_charsets(locale_dir):
    extraction = extract_pairs(find_catalogs(locale_dir, ["de"]))
    pairs = dict(extraction.pairs["de"])
    assert pairs["Save the current document"] == "Das aktuelle Dokument speichern"
    assert pairs["Deleted one old file"] == "Eine alte Datei gelöscht"
    assert pairs["Change the file size"] == "Größe der Datei ändern"
    assert "" not in pairs
    assert len(extraction.pairs["de"]) == 80 + 4
    assert extraction.counts["context_stripped"] == 1
    assert extraction.counts["plural_resolved"] == 1
    assert extraction.counts["catalogs_read"] == 2
    assert extraction.skipped == []


def test_plural_form_is_the_one_the_catalog_gives_for_one(tmp_path):
    write_mo(catalog(tmp_path, "ar"), {"One file was removed\x00%d files were removed": ["zero", "one", "many"]},
             plural_forms=ARABIC_LIKE_PLURAL)
    extraction = extract_pairs(find_catalogs(tmp_path, ["ar"]))
    assert extraction.pairs["ar"] == [("One file was removed", "one")]


def test_corrupt_catalogs_are_counted_and_skipped(locale_dir):
    garbage = catalog(locale_dir, "de", "garbage")
    garbage.write_bytes(b"this is not a catalog at all")
    truncated = catalog(locale_dir, "de", "truncated")
    truncated.write_bytes(catalog(locale_dir, "de").read_bytes()[:200])
    bad_charset = write_mo(catalog(locale_dir, "de", "charset"), {"A b c": "D e f"})
    bad_charset.write_bytes(bad_charset.read_bytes().replace(b"charset=UTF-8", b"charset=XYZ-8"))  # same length
    extraction = extract_pairs(find_catalogs(locale_dir, ["de"]))
    assert sorted(s["path"] for s in extraction.skipped) == sorted(map(str, [garbage, truncated, bad_charset]))
    assert all(s["error"] for s in extraction.skipped)
    assert extraction.counts["catalogs_read"] == 2
    assert len(extraction.pairs["de"]) == 84


def test_language_selection_reads_only_the_named_directories(locale_dir):
    catalog(locale_dir, "fr", "broken").write_bytes(b"broken")
    assert list(find_catalogs(locale_dir, ["de"])) == ["de"]
    assert extract_pairs(find_catalogs(locale_dir, ["de"])).skipped == []
    assert list(find_catalogs(locale_dir)) == ["de", "eu", "fr"]  # English variants left out


def test_unknown_and_english_languages_are_refused(locale_dir):
    with pytest.raises(MMKDError, match="'xx'.*no catalogs"):
        find_catalogs(locale_dir, ["de", "xx"])
    with pytest.raises(MMKDError, match="'en_GB'.*English"):
        find_catalogs(locale_dir, ["en_GB"])


def test_build_splits_by_english_message_for_every_language(locale_dir):
    dsd, report = build_builtin_corpus(["de", "fr"], locale_dir=str(locale_dir), seed=0,
                                       dev_fraction=0.2, test_fraction=0.2)
    split_of = {}
    for split in SPLITS:
        for src, lang in zip(column(dsd[split], "src"), column(dsd[split], "lang")):
            assert split_of.setdefault(src, split) == split, f"{src!r} ({lang}) in two splits"
    numbered = [src for src in split_of if src.startswith("Could not open archive")]
    assert len(numbered) == 80
    assert {split_of[src] for src in numbered} == set(SPLITS)
    counts = language_counts(dsd)
    assert counts["fr"]["total"] == 80
    assert counts["de"]["total"] == 80 + 3  # the untranslated message is dropped
    assert report["cleaning"]["dropped"]["untranslated"] == 1
    assert report["counts"] == counts
    again, again_report = build_builtin_corpus(["de", "fr"], locale_dir=str(locale_dir), seed=0,
                                               dev_fraction=0.2, test_fraction=0.2)
    assert again_report["fingerprint"] == report["fingerprint"]
    _, reseeded = build_builtin_corpus(["de", "fr"], locale_dir=str(locale_dir), seed=1,
                                       dev_fraction=0.2, test_fraction=0.2)
    assert reseeded["fingerprint"] != report["fingerprint"]


def test_languages_by_minimum_pair_count(locale_dir):
    dsd, report = build_builtin_corpus(None, min_pairs=50, locale_dir=str(locale_dir))
    assert report["languages"] == ["de", "fr"]
    assert report["languages_below_min_pairs"] == {"eu": 5}
    assert set(language_counts(dsd)) == {"de", "fr"}
    _, named = build_builtin_corpus(["eu", "fr"], min_pairs=50, locale_dir=str(locale_dir))
    assert named["languages"] == ["fr"]
    with pytest.raises(MMKDError, match="no language"):
        build_builtin_corpus(["eu"], min_pairs=50, locale_dir=str(locale_dir))


@pytest.fixture
def corpus_cli():
    """`mmkd.cli.main` (it imports only the module of the subcommand it runs)."""
    return cli.main


def test_cli_build_writes_a_corpus_that_loads(locale_dir, tmp_path, corpus_cli, capsys):
    out = tmp_path / "corpus"
    assert corpus_cli(["corpus", "build", "--locale-dir", str(locale_dir), "--langs", "de,eu",
                       "--out", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "de " in printed and "eu " in printed and "corpus written to" in printed
    dsd = load_corpus(out)
    counts = language_counts(dsd)
    assert [line.split("\t") for line in (out / "counts.tsv").read_text().splitlines()[1:]] == [
        [lang, *(str(row[c]) for c in (*SPLITS, "total"))] for lang, row in counts.items()
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["langs"] == ["de", "eu"] and report["parameters"]["seed"] == 3
    assert set(report["cleaning"]["dropped"]) >= {"empty", "untranslated", "code_like", "length", "duplicate"}

    assert corpus_cli(["corpus", "stats", str(out)]) == 0
    assert report["fingerprint"] in capsys.readouterr().out
    assert corpus_cli(["corpus", "build", "--locale-dir", str(locale_dir), "--out", str(out)]) == 2
    assert "not an empty directory" in capsys.readouterr().err


@pytest.mark.skipif(not (SYSTEM_LOCALE_DIR / "xh" / "LC_MESSAGES").is_dir(), reason="no system catalogs for xh")
def test_system_catalogs_build_for_small_languages(tmp_path, corpus_cli):
    out = tmp_path / "system"
    assert corpus_cli(["corpus", "build", "--langs", "eu,xh", "--out", str(out)]) == 0
    dsd = load_corpus(out)  # checks that no English message is in two splits
    counts = language_counts(dsd)
    assert set(counts) == {"eu", "xh"}
    assert all(row["train"] > row["test"] > row["dev"] > 0 for row in counts.values())
    rows = [line.split("\t") for line in (out / "counts.tsv").read_text().splitlines()]
    assert rows[0] == ["lang", "train", "dev", "test", "total"]
    assert {row[0]: int(row[4]) for row in rows[1:]} == {lang: row["total"] for lang, row in counts.items()}

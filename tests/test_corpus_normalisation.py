"""Text normalisation where it enters the corpus: NFC, invisible and control characters, whitespace;
copies a reader cannot tell apart end as one message in one split, counted; sides with no visible
text are empty."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from mmkd import cli
from mmkd.corpus.cleaning import clean_pairs
from mmkd.corpus.importing import import_corpus
from mmkd.corpus.normalisation import has_letter_or_digit, normalise_text
from mmkd.corpus.schema import SPLITS, column

CAFE_NFC = "Open the café menu"
CAFE_NFD = unicodedata.normalize("NFD", CAFE_NFC)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("text, expected, steps", [
    (CAFE_NFD, CAFE_NFC, {"nfc"}),
    ("Open\u200b the\u2060 file\ufeff", "Open the file", {"invisible"}),
    ("Open \u200c\u200d the file", "Open the file", {"invisible", "whitespace"}),
    ("Open\x00 the\x07 file\x7f", "Open the file", {"control"}),
    ("Open\u00a0the\u3000file\u2009now\tplease", "Open the file now please", {"whitespace"}),
    ("  Open the file ", "Open the file", set()),
    ("Datei öffnen", "Datei öffnen", set()),
])
def test_normalise_text_names_each_step_that_changed_it(text, expected, steps):
    changed: set[str] = set()
    assert normalise_text(text, changed) == expected
    assert changed == steps
    assert normalise_text(expected) == expected


def test_every_format_and_control_character_is_removed_and_no_visible_one():
    for code in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0xAD, 0x200B, 0x200E, 0x202A, 0xFEFF, 0xE0001):
        char = chr(code)
        expected = " " if char.isspace() else ""
        assert normalise_text(f"a{char}b") == f"a{expected}b", hex(code)
    for visible in ("é", "ß", "中", "ع", "٣", "-", "‐"):
        assert normalise_text(f"a{visible}b") == f"a{visible}b"


@pytest.mark.parametrize("text, expected", [
    ("\u200b\u200c\u200d\u2060\ufeff", False), ("\x00\x00", False), ("...", False), ("", False),
    ("a", True), ("7", True), ("中", True), ("ß", True),
])
def test_has_letter_or_digit(text, expected):
    assert has_letter_or_digit(normalise_text(text)) is expected


def test_nfc_and_nfd_copies_of_a_message_end_in_one_split_and_are_counted(tmp_path):
    train = write(tmp_path / "train.tsv", f"{CAFE_NFD}\tDas Café-Menü öffnen\tde\n"
                                          "Close the window now\tDas Fenster schließen\tde\n")
    test = write(tmp_path / "test.tsv", f"{CAFE_NFC}\tOuvrir le menu du café\tfr\n")
    dsd, report = import_corpus([train, test])
    assert column(dsd["test"], "src") == [CAFE_NFC]
    assert column(dsd["train"], "src") == ["Close the window now"]
    assert report["checks"]["split_overlap"] == 1
    assert report["normalisation"]["changed"]["nfc"] == 1
    assert report["normalisation"]["merged_messages"] == 1


def test_invisible_variants_of_a_pair_are_one_pair(tmp_path):
    variants = [CAFE_NFC, CAFE_NFD, "Open the\u200b café menu", "Open\u00a0the café menu\ufeff",
                "Open the café\x00 menu"]
    path = write(tmp_path / "pairs.tsv", "".join(f"{src}\tDas Café-Menü öffnen\tde\n" for src in variants))
    dsd, report = import_corpus([path])
    rows = [row for split in SPLITS for row in dsd[split]]
    assert [(row["src"], row["tgt"]) for row in rows] == [(CAFE_NFC, "Das Café-Menü öffnen")]
    assert unicodedata.is_normalized("NFC", rows[0]["tgt"])
    assert report["checks"]["duplicate"] == 4
    assert report["normalisation"]["merged_pairs"] == 4
    assert report["normalisation"]["merged_messages"] == 4
    assert report["normalisation"]["changed"] == {"nfc": 1, "invisible": 2, "control": 1, "whitespace": 1}


def test_sides_without_visible_text_are_counted_empty_and_dropped(tmp_path):
    lines = [
        "Open the file\tDatei öffnen",  # kept
        "\u200b\u200c\u200d\tLeer",
        "Close the file\t\u2060\ufeff",
        "Save the file\t\x00\x00",
        "\x00\tNull",
        "Print the file\t...",
    ]
    path = write(tmp_path / "pairs.tsv", "".join(f"{line}\n" for line in lines))
    dsd, report = import_corpus([path], lang="de")
    assert [row["src"] for split in SPLITS for row in dsd[split]] == ["Open the file"]
    assert report["checks"]["empty"] == 5


def test_a_removed_invisible_word_drops_the_alignment_it_would_shift(tmp_path):
    path = write(tmp_path / "pairs.tsv", "Open \u200b the file\tDatei öffnen\tde\t0-1 3-0\n"
                                         "Save\u200b the file\tDatei speichern\tde\t0-1 2-0\n")
    dsd, report = import_corpus([path])
    alignments = {row["src"]: row["alignment"] for split in SPLITS for row in dsd[split]}
    assert alignments == {"Open the file": None, "Save the file": [[0, 1], [2, 0]]}
    assert report["checks"]["alignment_words_changed"] == 1


def test_the_built_in_cleaning_normalises_too():
    kept, counters = clean_pairs([("de", CAFE_NFD, "Das Café-Menü öffnen"),
                                  ("de", CAFE_NFC, "Das Café-Menü öffnen"),
                                  ("de", "Open the\u200b\u200b file now", "\u200b\u200b\u200b")])
    assert kept == [("de", CAFE_NFC, "Das Café-Menü öffnen")]
    assert counters["changed"]["unicode"] == 2
    assert counters["dropped"]["empty"] == 1 and counters["dropped"]["duplicate"] == 1


def test_cli_prints_what_normalisation_changed_and_merged(tmp_path, capsys):
    path = write(tmp_path / "pairs.tsv", f"{CAFE_NFD}\tDas Café-Menü öffnen\n{CAFE_NFC}\tDas Café-Menü öffnen\n"
                                         "\u200b\tLeer\n")
    out = tmp_path / "corpus"
    assert cli.main(["corpus", "import", path, "--lang", "de", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "normalised pairs: nfc 1, invisible 1, control 0, whitespace 0" in printed
    assert "merged by normalisation: 1 pairs, 1 English messages" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["checks"]["empty"] == 1 and report["checks"]["duplicate"] == 1

"""Each cleaning rule on its own, then the pipeline's counters."""

from __future__ import annotations

import pytest

from mmkd.corpus.cleaning import (
    CleaningConfig,
    clean_pairs,
    clean_text,
    has_plausible_ratio,
    has_sentence_length,
    has_text,
    is_prose,
    is_translated,
    normalise_whitespace,
    strip_accelerators,
    strip_format_specifiers,
    strip_markup,
    strip_option_column,
)
from mmkd.errors import MMKDError

CONFIG = CleaningConfig()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Cannot open %s for reading", "Cannot open  for reading"),
        ("Copied %d of %ld files", "Copied  of  files"),
        ("Moved %1$s to %2$s", "Moved  to "),
        ("Width %-10.3f is too large", "Width  is too large"),
        ("Hello %(name)s, welcome", "Hello, welcome"),
        ("Deleted {0} items in {name}", "Deleted  items in "),
        ("Value {0:>10} ignored", "Value  ignored"),
        ("Set ${HOME} and $PATH first", "Set  and  first"),
        ("Replace %1 with %2", "Replace  with "),
        ("Progress 100%% done", "Progress 100% done"),
        ("Cannot read “%s”: denied", "Cannot read : denied"),
        ("%s: invalid option", "invalid option"),
        ("写入 %s 失败", "写入失败"),
        ('cannot use relation "%s.%s" here', "cannot use relation  here"),
        ("address [%s:%d] is not banked", "address  is not banked"),
        ("%pB: %pA: reloc overflow", "reloc overflow"),
        ("50% of the disk is free", "50% of the disk is free"),
    ],
)
def test_format_specifiers_are_removed(text, expected):
    assert strip_format_specifiers(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("_Open the file", "Open the file"),
        ("Save _As…", "Save As…"),
        ("&File menu entries", "File menu entries"),
        ("Tom && Jerry", "Tom & Jerry"),
        ("打开文件(_O)...", "打开文件..."),
        ("保存（&S）", "保存"),
        ("archive_mode is not set", "archive_mode is not set"),  # an identifier, not a mnemonic
        ("use &amp; in markup", "use &amp; in markup"),  # an entity, not a mnemonic
        ("Fish & chips", "Fish & chips"),
    ],
)
def test_accelerators_are_removed(text, expected):
    assert strip_accelerators(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<b>Bold</b> text here", "Bold text here"),
        ('<span weight="bold">Warning</span>: disk full', "Warning: disk full"),
        ("first line<br/>second line", "first line second line"),
        ("Fish &amp; chips &lt;3 &#169;", "Fish & chips <3 ©"),
        ("the &parameter stays", "the &parameter stays"),
    ],
)
def test_markup_is_removed(text, expected):
    assert strip_markup(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("line one\nline two", "line one line two"),
        ("tab\tseparated  words ", "tab separated words"),
        ("escaped\\nnewline\\tand tab", "escaped newline and tab"),
        ("  padded\r\n", "padded"),
    ],
)
def test_whitespace_is_normalised(text, expected):
    assert normalise_whitespace(text) == expected


def test_option_column_is_stripped_from_a_help_line_only():
    assert strip_option_column("  -v, --verbose     explain what it does\n") == "explain what it does\n"
    assert strip_option_column("  -P, --parallel=N\n        use this many workers") == "use this many workers"
    block = "  -a, --all     show all\n  -b, --brief   be brief\n"
    assert strip_option_column(block) == block
    assert strip_option_column("-x requires an argument") == "-x requires an argument"


def test_clean_text_chains_rules_and_names_those_that_changed():
    changed: set[str] = set()
    assert clean_text("  Could not _open <b>%s</b> now\n  (permission denied)", changed) == (
        "Could not open now (permission denied)"
    )
    assert changed == {"whitespace", "markup", "accelerators", "format_specifiers", "whitespace_final"}


def test_empty_filter_needs_a_letter_on_both_sides():
    assert has_text("Open the file", "Datei öffnen", CONFIG)
    assert not has_text(": ,", "Datei", CONFIG)
    assert not has_text("Open it", "", CONFIG)
    assert has_text("Open the file", "打开文件", CONFIG)


def test_untranslated_filter_ignores_case_only():
    assert not is_translated("Open the file", "Open the file", CONFIG)
    assert not is_translated("Open the file", "open the FILE", CONFIG)
    assert is_translated("Open the file", "Datei öffnen", CONFIG)


@pytest.mark.parametrize(
    "src, prose",
    [
        ("Could not open the file for reading", True),
        ("The cluster could not start because archive_mode is off", True),
        ("Usage: tar [OPTION...] [FILE]...", False),
        ("--output-exp Generate an export file", False),
        ("see /usr/share/doc/foo/README for details", True),  # 1 code token in 5
        ("/usr/share/doc/foo/README is missing", False),  # starts with a path
        ("set key=value in org.gnome.desktop.interface now", False),  # 2 in 6
        ("see https://example.org or https://example.com", False),  # 2 in 5
    ],
)
def test_code_like_filter(src, prose):
    assert is_prose(src, "x", CONFIG) is prose


def test_length_filter_counts_english_words():
    config = CleaningConfig(min_words=3, max_words=5)
    assert not has_sentence_length("Open file", "Datei öffnen", config)
    assert has_sentence_length("Open the file", "Datei öffnen", config)
    assert has_sentence_length("one two three four five", "x", config)
    assert not has_sentence_length("one two three four five six", "x", config)


def test_length_ratio_filter_is_in_characters():
    config = CleaningConfig(min_char_ratio=0.1, max_char_ratio=4.0)
    src = "The number of columns in the table"  # 34 characters
    assert has_plausible_ratio(src, "表格的列数", config)  # 5 / 34 = 0.15
    assert not has_plausible_ratio(src, "列", config)  # 1 / 34
    assert not has_plausible_ratio("Open the file", "x" * 53, config)  # 53 / 13 > 4


def test_config_rejects_inverted_bounds():
    with pytest.raises(MMKDError, match="min_words"):
        CleaningConfig(min_words=10, max_words=5)
    with pytest.raises(MMKDError, match="length-ratio"):
        CleaningConfig(min_char_ratio=2.0, max_char_ratio=1.0)


def test_clean_pairs_counts_the_first_failing_filter_and_duplicates():
    pairs = [
        ("de", "Open the _file now", "Die _Datei jetzt öffnen"),  # kept, accelerators changed
        ("de", "Open the file now", "Die Datei jetzt öffnen"),  # duplicate after cleaning
        ("fr", "Open the file now", "Ouvrir le fichier maintenant"),  # other language: kept
        ("de", "%s: %d", "%s: %d"),  # empty (and untranslated, but empty comes first)
        ("de", "Keep this text as is", "keep this text as is"),  # untranslated
        ("de", "Usage: foo [--bar] [FILE]", "Aufruf: foo [--bar] [DATEI]"),  # code-like
        ("de", "Open file", "Datei öffnen"),  # too short
        ("de", "The number of columns in the table", "x"),  # ratio
    ]
    kept, counters = clean_pairs(pairs, CONFIG)
    assert kept == [
        ("de", "Open the file now", "Die Datei jetzt öffnen"),
        ("fr", "Open the file now", "Ouvrir le fichier maintenant"),
    ]
    assert counters["dropped"] == {
        "empty": 1, "untranslated": 1, "code_like": 1, "length": 1, "length_ratio": 1, "duplicate": 1,
    }
    assert counters["changed"]["accelerators"] == 1
    assert counters["changed"]["format_specifiers"] == 1

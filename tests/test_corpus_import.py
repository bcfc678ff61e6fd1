"""`mmkd corpus import`: every user format, alignments, bad input, checks, given splits, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest
from datasets import Dataset, DatasetDict

from mmkd import cli
from mmkd.corpus.importing import import_corpus
from mmkd.corpus.schema import SPLITS, column, load_corpus
from mmkd.corpus.user_formats import Columns
from mmkd.errors import MMKDError


def write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(path)


def all_rows(dsd) -> list[dict]:
    """Rows of every split, ordered by (lang, src) for comparison."""
    rows = [row for split in SPLITS for row in dsd[split]]
    return sorted(rows, key=lambda row: (row["lang"], row["src"]))


def row(src: str, tgt: str, lang: str, alignment=None) -> dict:
    return {"src": src, "tgt": tgt, "lang": lang, "alignment": alignment}


def test_tsv_with_and_without_lang_column(tmp_path):
    path = write(tmp_path / "pairs.tsv", "Open the file\tDatei öffnen\nClose the file\tFermer le fichier\tfr\n")
    dsd, report = import_corpus([path], lang="de")
    assert all_rows(dsd) == [row("Open the file", "Datei öffnen", "de"),
                             row("Close the file", "Fermer le fichier", "fr")]
    assert report["streams"] == {path: 2}
    assert report["splits"] == "by_english_message"


def test_tsv_header_sets_columns_and_per_pair_alignments(tmp_path):
    path = write(tmp_path / "pairs.tsv", "src\talignment\ttgt\nOpen the file\t0-2 2-0\tDatei öffnen\n"
                                         "Close it\t\tSchließen\n")
    dsd, report = import_corpus([path], lang="de")
    assert all_rows(dsd) == [row("Close it", "Schließen", "de", []),
                             row("Open the file", "Datei öffnen", "de", None)]
    assert report["checks"]["alignment_out_of_range"] == 1  # 0-2: "Datei öffnen" has words 0 and 1 only


def test_jsonl_fields_translation_layout_and_alignment_lists(tmp_path):
    lines = [
        {"src": "Open the file", "tgt": "Datei öffnen", "lang": "de", "alignment": [[1, 0], [2, 0]]},
        {"src": "Close the file", "tgt": "Datei schließen", "alignment": "2-0 0-1"},
        {"translation": {"en": "Save the file", "fr": "Enregistrer le fichier"}},
    ]
    path = write(tmp_path / "pairs.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    dsd, _ = import_corpus([path], lang="de")
    assert all_rows(dsd) == [
        row("Close the file", "Datei schließen", "de", [[2, 0], [0, 1]]),
        row("Open the file", "Datei öffnen", "de", [[1, 0], [2, 0]]),
        row("Save the file", "Enregistrer le fichier", "fr"),
    ]


def test_jsonl_custom_field_names(tmp_path):
    line = json.dumps({"english": "Open the file", "german": "Datei öffnen"})
    path = write(tmp_path / "pairs.jsonl", line + "\n")
    dsd, _ = import_corpus([path], lang="de", columns=Columns(src="english", tgt="german"))
    assert all_rows(dsd) == [row("Open the file", "Datei öffnen", "de")]


def test_moses_file_pairs_with_several_targets_and_given_splits(tmp_path):
    english = ["Open the file", "Close the file", "Save the file"]
    for split, lines in (("train", english[:2]), ("test", english[2:])):
        write(tmp_path / f"{split}.en", "\n".join(lines) + "\n")
        write(tmp_path / f"{split}.de", "\n".join(f"[de] {line}" for line in lines) + "\n")
        write(tmp_path / f"{split}.sr@latin", "\n".join(f"[sr] {line}" for line in lines) + "\n")
    inputs = [str(tmp_path / f"{split}.{lang}") for split in ("train", "test")
              for lang in ("en", "de", "sr@latin")]
    dsd, report = import_corpus(inputs)
    assert report["splits"] == "given"
    assert sorted(column(dsd["test"], "tgt")) == ["[de] Save the file", "[sr] Save the file"]
    assert sorted(column(dsd["train"], "lang")) == ["de", "de", "sr@latin", "sr@latin"]
    assert len(dsd["dev"]) == 0


def test_datasets_directory_with_translation_layout_keeps_its_splits(tmp_path):
    def pairs(texts: list[str]) -> Dataset:
        return Dataset.from_dict({"translation": [{"en": text, "de": f"[de] {text}"} for text in texts]})

    DatasetDict(train=pairs(["Open the file", "Close the file"]), validation=pairs(["Save the file"]),
                test=pairs(["Print the file", "Open the file"])).save_to_disk(tmp_path / "hf")
    dsd, report = import_corpus([str(tmp_path / "hf")])
    assert report["splits"] == "given"
    assert column(dsd["train"], "src") == ["Close the file"]
    assert column(dsd["dev"], "src") == ["Save the file"]
    assert column(dsd["test"], "src") == ["Print the file", "Open the file"]
    assert report["checks"]["duplicate"] == 1  # the train copy of the test message


def test_folder_of_data_files_loads_through_datasets(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    write(tmp_path / "data" / "train.jsonl", json.dumps({"english": "Open the file", "german": "Datei öffnen"}))
    write(tmp_path / "data" / "test.jsonl", json.dumps({"english": "Close the file", "german": "Schließen"}))
    dsd, report = import_corpus([str(tmp_path / "data")], lang="de", columns=Columns(src="english", tgt="german"))
    assert report["splits"] == "given"
    assert column(dsd["train"], "tgt") == ["Datei öffnen"] and column(dsd["test"], "tgt") == ["Schließen"]


def test_our_own_corpus_directory_round_trips_through_import(tmp_path):
    lines = "".join(f"Message number {i}\tNachricht {i}\tde\t0-0 1-1\n" for i in range(50))
    path = write(tmp_path / "pairs.tsv", lines)
    first, _ = import_corpus([path])
    first.save_to_disk(tmp_path / "corpus")
    again, report = import_corpus([str(tmp_path / "corpus")])
    assert report["splits"] == "given"
    assert all_rows(again) == all_rows(first)


def test_parallel_alignment_file_per_input(tmp_path):
    path = write(tmp_path / "pairs.tsv", "Open the file\tDatei öffnen\nClose it\tSchließen\n")
    align = write(tmp_path / "pairs.align", "1-0 2-0 0-1\n\n")
    dsd, _ = import_corpus([path], lang="de", alignments=[align])
    assert all_rows(dsd) == [row("Close it", "Schließen", "de", []),
                             row("Open the file", "Datei öffnen", "de", [[1, 0], [2, 0], [0, 1]])]


def test_datasets_name_that_cannot_load_is_named(tmp_path):
    with pytest.raises(MMKDError, match="no-such-dataset-here: not a save_to_disk directory"):
        import_corpus(["no-such-dataset-here"])


@pytest.mark.parametrize(
    "name, content, where, message",
    [
        ("pairs.tsv", "Open the file\tDatei öffnen\nbroken line\n", "pairs.tsv:2",
         "expected 2 to 4 tab-separated columns"),
        ("pairs.tsv", "src\ttgt\nOpen\tÖffnen\ta\tb\n", "pairs.tsv:2", "expected 2 tab-separated columns"),
        ("pairs.tsv", b"Open the file\tDatei \xf6ffnen\n", "pairs.tsv:1", "not valid UTF-8"),
        ("pairs.tsv", "Open the file\tDatei öffnen\tde\t0-0 1-x\n", "pairs.tsv:1", "bad Pharaoh link '1-x'"),
        ("pairs.jsonl", '{"src": "Open", "tgt": "Öffnen"}\n{"src": "Close",\n', "pairs.jsonl:2",
         "not valid JSON"),
        ("pairs.jsonl", '["Open", "Öffnen"]\n', "pairs.jsonl:1", "expected a JSON object"),
        ("pairs.jsonl", '{"src": "Open"}\n', "pairs.jsonl:1", "missing field 'tgt'"),
        ("pairs.jsonl", '{"src": "Open", "tgt": 3}\n', "pairs.jsonl:1", "src, tgt and lang must be strings"),
        ("pairs.jsonl", '{"src": "Open", "tgt": "x", "alignment": [[0]]}\n', "pairs.jsonl:1",
         "bad alignment link"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, name, content, where, message):
    path = write(tmp_path / name, content)
    with pytest.raises(MMKDError, match=re.escape(f"{tmp_path / where}: {message}")):
        import_corpus([path], lang="de")
    dsd, report = import_corpus([path], lang="de", on_error="skip")
    assert report["bad_input"]["skipped"] == 1
    assert report["bad_input"]["examples"][0].startswith(f"{tmp_path / where}: {message}")


def test_pair_without_language_is_malformed(tmp_path):
    path = write(tmp_path / "pairs.tsv", "Open the file\tDatei öffnen\n")
    with pytest.raises(MMKDError, match=f"{path}:1: no language"):
        import_corpus([path])


def test_skip_counts_by_reason_and_keeps_the_rest(tmp_path):
    path = write(tmp_path / "pairs.jsonl", '{"src": "Open the file", "tgt": "Datei öffnen"}\nnot json\n'
                                           '{"src": "Close"}\n{"src": "Save the file", "tgt": "Speichern"}\n')
    dsd, report = import_corpus([path], lang="de", on_error="skip")
    assert [r["src"] for r in all_rows(dsd)] == ["Open the file", "Save the file"]
    assert report["bad_input"]["by_reason"] == {"field": 1, "json": 1}
    assert report["streams"] == {path: 4}


def test_bad_pharaoh_line_in_a_parallel_file_names_that_file(tmp_path):
    path = write(tmp_path / "pairs.tsv", "Open the file\tDatei öffnen\nClose it\tSchließen\n")
    align = write(tmp_path / "pairs.align", "0-0\n0-0 1/1\n")
    with pytest.raises(MMKDError, match=f"{align}:2: bad Pharaoh link '1/1'"):
        import_corpus([path], lang="de", alignments=[align])
    dsd, report = import_corpus([path], lang="de", alignments=[align], on_error="skip")
    assert [r["src"] for r in all_rows(dsd)] == ["Open the file"]


@pytest.mark.parametrize("align_text, message", [
    ("0-0\n", "has 1 lines, but"),
    ("0-0\n0-0\n0-0\n", ":3: more alignment lines"),
])
def test_alignment_file_with_another_line_count_always_fails(tmp_path, align_text, message):
    path = write(tmp_path / "pairs.tsv", "Open the file\tDatei öffnen\nClose it\tSchließen\n")
    align = write(tmp_path / "pairs.align", align_text)
    with pytest.raises(MMKDError, match=message):
        import_corpus([path], lang="de", alignments=[align], on_error="skip")


def test_moses_pair_with_different_line_counts_always_fails(tmp_path):
    en = write(tmp_path / "corpus.en", "Open the file\nClose the file\nSave the file\n")
    de = write(tmp_path / "corpus.de", "Datei öffnen\nDatei schließen\n")
    with pytest.raises(MMKDError, match=f"{en}:3: no partner line: {de} has only 2 lines"):
        import_corpus([en, de], on_error="skip")


def test_empty_over_long_and_out_of_range_are_counted_not_used(tmp_path):
    path = write(tmp_path / "pairs.tsv", "".join([
        "Open the file\tDatei öffnen\tde\t0-0 2-1\n",  # kept as is
        "  \tLeer\tde\n",  # empty src
        "Close the file\t \tde\n",  # empty tgt
        f"{'word ' * 30}\tWort\tde\n",  # over-long (150 characters > 100)
        "Save the file\tSpeichern\tde\t0-0 1-1\n",  # link 1-1 past the one German word
    ]))
    dsd, report = import_corpus([path], max_chars=100)
    assert all_rows(dsd) == [row("Open the file", "Datei öffnen", "de", [[0, 0], [2, 1]]),
                             row("Save the file", "Speichern", "de", None)]
    assert report["checks"] == {"empty": 2, "over_long": 1, "alignment_out_of_range": 1,
                                "alignment_words_changed": 0, "duplicate": 0, "split_overlap": 0}


def test_given_splits_must_be_named_for_all_inputs(tmp_path):
    train = write(tmp_path / "train.tsv", "Open the file\tDatei öffnen\tde\n")
    extra = write(tmp_path / "extra.tsv", "Close the file\tDatei schließen\tde\n")
    with pytest.raises(MMKDError, match="some inputs name a split"):
        import_corpus([train, extra])
    _, report = import_corpus([train, extra], resplit=True)
    assert report["splits"] == "by_english_message"


def test_given_splits_drop_messages_shared_with_a_later_split(tmp_path):
    train = write(tmp_path / "train.tsv", "Open the file\tDatei öffnen\tde\nClose the file\tFermer\tfr\n")
    test = write(tmp_path / "test.tsv", "Close the file\tDatei schließen\tde\n")
    dsd, report = import_corpus([train, test])
    assert column(dsd["train"], "src") == ["Open the file"]
    assert column(dsd["test"], "src") == ["Close the file"]
    assert report["checks"]["split_overlap"] == 1


def test_hash_split_is_disjoint_by_english_message(tmp_path):
    lines = "".join(f"Message number {i}\tNachricht {i}\tde\nMessage number {i}\tMessage {i}\tfr\n"
                    for i in range(300))
    dsd, _ = import_corpus([write(tmp_path / "pairs.tsv", lines)], seed=7)
    sources = [set(column(dsd[split], "src")) for split in SPLITS]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert all(sources)


@pytest.fixture
def corpus_cli():
    """`mmkd.cli.main` (it imports only the module of the subcommand it runs)."""
    return cli.main


def test_cli_import_writes_a_corpus_and_reports_checks(tmp_path, corpus_cli, capsys):
    path = write(tmp_path / "pairs.tsv", "Open the file\tDatei öffnen\n\tleer\nbroken\nSave it\tSpeichern\n")
    align = write(tmp_path / "pairs.align", "0-0\n\n\n0-0 1-0\n")
    out = tmp_path / "corpus"
    argv = ["corpus", "import", path, "--lang", "de", "--alignments", align, "--out", str(out)]
    assert corpus_cli(argv) == 2
    assert f"{path}:3: expected 2 to 4 tab-separated columns" in capsys.readouterr().err
    assert corpus_cli([*argv, "--on-error", "skip"]) == 0
    printed = capsys.readouterr().out
    assert "empty 1" in printed and "malformed lines skipped: 1" in printed
    assert [r["alignment"] for r in all_rows(load_corpus(out))] == [[[0, 0]], [[0, 0], [1, 0]]]
    report = json.loads((out / "report.json").read_text())
    assert report["checks"]["empty"] == 1 and report["bad_input"]["skipped"] == 1
    assert (out / "counts.tsv").read_text().splitlines()[1].split("\t")[0] == "de"

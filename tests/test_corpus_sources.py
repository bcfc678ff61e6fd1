"""The corpora users bring: sentence-transformers parallel sentences, several sources of mixed formats
merged into one corpus, `datasets` sources (configurations, splits, data files, row cap, streaming),
a dev split carved from train, and one-line errors for missing or truncated files."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import datasets
import pytest
from datasets import Dataset, DatasetDict

from mmkd import cli
from mmkd.corpus.importing import import_corpus
from mmkd.corpus.language_codes import is_language_code, parse_language_list
from mmkd.corpus.schema import SPLITS, column, load_corpus
from mmkd.corpus.user_formats import DatasetOptions
from mmkd.errors import MMKDError

ENGLISH = [f"Could not open archive number {i} for reading" for i in range(400)]


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def rows_of(dsd) -> list[tuple[str, str, str]]:
    return sorted((row["lang"], row["src"], row["tgt"]) for split in SPLITS for row in dsd[split])


def split_of_each_message(dsd) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = {}
    for split in SPLITS:
        for src in column(dsd[split], "src"):
            splits.setdefault(src, set()).add(split)
    return splits


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


PARALLEL = "Open the file\tDatei öffnen\tOuvrir le fichier\nClose the file\tDatei schließen\tFermer le fichier\n"


@pytest.mark.parametrize("name", ["parallel.tsv", "parallel.tsv.gz"])
def test_parallel_sentences_import_each_column_under_its_language(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(PARALLEL.encode("utf-8")))
    else:
        write(path, PARALLEL)
    dsd, report = import_corpus([str(path)], langs=["de", "fr"])
    assert rows_of(dsd) == [("de", "Close the file", "Datei schließen"), ("de", "Open the file", "Datei öffnen"),
                            ("fr", "Close the file", "Fermer le fichier"), ("fr", "Open the file", "Ouvrir le fichier")]
    assert report["streams"] == {str(path): 4}


def test_a_third_column_that_is_no_language_code_is_refused_with_file_and_line(tmp_path):
    path = write(tmp_path / "parallel.tsv", "Open the file\tDatei öffnen\tde\n"
                                            "Close it\tSchließen\tIl fait beau aujourd hui.\n")
    with pytest.raises(MMKDError, match=re.escape(f"{path}:2: the lang column holds 'Il fait beau aujourd hui.', "
                                                  "not a language code") + ".*--langs"):
        import_corpus([path], lang="de")
    dsd, report = import_corpus([path], lang="de", on_error="skip")
    assert rows_of(dsd) == [("de", "Open the file", "Datei öffnen")]
    assert report["bad_input"]["by_reason"] == {"lang": 1}


def test_parallel_sentences_with_the_wrong_column_count_name_the_line(tmp_path):
    path = write(tmp_path / "parallel.tsv", PARALLEL + "Save the file\tDatei speichern\n")
    with pytest.raises(MMKDError, match=re.escape(f"{path}:3: expected 3 tab-separated columns (English, then de, fr")):
        import_corpus([path], langs=["de", "fr"])


@pytest.mark.parametrize("code, expected", [
    ("de", True), ("zh_CN", True), ("pt-BR", True), ("zh-Hant", True), ("sr@latin", True), ("fil", True),
    ("Il fait beau.", False), ("Deutsch", False), ("xx", False), ("de_", False), ("", False),
])
def test_language_codes(code, expected):
    assert is_language_code(code) is expected


def test_language_lists_are_checked():
    assert parse_language_list("de, fr", "--langs") == ["de", "fr"]
    with pytest.raises(MMKDError, match="--langs: 'Bonjour' is not a language code"):
        parse_language_list("de,Bonjour", "--langs")
    with pytest.raises(MMKDError, match="named twice"):
        parse_language_list("de,de", "--langs")


def test_cli_parallel_sentences(tmp_path, capsys):
    path = write(tmp_path / "parallel.tsv", PARALLEL)
    out = tmp_path / "corpus"
    assert cli.main(["corpus", "import", path, "--langs", "de,fr", "--out", str(out)]) == 0
    assert rows_of(load_corpus(out)) == rows_of(import_corpus([path], langs=["de", "fr"])[0])
    assert set(json.loads((out / "report.json").read_text())["counts"]) == {"de", "fr"}
    assert cli.main(["corpus", "import", path, "--langs", "de,Il fait", "--out", str(tmp_path / "c2")]) == 2
    assert "--langs: 'Il fait' is not a language code" in capsys.readouterr().err


def translation_rows(lang: str, english: list[str]) -> Dataset:
    return Dataset.from_dict({"translation": [{"en": src, lang: f"[{lang}] {src}"} for src in english]})


def test_sources_of_mixed_formats_merge_into_one_corpus_split_by_english_message(tmp_path):
    tsv = write(tmp_path / "pairs.tsv", "".join(f"{src}\t[de] {src}\tde\n" for src in ENGLISH))
    jsonl = write(tmp_path / "pairs.jsonl", "".join(json.dumps({"src": src, "tgt": f"[fr] {src}", "lang": "fr"}) + "\n"
                                                  for src in ENGLISH))
    en = write(tmp_path / "moses.en", "".join(f"{src}\n" for src in ENGLISH))
    eu = write(tmp_path / "moses.eu", "".join(f"[eu] {src}\n" for src in ENGLISH))
    translation_rows("xh", ENGLISH).save_to_disk(tmp_path / "hf")
    dsd, report = import_corpus([tsv, str(tmp_path / "hf"), jsonl, en, eu])
    assert report["splits"] == "by_english_message"
    assert list(report["streams"]) == [tsv, str(tmp_path / "hf"), jsonl, f"{en} + {eu}"]
    assert rows_of(dsd) == sorted((lang, src, f"[{lang}] {src}")
                                  for lang in ("de", "fr", "eu", "xh") for src in ENGLISH)
    splits = split_of_each_message(dsd)
    assert all(len(found) == 1 for found in splits.values())
    for split in SPLITS:  # every message is in its split in all four languages
        langs = column(dsd[split], "lang")
        assert all(langs.count(lang) == len(dsd[split]) // 4 for lang in ("de", "fr", "eu", "xh"))
    assert all(len(dsd[split]) for split in SPLITS)


def write_configured_dataset(root: Path) -> str:
    """A local dataset folder with configurations de-en and fr-en, each with train and test."""
    config_lines = []
    for config, lang in (("de-en", "de"), ("fr-en", "fr")):
        config_lines.append(f"- config_name: {config}\n  data_files:")
        for split, english in (("train", ENGLISH[:300]), ("test", ENGLISH[300:])):
            rows = "".join(json.dumps({"translation": {"en": src, lang: f"[{lang}] {src}"}}) + "\n" for src in english)
            write(root / config / f"{split}.jsonl", rows)
            config_lines.append(f"  - split: {split}\n    path: {config}/{split}.jsonl")
    write(root / "README.md", "---\nconfigs:\n" + "\n".join(config_lines) + "\n---\n")
    return str(root)


@pytest.mark.parametrize("streaming", [False, True])
def test_a_datasets_source_with_several_configs_merges_and_carves_dev_from_train(tmp_path, streaming):
    source = write_configured_dataset(tmp_path / "opus")
    dsd, report = import_corpus([source], dataset_options=DatasetOptions(configs=["de-en", "fr-en"],
                                                                          streaming=streaming))
    assert report["splits"] == "given" and report["carved_from_train"] == ["dev"]
    assert list(report["streams"]) == [f"{source}:de-en[test]", f"{source}:fr-en[test]",
                                       f"{source}:de-en[train]", f"{source}:fr-en[train]"]
    assert sorted(set(column(dsd["test"], "src"))) == sorted(ENGLISH[300:])
    dev, train = set(column(dsd["dev"], "src")), set(column(dsd["train"], "src"))
    assert dev and not dev & train and dev | train == set(ENGLISH[:300])
    assert len(dev) / 300 == pytest.approx(0.05, abs=0.04)
    assert sorted(column(dsd["dev"], "lang")) == sorted(["de", "fr"] * len(dev))


def test_datasets_split_choice_row_cap_and_streaming(tmp_path):
    source = write_configured_dataset(tmp_path / "opus")
    options = DatasetOptions(configs=["fr-en"], splits=["train"], max_rows=50, streaming=True)
    dsd, report = import_corpus([source], dataset_options=options)
    assert report["streams"] == {f"{source}:fr-en[train]": 50}
    assert report["splits"] == "by_english_message"
    assert rows_of(dsd) == sorted(("fr", src, f"[fr] {src}") for src in ENGLISH[:50])
    with pytest.raises(MMKDError, match=re.escape(f"{source}: has no split 'dev'")):
        import_corpus([source], dataset_options=DatasetOptions(configs=["fr-en"], splits=["dev"]))


def test_datasets_data_files_of_a_packaged_builder(tmp_path):
    data = write(tmp_path / "pairs.jsonl", "".join(json.dumps({"src": src, "tgt": f"[de] {src}"}) + "\n"
                                                  for src in ENGLISH[:20]))
    dsd, report = import_corpus(["json"], lang="de", dataset_options=DatasetOptions(data_files=[data]))
    assert report["streams"] == {"json[train]": 20}
    assert rows_of(dsd) == sorted(("de", src, f"[de] {src}") for src in ENGLISH[:20])


def test_train_and_test_files_get_a_dev_split_carved_from_train(tmp_path):
    train = write(tmp_path / "train.tsv", "".join(f"{src}\t[de] {src}\tde\n" for src in ENGLISH[:300]))
    test = write(tmp_path / "test.tsv", "".join(f"{src}\t[de] {src}\tde\n" for src in ENGLISH[300:]))
    dsd, report = import_corpus([train, test], dev_fraction=0.1)
    assert report["carved_from_train"] == ["dev"]
    assert column(dsd["test"], "src") == ENGLISH[300:]
    dev = column(dsd["dev"], "src")
    assert len(dev) / 300 == pytest.approx(0.1, abs=0.05)
    assert sorted(dev + column(dsd["train"], "src")) == sorted(ENGLISH[:300])


def test_a_missing_alignment_file_is_one_error_line(tmp_path, capsys):
    path = write(tmp_path / "pairs.tsv", "Open the file\tDatei öffnen\n")
    missing = str(tmp_path / "pairs.align")
    with pytest.raises(MMKDError, match=re.escape(f"{missing}: no such alignment file (--alignments)")):
        import_corpus([path], lang="de", alignments=[missing])
    out = tmp_path / "corpus"
    assert cli.main(["corpus", "import", path, "--lang", "de", "--alignments", missing, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and missing in err and "Traceback" not in err


def truncate_an_arrow_file(directory: Path) -> Path:
    arrow = sorted(directory.rglob("*.arrow"))[0]
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    return arrow


def test_a_truncated_arrow_file_is_named_in_a_corpus_and_in_a_datasets_directory(tmp_path, capsys):
    path = write(tmp_path / "pairs.tsv", "".join(f"{src}\t[de] {src}\tde\n" for src in ENGLISH))
    corpus = tmp_path / "corpus"
    assert cli.main(["corpus", "import", path, "--out", str(corpus)]) == 0
    arrow = truncate_an_arrow_file(corpus)
    with pytest.raises(MMKDError, match=re.escape(f"{arrow}: truncated or corrupt Arrow file")):
        load_corpus(corpus)
    capsys.readouterr()
    assert cli.main(["corpus", "stats", str(corpus)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(arrow) in err
    DatasetDict(train=translation_rows("de", ENGLISH)).save_to_disk(tmp_path / "hf")
    arrow = truncate_an_arrow_file(tmp_path / "hf")
    with pytest.raises(MMKDError, match=re.escape(f"{arrow}: truncated or corrupt Arrow file")):
        import_corpus([str(tmp_path / "hf")])


def test_cli_datasets_options(tmp_path):
    source = write_configured_dataset(tmp_path / "opus")
    out = tmp_path / "corpus"
    argv = ["corpus", "import", source, "--dataset-config", "de-en,fr-en", "--split", "train", "--max-rows", "5",
            "--streaming", "--revision", "main", "--out", str(out)]
    assert cli.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["streams"] == {f"{source}:de-en[train]": 5, f"{source}:fr-en[train]": 5}
    assert report["parameters"]["datasets"] == {"configs": ["de-en", "fr-en"], "splits": ["train"], "data_files": None,
                                                "revision": "main", "max_rows": 5, "streaming": True}
    assert rows_of(load_corpus(out)) == sorted((lang, src, f"[{lang}] {src}") for lang in ("de", "fr")
                                               for src in ENGLISH[:5])

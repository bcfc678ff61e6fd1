"""The corpus schema: save/load round trip, counts.tsv, report.json, validation errors."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict, Features, Value

from mmkd.corpus.schema import FEATURES, corpus_fingerprint, load_corpus, make_corpus, save_corpus
from mmkd.errors import MMKDError


def row(src: str, lang: str = "de", alignment=None) -> dict:
    return {"src": src, "tgt": f"[{lang}] {src}", "lang": lang, "alignment": alignment}


def sample_corpus() -> DatasetDict:
    return make_corpus({
        "train": [row("one two", alignment=[[0, 0], [1, 1]]), row("one two", "fr"), row("three four", "fr", [])],
        "dev": [row("five six")],
        "test": [row("seven eight", "eu")],
    })


def test_empty_splits_survive_the_round_trip(tmp_path):
    save_corpus(make_corpus({"train": [row("one two")]}), {}, tmp_path / "c")
    loaded = load_corpus(tmp_path / "c")
    assert (len(loaded["train"]), len(loaded["dev"]), len(loaded["test"])) == (1, 0, 0)
    assert loaded["dev"].features == FEATURES


def test_save_and_load_round_trip(tmp_path):
    dsd = sample_corpus()
    save_corpus(dsd, {"fingerprint": corpus_fingerprint(dsd)}, tmp_path / "c")
    loaded = load_corpus(tmp_path / "c")
    assert loaded["train"].features == FEATURES
    assert loaded["train"][0]["alignment"] == [[0, 0], [1, 1]]
    assert loaded["train"][1]["alignment"] is None
    assert loaded["train"][2]["alignment"] == []
    assert corpus_fingerprint(loaded) == corpus_fingerprint(dsd)
    assert (tmp_path / "c" / "counts.tsv").read_text().splitlines() == [
        "lang\ttrain\tdev\ttest\ttotal", "de\t1\t1\t0\t2", "eu\t0\t0\t1\t1", "fr\t2\t0\t0\t2",
    ]
    assert json.loads((tmp_path / "c" / "report.json").read_text())["fingerprint"] == corpus_fingerprint(dsd)


def test_fingerprint_follows_content():
    other = make_corpus({"train": [row("one two", alignment=[[0, 1]])]})
    same = make_corpus({"train": [row("one two", alignment=[[0, 1]])]})
    assert corpus_fingerprint(other) == corpus_fingerprint(same) != corpus_fingerprint(sample_corpus())


def test_load_refuses_a_missing_directory(tmp_path):
    with pytest.raises(MMKDError, match="not a corpus directory"):
        load_corpus(tmp_path / "nothing")


def test_load_refuses_missing_splits(tmp_path):
    dsd = sample_corpus()
    DatasetDict(train=dsd["train"], test=dsd["test"]).save_to_disk(tmp_path / "c")
    with pytest.raises(MMKDError, match=f"{tmp_path / 'c'}: corpus splits are"):
        load_corpus(tmp_path / "c")


def test_load_refuses_wrong_features(tmp_path):
    plain = Features({"src": Value("string"), "tgt": Value("string"), "lang": Value("string")})
    empty = Dataset.from_dict({"src": [], "tgt": [], "lang": []}, features=plain)
    one_shard_each = {"train": 1, "dev": 1, "test": 1}
    DatasetDict(train=empty, dev=empty, test=empty).save_to_disk(tmp_path / "c", num_shards=one_shard_each)
    with pytest.raises(MMKDError, match="split 'train' has features"):
        load_corpus(tmp_path / "c")


def test_load_refuses_a_message_in_two_splits(tmp_path):
    dsd = make_corpus({"train": [row("one two")], "dev": [row("five six")], "test": [row("one two", "fr")]})
    dsd.save_to_disk(tmp_path / "c")
    with pytest.raises(MMKDError, match="'one two' is in splits 'train' and 'test'"):
        load_corpus(tmp_path / "c")

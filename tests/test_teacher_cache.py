"""Teacher cache: lookups equal the live teacher, resume, corruption, staleness, 2 ranks, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from datasets import Dataset
from transformers import BertConfig, BertModel

from mmkd import cli
from mmkd.corpus.schema import load_corpus, make_corpus, save_corpus
from mmkd.data.collate import MMKDCollator
from mmkd.errors import MMKDError
from mmkd.models.teacher import load_teacher
from mmkd.teacher_cache import TeacherCache, build_teacher_cache
from mmkd.teacher_cache.reader import CachedTeacherCollator
from mmkd.train import struct_bank

MAX_LENGTH = 16
SHARD_SIZE = 3
SRC = [
    "Open the file.",
    "Save changes to the document before closing?",
    "The quick brown fox jumps over the lazy dog, again and again, until the dog wakes up and chases it.",
    "Café au lait: naïve résumé, 42 items.",
    "Could not connect to server.",
    "Print",
    "Delete all selected messages permanently?",
    "Network unreachable",
]
# 12 rows, 8 distinct sentences (the first four in two languages): shards of 3, 3 and 2 sentences.
TRAIN = [{"src": s, "tgt": f"{lang}: {s}", "lang": lang, "alignment": None}
         for s in SRC for lang in (("de", "fr") if s in SRC[:4] else ("de",))]


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    rows = {"train": TRAIN, **{split: [{"src": f"{split} only.", "tgt": "x", "lang": "de", "alignment": None}]
                                   for split in ("dev", "test")}}
    save_corpus(make_corpus(rows), {}, out)
    return out


@pytest.fixture(scope="module")
def train(corpus_dir) -> Dataset:
    return load_corpus(corpus_dir)["train"]


@pytest.fixture(scope="module")
def built(teacher, train, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "train"
    build_teacher_cache(teacher, train, out, max_length=MAX_LENGTH, batch_size=2, shard_size=SHARD_SIZE,
                        split="train")
    return out


@pytest.fixture
def cache_copy(built, tmp_path) -> Path:
    """A private copy of the built cache, for tests that damage it."""
    return Path(shutil.copytree(built, tmp_path / "cache"))


def open_cache(path, teacher, train, max_length=MAX_LENGTH) -> TeacherCache:
    return TeacherCache.open(path, teacher=teacher, corpus_split=train, max_length=max_length)


def collated(teacher, train, rows):
    collator = MMKDCollator(student_tokenizer=teacher.tokenizer, teacher_tokenizer=teacher.tokenizer,
                            max_length=MAX_LENGTH)
    return collator([{**train[row], "index": row} for row in rows])


def test_lookup_equals_live_teacher_at_the_positions_training_reads(built, teacher, train):
    cache = open_cache(built, teacher, train)
    rows = [11, 4, 8, 0, 1]  # shards 2, 0, 1; row 4 is the truncated sentence; rows 0 and 1 share theirs
    batch = collated(teacher, train, rows)
    live = teacher.encode(batch["teacher_input_ids"], batch["teacher_attention_mask"])
    cached = cache.lookup(batch)

    read = batch["teacher_token_mask"]
    assert torch.equal(cached.attention_mask, batch["teacher_attention_mask"])
    assert cached.token_states.dtype == torch.float16 and cached.token_states.shape == live.token_states.shape
    torch.testing.assert_close(cached.token_states[read].float(), live.token_states[read], atol=2e-3, rtol=1e-3)
    assert not cached.token_states[~read].any()  # [CLS], [SEP], [UNK] and padding are not stored
    torch.testing.assert_close(cached.sentence_embedding.float(), live.sentence_embedding, atol=1e-3, rtol=1e-3)
    assert int(batch["teacher_attention_mask"][1].sum()) == MAX_LENGTH  # row 4 is truncated
    assert torch.equal(cache.sentence_embeddings(rows), cached.sentence_embedding)  # SentA's targets alone


def test_the_collator_with_the_cache_adds_the_lookup_and_survives_pickling(built, teacher, train):
    import pickle

    cache = open_cache(built, teacher, train)
    plain = MMKDCollator(student_tokenizer=teacher.tokenizer, teacher_tokenizer=teacher.tokenizer,
                         max_length=MAX_LENGTH)
    in_worker = pickle.loads(pickle.dumps(CachedTeacherCollator(plain, cache)))  # as DataLoader workers get it
    assert len(pickle.dumps(cache)) < 10_000  # the memory maps are not pickled
    examples = [{**train[row], "index": row} for row in (3, 7)]
    batch = in_worker(examples)
    expected = cache.lookup(plain(examples))
    assert torch.equal(batch["teacher_token_states"], expected.token_states)
    assert torch.equal(batch["teacher_sentence_embedding"], expected.sentence_embedding)


def test_struct_bank_draws_distinct_sentences_from_the_seed(built, train):
    cache = TeacherCache(built)
    bank = struct_bank(cache, 4, seed=0)
    assert bank.shape == (4, cache.sentence_size) and bank.dtype == torch.float32
    assert torch.equal(bank, struct_bank(cache, 4, seed=0)) and not torch.equal(bank, struct_bank(cache, 4, seed=1))
    every = {tuple(row.tolist()) for row in cache.sentence_embeddings(range(len(cache))).float()}
    assert {tuple(row.tolist()) for row in bank} <= every and len({tuple(row.tolist()) for row in bank}) == 4
    distinct = len(set(train["src"]))
    assert len(struct_bank(cache, distinct, seed=0)) == distinct and struct_bank(cache, 0, seed=0) is None
    with pytest.raises(MMKDError, match=rf"struct_bank_size={distinct + 1} is more than the {distinct} distinct"):
        struct_bank(cache, distinct + 1, seed=0)


def test_manifest_and_shards(built, train):
    manifest = json.loads((built / "manifest.json").read_text())
    assert (manifest["num_examples"], manifest["num_sentences"], manifest["shard_size"]) == (12, 8, SHARD_SIZE)
    assert [(s["start"], s["stop"]) for s in manifest["shards"]] == [(0, 3), (3, 6), (6, 8)]
    assert manifest["layer"] == 6 and len(manifest["sentence_pipeline_sha256"]) == 64
    assert (manifest["max_length"], manifest["dtype"], manifest["hidden_size"]) == (MAX_LENGTH, "float16", 384)
    tokens = np.load(built / "shard-00000.tokens.npy", mmap_mode="r")
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.float16
    assert not list(built.glob("*offsets*"))
    read = [int(collated(load_teacher(), train, [row])["teacher_token_mask"].sum()) for row in (0, 2, 4)]
    assert tokens.shape[0] == sum(read)  # the shard's three sentences, without [CLS] and [SEP]
    assert manifest["format"] == 2 and manifest["corpus_fingerprint"] == train._fingerprint
    index = np.load(built / "index.npy")
    assert [SRC[i] for i in index] == train["src"]
    assert not list(built.glob("*.tmp"))


def test_lookup_refuses_a_batch_tokenised_otherwise_and_rows_out_of_range(built, teacher, train):
    cache = open_cache(built, teacher, train)
    batch = collated(teacher, train, [5, 9])  # the truncated sentence, and "Print": [CLS] print [SEP]
    assert cache.lookup(batch).token_states.shape == (2, MAX_LENGTH, 384)
    shorter = {**batch, "teacher_token_mask": batch["teacher_token_mask"][:, :4]}
    with pytest.raises(MMKDError, match=r"rows \[5\] have another number of teacher tokens"):
        cache.lookup(shorter)
    with pytest.raises(IndexError, match="out of range"):
        cache.lookup({**batch, "index": torch.tensor([12, 0])})


def test_resume_rebuilds_only_the_missing_shard(cache_copy, built, teacher, train):
    # A build killed while writing shard 1: no json, a half-written array under its temporary name.
    (cache_copy / "shard-00001.json").unlink()
    (cache_copy / "shard-00001.tokens.npy.999.tmp").write_bytes(b"half an array")
    kept = {p.name: p.stat().st_mtime_ns for p in cache_copy.glob("shard-0000[02].*")}

    summary = build_teacher_cache(teacher, train, cache_copy, max_length=MAX_LENGTH, batch_size=2,
                                  shard_size=SHARD_SIZE)

    assert (summary.built, summary.kept) == ([1], [0, 2])
    assert {p.name: p.stat().st_mtime_ns for p in cache_copy.glob("shard-0000[02].*")} == kept
    assert not list(cache_copy.glob("*.tmp"))
    original = json.loads((built / "shard-00001.json").read_text())
    assert json.loads((cache_copy / "shard-00001.json").read_text())["tokens"] == original["tokens"]
    batch = collated(teacher, train, range(12))
    cached = open_cache(cache_copy, teacher, train).lookup(batch)
    expected = open_cache(built, teacher, train).lookup(batch)
    torch.testing.assert_close(cached.token_states.float(), expected.token_states.float(), atol=2e-3, rtol=0)


def test_half_built_cache_never_loads(cache_copy, teacher, train):
    (cache_copy / "manifest.json").unlink()
    with pytest.raises(MMKDError, match="manifest.json: no teacher cache here"):
        open_cache(cache_copy, teacher, train)


def damage_file(path: Path, damage: str) -> None:
    data = path.read_bytes()
    if damage == "flip":
        path.write_bytes(data[:-40] + bytes(b ^ 0xFF for b in data[-40:]))
    elif damage == "truncate":
        path.write_bytes(data[:-10])
    else:
        path.unlink()


@pytest.mark.parametrize("damage, file", [
    ("truncate", "shard-00002.sentence.npy"), ("delete", "shard-00000.bounds.npy"), ("delete", "shard-00001.json"),
])
def test_damaged_shard_is_refused_by_name_at_open_without_hashing(cache_copy, teacher, train, damage, file,
                                                                  monkeypatch):
    from mmkd.teacher_cache import store

    damage_file(cache_copy / file, damage)
    monkeypatch.setattr(store, "file_sha256", lambda path: pytest.fail(f"{path} hashed at open"))
    with pytest.raises(MMKDError, match=file.replace(".", r"\.")):
        open_cache(cache_copy, teacher, train)


def test_corrupt_bytes_are_found_by_verify_and_rebuilt_by_a_rerun(cache_copy, built, teacher, train, capsys):
    damage_file(cache_copy / "shard-00001.tokens.npy", "flip")  # same size: only a checksum sees it
    open_cache(cache_copy, teacher, train)  # opening does not hash
    args = ["cache-teacher", "--verify", "--out", str(cache_copy)]
    assert cli.main(args) == 2
    assert "shard-00001.tokens.npy is corrupt" in capsys.readouterr().err
    summary = build_teacher_cache(teacher, train, cache_copy, max_length=MAX_LENGTH, batch_size=2,
                                  shard_size=SHARD_SIZE)
    assert (summary.built, summary.kept) == ([1], [0, 2])
    assert "shard-00001.tokens.npy is corrupt" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert "every sha256 as recorded" in capsys.readouterr().out


def test_a_full_disk_is_a_clear_error_not_a_crash(cache_copy, teacher, train, monkeypatch):
    import errno

    from mmkd.teacher_cache import store

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    (cache_copy / "shard-00002.json").unlink()
    monkeypatch.setattr(store.os, "posix_fallocate", no_space)
    with pytest.raises(MMKDError, match="the disk is full .*shard 2.*rerun the same command"):
        build_teacher_cache(teacher, train, cache_copy, max_length=MAX_LENGTH, batch_size=2, shard_size=SHARD_SIZE)
    assert not list(cache_copy.glob("shard-00002.*"))


def test_an_older_cache_format_is_refused_by_name(cache_copy, teacher, train):
    manifest = json.loads((cache_copy / "manifest.json").read_text())
    (cache_copy / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))
    with pytest.raises(MMKDError, match="manifest.json: teacher cache format 1, this version reads 2"):
        open_cache(cache_copy, teacher, train)


def test_the_same_split_is_recognised_by_fingerprint_without_reading_its_sentences(built, teacher, train,
                                                                                  monkeypatch):
    from mmkd.teacher_cache import identity

    monkeypatch.setattr(identity, "split_sources", lambda *args: pytest.fail("English sentences read"))
    assert len(open_cache(built, teacher, train)) == 12


@pytest.fixture(scope="module")
def other_teacher(teacher_dir, tmp_path_factory):
    """A 2-layer BERT with random weights and the packaged teacher's tokenizer."""
    out = tmp_path_factory.mktemp("other_teacher")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    BertModel(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(teacher_dir) / name, out / name)
    return load_teacher(str(out))


@pytest.mark.parametrize("field", ["weights_sha256", "tokenizer_sha256", "layer", "max_length",
                                   "corpus_sha256"])
def test_stale_cache_is_refused_naming_the_field(built, teacher, other_teacher, train, field):
    max_length = MAX_LENGTH + 1 if field == "max_length" else MAX_LENGTH
    if field == "weights_sha256":
        teacher = other_teacher
    elif field == "tokenizer_sha256":
        tokenizer = type(teacher.tokenizer).from_pretrained(teacher.tokenizer.name_or_path)
        tokenizer.add_tokens(["mmkdzzz"])
        teacher = dataclasses.replace(teacher, tokenizer=tokenizer)
    elif field == "layer":
        teacher = dataclasses.replace(teacher, layer=-2)
    elif field == "corpus_sha256":
        train = Dataset.from_dict({"src": [*train["src"][:-1], "Network unreachable!"]})
    with pytest.raises(MMKDError, match=rf"stale teacher cache \({field}: cache .*rebuild"):
        open_cache(built, teacher, train, max_length)


def test_another_corpus_is_refused_naming_both_corpus_directories(cache_copy, teacher, train, corpus_dir, tmp_path):
    manifest = json.loads((cache_copy / "manifest.json").read_text())
    (cache_copy / "manifest.json").write_text(json.dumps({**manifest, "corpus_path": str(corpus_dir)}))
    other = Dataset.from_dict({"src": [*train["src"][:-1], "Network unreachable!"]})
    with pytest.raises(MMKDError, match=rf"corpus: {tmp_path / 'other'}'s split is not the train split of "
                                        rf"{corpus_dir} that the cache was built from"):
        TeacherCache.open(cache_copy, teacher=teacher, corpus_split=other, max_length=MAX_LENGTH,
                          corpus_dir=tmp_path / "other")


def test_build_refuses_a_directory_holding_another_cache(cache_copy, teacher, train):
    before = sorted(p.name for p in cache_copy.iterdir())
    with pytest.raises(MMKDError, match="other inputs .*max_length: cache 16, now 20"):
        build_teacher_cache(teacher, train, cache_copy, max_length=20, shard_size=SHARD_SIZE)
    assert sorted(p.name for p in cache_copy.iterdir()) == before


def build_on_rank(rank: int, port: int, teacher, train, out: Path) -> None:
    """One rank as the launcher starts it: rank and rendezvous in the environment, no process group."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    summary = build_teacher_cache(teacher, train, out, max_length=MAX_LENGTH, batch_size=2,
                                  shard_size=SHARD_SIZE, split="train")
    (out / f"rank{rank}.built").write_text(json.dumps(summary.built))


@pytest.mark.slow
def test_two_ranks_build_the_same_cache_as_one(built, teacher, train, tmp_path, no_process_group):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "two_ranks"
    # fork: the ranks inherit the loaded teacher instead of importing and loading it again (~10 s each)
    mp.start_processes(build_on_rank, args=(port, teacher, train, out), nprocs=2, start_method="fork")

    assert json.loads((out / "rank0.built").read_text()) == [0, 2]
    assert json.loads((out / "rank1.built").read_text()) == [1]
    assert (out / "manifest.json").read_text() == (built / "manifest.json").read_text()
    for name in ("index.npy", *(f"shard-{k:05d}.bounds.npy" for k in range(3))):
        assert np.array_equal(np.load(out / name), np.load(built / name)), name
    for name in (f"shard-{k:05d}.{a}.npy" for k in range(3) for a in ("tokens", "sentence")):
        np.testing.assert_allclose(np.load(out / name), np.load(built / name), atol=2e-3, err_msg=name)


def test_cli_builds_resumes_and_prints_a_summary(corpus_dir, tmp_path, capsys):
    # as `deepspeed --module mmkd.teacher_cache ARGS` runs it: --local_rank=N before ARGS
    args = ["cache-teacher", "--local_rank=0", "--split", "train", "--out", str(tmp_path / "c"),
            "--max-length", str(MAX_LENGTH), "--batch-size", "4", "--shard-size", "4"]
    assert cli.main([*args, "--corpus", str(corpus_dir)]) == 0
    assert "12 examples (8 distinct sentences)" in capsys.readouterr().out
    assert cli.main([*args, "--corpus", str(corpus_dir)]) == 0
    assert "built 0 shards, kept 2" in capsys.readouterr().out
    assert cli.main([*args, "--corpus", str(tmp_path / "nothing")]) == 2
    assert "not a corpus directory" in capsys.readouterr().err


def test_a_cache_of_the_same_inputs_in_an_older_format_is_rebuilt_in_place(cache_copy, teacher, train, capsys):
    from mmkd.commands.pipeline import cache_is_current

    manifest = json.loads((cache_copy / "manifest.json").read_text())
    (cache_copy / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))
    (cache_copy / "shard-00000.offsets.npy").write_bytes(b"format 1 leftover")
    assert not cache_is_current(cache_copy, MAX_LENGTH)
    summary = build_teacher_cache(teacher, train, cache_copy, max_length=MAX_LENGTH, batch_size=2,
                                  shard_size=SHARD_SIZE)
    assert (summary.built, summary.kept) == ([0, 1, 2], [])
    assert "format 1, rebuilding it in format 2" in capsys.readouterr().out
    assert cache_is_current(cache_copy, MAX_LENGTH) and not list(cache_copy.glob("*offsets*"))
    assert not cache_is_current(cache_copy, MAX_LENGTH + 1)  # another max_length is not this stage's cache


def test_a_process_group_of_another_size_than_world_size_is_refused(monkeypatch):
    """A group inherited through fork (world 1) while the environment says 2 ranks: every rank would
    think it is rank 0 and build every shard into the same folder."""
    from mmkd.engine import init_distributed
    from mmkd.teacher_cache.build import distributed_context

    init_distributed()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(MMKDError, match=r"process group of 1 rank\(s\) but WORLD_SIZE=2"):
        distributed_context()

"""Training micro-batches (mmkd.train.MicroBatches) from a pre-tokenised split: collated (assembly,
masking, matching) in DataLoader workers they equal those collated in the training process, no
tokenizer is called, and a run resumed from the loop position gets exactly the batches left."""

from __future__ import annotations

import itertools

import pytest
import torch
from datasets import Dataset

from mmkd.data.collate import MMKDCollator
from mmkd.data.sampling import LanguageSampler
from mmkd.train import IndexedSplit, MicroBatches

MICRO = 4
WORDS = ["the", "house", "is", "big", "and", "garden", "small", "station", "river", "near"]
PAIRS = [{"src": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(2 + i % 7)),
          "tgt": " ".join(WORDS[(i * 3 + k) % len(WORDS)] for k in range(1 + i % 5)),
          "lang": ("de", "fr", "ja")[i % 3], "alignment": [[0, 0]]} for i in range(30)]


class RowsInWorkers:
    """The collator plus the id of the worker that collated the batch (-1: the training process)."""

    def __init__(self, collator: MMKDCollator) -> None:
        self.collator = collator

    def set_epoch(self, epoch: int) -> None:
        self.collator.set_epoch(epoch)

    def __call__(self, examples):
        info = torch.utils.data.get_worker_info()
        return {**self.collator(examples), "worker": -1 if info is None else info.id}


def micro_batches(split, collator, position, num_workers):
    sampler = LanguageSampler(split["lang"], 0.5, seed=5, lengths=collator.columns.pair_lengths(split),
                              group_size=MICRO, group_window=2)
    return MicroBatches(IndexedSplit(split), sampler, RowsInWorkers(collator), MICRO, 1, num_workers, **position)


def batches(split, collator, position, num_workers, count):
    return list(itertools.islice(micro_batches(split, collator, position, num_workers), count))


def assert_same_batches(first, second) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        for key, value in a.items():
            if key != "worker":
                assert torch.equal(value, b[key]) if torch.is_tensor(value) else value == b[key], key


def test_workers_collate_the_same_batches_and_resume_exactly(student_tokenizer, teacher_tokenizer, monkeypatch):
    collator = MMKDCollator(student_tokenizer, teacher_tokenizer, max_length=12, mlm_probability=0.5, seed=1)
    split = collator.columns.of_split(Dataset.from_list(PAIRS))
    for tokenizer in (student_tokenizer, teacher_tokenizer):  # workers are forked: they inherit the patch
        monkeypatch.setattr(type(tokenizer), "__call__", lambda *args, **kwargs: pytest.fail("tokenised per batch"))
    steps = len(PAIRS) // MICRO + 3  # into the second epoch
    in_process = batches(split, collator, {"epoch": 0, "consumed": 0}, 0, steps)
    stream = micro_batches(split, collator, {"epoch": 0, "consumed": 0}, 2)
    in_workers = list(itertools.islice(stream, steps))
    assert {batch["worker"] for batch in in_process} == {-1} and {batch["worker"] for batch in in_workers} == {0, 1}
    assert {"epoch": stream.epoch, "consumed": stream.consumed} == {"epoch": 1, "consumed": 3 * MICRO}
    assert_same_batches(in_workers, in_process)
    assert not torch.equal(in_process[0]["tlm_input_ids"], in_process[len(PAIRS) // MICRO]["tlm_input_ids"])

    for stop in (2, len(PAIRS) // MICRO + 1):  # a checkpoint after `stop` batches, in each epoch
        position = {"epoch": 0, "consumed": stop * MICRO} if stop * MICRO < len(PAIRS) // MICRO * MICRO else \
            {"epoch": 1, "consumed": (stop - len(PAIRS) // MICRO) * MICRO}
        resumed = batches(split, collator, position, 2, steps - stop)
        assert_same_batches(resumed, in_process[stop:])

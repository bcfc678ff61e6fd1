"""TLM pair lengths for length grouping: the collator's lengths, computed once per split (cached)."""

from __future__ import annotations

from datasets import Dataset

from mmkd.data.collate import MMKDCollator
from mmkd.data.lengths import tlm_pair_lengths

PAIRS = {"src": ["Open the file.", "Save it", "Close all open windows now, please"],
         "tgt": ["Ouvrez le fichier.", "Sauvez", "Fermez toutes les fenêtres"], "lang": ["fr"] * 3,
         "alignment": [None] * 3}


def test_lengths_are_the_collators_tlm_lengths(teacher_tokenizer):
    split = Dataset.from_dict(PAIRS)
    for max_length in (8, 64):
        collator = MMKDCollator(teacher_tokenizer, teacher_tokenizer, max_length=max_length)
        batch = collator([dict(row, index=i) for i, row in enumerate(split)])
        assert tlm_pair_lengths(split, teacher_tokenizer, max_length).tolist() == \
            batch["tlm_attention_mask"].sum(dim=1).tolist()


def test_lengths_of_a_saved_split_are_cached(tmp_path, teacher_tokenizer):
    Dataset.from_dict(PAIRS).save_to_disk(tmp_path / "split")
    split = Dataset.load_from_disk(tmp_path / "split")
    first = tlm_pair_lengths(split, teacher_tokenizer, 64)
    cached = sorted(path.name for path in (tmp_path / "split").glob("cache-*.arrow"))
    assert len(cached) == 1
    assert tlm_pair_lengths(Dataset.load_from_disk(tmp_path / "split"), teacher_tokenizer, 64).tolist() == \
        first.tolist()
    assert sorted(path.name for path in (tmp_path / "split").glob("cache-*.arrow")) == cached

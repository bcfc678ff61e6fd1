"""Language sampling: p_l, empirical frequencies, cycling, determinism, rank shards, exact resume."""

from __future__ import annotations

from collections import Counter

import pytest
from datasets import Dataset

from mmkd.data.sampling import LanguageSampler, language_probabilities
from mmkd.errors import MMKDError

LANGS = ["de"] * 600 + ["fr"] * 150 + ["xh"] * 10  # interleaved below so rows are not sorted by language
ROWS = [LANGS[(7 * i) % len(LANGS)] for i in range(len(LANGS))]  # 7 is coprime with 760: a permutation


@pytest.mark.parametrize(("alpha", "expected"), [
    (1.0, {"de": 0.8, "fr": 0.2, "xh": 0.0}),
    (0.5, {"de": 2 / 3, "fr": 1 / 3, "xh": 0.0}),  # sqrt: 10 and 5
    (0.0, {"de": 0.5, "fr": 0.5, "xh": 0.0}),
])
def test_language_probabilities_by_hand(alpha, expected):
    probabilities = language_probabilities({"de": 100, "fr": 25, "xh": 0}, alpha)
    assert list(probabilities) == ["de", "fr", "xh"]
    assert probabilities == pytest.approx(expected)


def test_language_probabilities_refuse_bad_alpha_and_empty_counts():
    with pytest.raises(MMKDError, match="alpha"):
        language_probabilities({"de": 1}, -0.5)
    with pytest.raises(MMKDError, match="no language"):
        language_probabilities({"de": 0}, 1.0)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_empirical_language_frequencies_follow_p(alpha):
    sampler = LanguageSampler(ROWS, alpha, num_samples=20_000, seed=1)
    drawn = Counter(ROWS[i] for i in sampler)
    expected = language_probabilities({"de": 600, "fr": 150, "xh": 10}, alpha)
    for lang, p in expected.items():  # sd of a frequency <= 0.0036 at 20k draws
        assert abs(drawn[lang] / 20_000 - p) < 0.015, (lang, drawn[lang] / 20_000, p)


def test_small_languages_cycle_through_one_permutation_per_epoch():
    sampler = LanguageSampler(ROWS, 0.0, seed=2)  # uniform: ~253 xh draws over its 10 rows
    xh_rows = [i for i in sampler if ROWS[i] == "xh"]
    assert len(xh_rows) > 200
    cycle = xh_rows[:10]
    assert sorted(cycle) == sorted(i for i, lang in enumerate(ROWS) if lang == "xh")
    assert all(xh_rows[k] == cycle[k % 10] for k in range(len(xh_rows)))
    de_counts = Counter(i for i in sampler if ROWS[i] == "de")  # ~253 draws over 600 rows: none twice
    assert max(de_counts.values()) == 1


def test_epochs_are_deterministic_in_seed_and_epoch():
    def epoch_list(seed, epoch):
        sampler = LanguageSampler(ROWS, 0.5, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    first = epoch_list(0, 0)
    assert len(first) == len(ROWS)
    assert first == epoch_list(0, 0)
    assert first != epoch_list(0, 1)
    assert first != epoch_list(1, 0)


def test_ranks_take_disjoint_strides_of_one_global_sequence():
    global_order = LanguageSampler(ROWS, 0.5, num_samples=1000, seed=3).global_indices().tolist()
    shards = [list(LanguageSampler(ROWS, 0.5, num_samples=1000, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert [len(shard) for shard in shards] == [334, 334, 334]  # 1000 padded to 1002 by wrapping
    assert len(LanguageSampler(ROWS, 0.5, num_samples=1000, seed=3, rank=2, world_size=3)) == 334
    interleaved = [shards[k % 3][k // 3] for k in range(1002)]
    assert interleaved == global_order + global_order[:2]


def test_resume_skips_exactly_the_consumed_samples_even_on_another_world_size():
    full = [list(LanguageSampler(ROWS, 1.0, seed=4, rank=r, world_size=2)) for r in range(2)]
    for r in range(2):
        resumed = LanguageSampler(ROWS, 1.0, seed=4, rank=r, world_size=2)
        resumed.set_epoch(0, consumed_samples=2 * 37)
        assert list(resumed) == full[r][37:]
        assert len(resumed) == len(full[r]) - 37
    single = LanguageSampler(ROWS, 1.0, seed=4)
    single.set_epoch(0, consumed_samples=2 * 37)
    assert list(single) == [full[k % 2][k // 2] for k in range(2 * 37, len(ROWS))]
    with pytest.raises(ValueError, match="multiple of world_size"):
        LanguageSampler(ROWS, 1.0, world_size=2).set_epoch(0, consumed_samples=3)


def test_reads_a_datasets_lang_column():
    column = Dataset.from_dict({"lang": ROWS})["lang"]
    assert list(LanguageSampler(column, 0.5, seed=5)) == list(LanguageSampler(ROWS, 0.5, seed=5))
    assert LanguageSampler(column, 0.5).counts == {"de": 600, "fr": 150, "xh": 10}


LENGTHS = [5 + (37 * i) % 120 for i in range(len(ROWS))]  # 5..124 tokens, spread over the rows


def grouped(rank=0, world=1, seed=6, alpha=0.5, micro=4, window=8, num_samples=None):
    return LanguageSampler(ROWS, alpha, num_samples=num_samples, seed=seed, rank=rank, world_size=world,
                           lengths=LENGTHS, group_size=micro * world, group_window=window)


def micro_batches_of(sampler, micro):
    order = list(sampler)
    return [order[k:k + micro] for k in range(0, len(order) - micro + 1, micro)]


def test_length_grouping_is_deterministic_in_seed_and_epoch():
    first = list(grouped())
    assert first == list(grouped())
    assert first != list(grouped(seed=7))
    later = grouped()
    later.set_epoch(1)
    assert list(later) != first


def test_length_grouping_keeps_each_windows_draw_and_so_the_language_temperature():
    plain = LanguageSampler(ROWS, 0.5, seed=6).global_indices().tolist()
    by_length = grouped().global_indices().tolist()
    window = 4 * 8
    for start in range(0, len(plain), window):
        assert sorted(by_length[start:start + window]) == sorted(plain[start:start + window])
    assert by_length != plain


def test_length_grouped_batches_pad_less_than_ungrouped_ones():
    def efficiency(batches):
        real = sum(LENGTHS[i] for batch in batches for i in batch)
        padded = sum(len(batch) * max(LENGTHS[i] for i in batch) for batch in batches)
        return real / padded

    plain = efficiency(micro_batches_of(LanguageSampler(ROWS, 0.5, seed=6), 4))
    assert plain < 0.75
    for world in (1, 2):
        ranks = [micro_batches_of(grouped(rank=r, world=world), 4) for r in range(world)]
        assert efficiency([batch for batches in ranks for batch in batches]) > 0.9


def test_length_grouped_resume_skips_exactly_the_consumed_samples():
    micro, world = 4, 2
    full = [list(grouped(rank=r, world=world, micro=micro)) for r in range(world)]
    consumed = 11 * micro * world  # 11 micro-batches per rank, across a window boundary (8 per window)
    for r in range(world):
        resumed = grouped(rank=r, world=world, micro=micro)
        resumed.set_epoch(0, consumed_samples=consumed)
        assert list(resumed) == full[r][consumed // world:]


def test_length_grouping_refuses_lengths_of_another_dataset():
    with pytest.raises(ValueError, match="lengths"):
        LanguageSampler(ROWS, 0.5, lengths=LENGTHS[:-1])

"""Projection heads: seeded creation, save/load round trip, bad files."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mmkd.errors import MMKDError
from mmkd.models.heads import HEADS_FILE, ProjectionHeads, create_projection_heads


def test_heads_map_student_to_teacher_size():
    heads = create_projection_heads(24, 40)
    x = torch.randn(5, 24)
    assert heads.word(x).shape == (5, 40)
    assert heads.sentence(x).shape == (5, 40)
    assert (heads.d_student, heads.d_teacher) == (24, 40)


def test_seeded_creation_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = create_projection_heads(8, 16, seed=7)
    after = torch.rand(3)
    second = create_projection_heads(8, 16, seed=7)
    other = create_projection_heads(8, 16, seed=8)
    torch.testing.assert_close(after, expected_next)
    for name, tensor in first.state_dict().items():
        torch.testing.assert_close(tensor, second.state_dict()[name])
    assert not torch.equal(first.word.weight, other.word.weight)
    assert not torch.equal(first.word.weight, first.sentence.weight)


def test_save_load_round_trip(tmp_path):
    heads = create_projection_heads(12, 20, seed=3)
    path = heads.save(tmp_path)
    assert path == tmp_path / HEADS_FILE and path.is_file()
    loaded = ProjectionHeads.load(tmp_path)
    assert (loaded.d_student, loaded.d_teacher) == (12, 20)
    x = torch.randn(4, 12)
    torch.testing.assert_close(loaded.word(x), heads.word(x))
    torch.testing.assert_close(loaded.sentence(x), heads.sentence(x))


def test_sentence_head_of_another_size_round_trips(tmp_path):
    """A teacher whose Dense module changes the size: P_w d_S -> d_T, P_s d_S -> d_E."""
    heads = create_projection_heads(12, 20, seed=3, d_sentence=16)
    assert (heads.d_teacher, heads.d_sentence) == (20, 16)
    assert heads.word.weight.shape == (20, 12) and heads.sentence.weight.shape == (16, 12)
    torch.testing.assert_close(heads.word.weight, create_projection_heads(12, 20, seed=3).word.weight)
    heads.save(tmp_path)
    loaded = ProjectionHeads.load(tmp_path)
    assert (loaded.d_student, loaded.d_teacher, loaded.d_sentence) == (12, 20, 16)
    torch.testing.assert_close(loaded.sentence.weight, heads.sentence.weight)


def test_missing_heads_file_names_it(tmp_path):
    with pytest.raises(MMKDError, match=str(tmp_path / HEADS_FILE)):
        ProjectionHeads.load(tmp_path)


def test_heads_file_with_wrong_tensors_is_refused(tmp_path):
    save_file({"word.weight": torch.zeros(4, 3), "word.bias": torch.zeros(4),
               "sentence.weight": torch.zeros(5, 3), "sentence.bias": torch.zeros(5)}, str(tmp_path / HEADS_FILE))
    with pytest.raises(MMKDError, match="sentence.weight"):
        ProjectionHeads.load(tmp_path)

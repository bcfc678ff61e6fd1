"""The teacher: offline loading, sentence embeddings equal to sentence-transformers', layers, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmkd.errors import MMKDError
from mmkd.models import teacher as teacher_module
from mmkd.models.model_files import file_sha256, weights_sha256
from mmkd.models.pooling import mean_pool
from mmkd.models.teacher import PACKAGED_TEACHER_SHA256, hidden_layer_index, load_teacher

SENTENCES = [
    "Open the file.",
    "The connection to the server was lost while the download was still running.",
    "Héllo wörld",
    "你好",
]


def sentence_transformer_embeddings(directory: str | Path, sentences: list[str]) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(directory), device="cpu")
    return model.encode(sentences, convert_to_tensor=True, batch_size=len(sentences))


def encode(teacher, sentences: list[str]):
    batch = teacher.tokenizer(sentences, padding=True, return_tensors="pt")
    return teacher.encode(batch["input_ids"], batch["attention_mask"]), batch


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


def test_default_teacher_loads_offline_frozen(teacher, teacher_dir):
    assert Path(teacher.name) == Path(teacher_dir)
    assert (teacher.prompt, teacher.hidden_size, teacher.layer) == (None, 384, -1)
    assert [type(module).__name__ for module in teacher.model] == ["Transformer", "Pooling", "Normalize"]
    assert teacher.weights_sha256 == PACKAGED_TEACHER_SHA256
    assert teacher.tokenizer.is_fast
    assert not teacher.model.training
    assert not any(parameter.requires_grad for parameter in teacher.model.parameters())


def test_sentence_embedding_equals_sentence_transformers(teacher, teacher_dir):
    outputs, batch = encode(teacher, SENTENCES)
    expected = sentence_transformer_embeddings(teacher_dir, SENTENCES)
    torch.testing.assert_close(outputs.sentence_embedding, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs.sentence_embedding.norm(dim=1), torch.ones(len(SENTENCES)))
    assert outputs.token_states.shape == (len(SENTENCES), batch["input_ids"].shape[1], 384)
    assert outputs.token_states.dtype == torch.float32 and not outputs.token_states.requires_grad
    assert torch.equal(outputs.attention_mask, batch["attention_mask"])


def test_layer_picks_token_states_but_not_sentence_embedding(teacher, teacher_dir):
    middle = load_teacher(layer=3)
    last_out, batch = encode(teacher, SENTENCES)
    middle_out, _ = encode(middle, SENTENCES)
    with torch.no_grad():
        states = teacher.encoder(**batch, output_hidden_states=True).hidden_states
    torch.testing.assert_close(middle_out.token_states, states[3])
    torch.testing.assert_close(last_out.token_states, states[6])
    torch.testing.assert_close(middle_out.sentence_embedding, last_out.sentence_embedding)


def test_layer_index_counts_the_embeddings_as_layer_zero():
    assert [hidden_layer_index(layer, 6) for layer in (-1, 6, -7, 0, 3, -4)] == [None, None, 0, 0, 3, 3]


def test_layer_out_of_range_is_refused():
    with pytest.raises(MMKDError, match="layer 7"):
        load_teacher(layer=7)


def linked_teacher(teacher_dir: str, out: Path, modules: list[dict], pooling: dict | None) -> Path:
    """A teacher directory sharing the packaged weights (symlinks) with its own ST pipeline config."""
    out.mkdir()
    for item in Path(teacher_dir).iterdir():
        if item.is_file() and item.name != "modules.json":
            (out / item.name).symlink_to(item)
    (out / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (out / "1_Pooling").mkdir()
        (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return out


TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}


@pytest.mark.parametrize("pooling_config", [
    {"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
    {"embedding_dimension": 384, "pooling_mode": "max"},
    {"embedding_dimension": 384, "pooling_mode": "lasttoken"},
    {"embedding_dimension": 384, "pooling_mode": "weightedmean"},
    {"embedding_dimension": 384, "pooling_mode_mean_sqrt_len_tokens": True},
], ids=["cls-legacy", "max", "lasttoken", "weightedmean", "mean_sqrt_len"])
def test_any_pooling_of_the_sentence_transformers_config(teacher_dir, tmp_path, pooling_config):
    directory = linked_teacher(teacher_dir, tmp_path / "linked", [TRANSFORMER, POOLING], pooling_config)
    teacher = load_teacher(str(directory))
    assert teacher.weights_sha256 == PACKAGED_TEACHER_SHA256
    outputs, _ = encode(teacher, SENTENCES)
    expected = sentence_transformer_embeddings(directory, SENTENCES)
    torch.testing.assert_close(outputs.sentence_embedding, expected, atol=1e-5, rtol=1e-5)


def test_plain_hugging_face_encoder_is_mean_pooled(teacher, tmp_path):
    teacher.encoder.save_pretrained(tmp_path / "plain")
    teacher.tokenizer.save_pretrained(tmp_path / "plain")
    plain = load_teacher(str(tmp_path / "plain"))
    assert [type(module).__name__ for module in plain.model] == ["Transformer", "Pooling"]
    outputs, batch = encode(plain, SENTENCES)
    torch.testing.assert_close(outputs.sentence_embedding, mean_pool(outputs.token_states, batch["attention_mask"]))


def test_packaged_sha_mismatch_names_the_weights(monkeypatch, teacher_dir):
    monkeypatch.setattr(teacher_module, "PACKAGED_TEACHER_SHA256", "0" * 64)
    with pytest.raises(MMKDError, match=str(Path(teacher_dir) / "model.safetensors")):
        load_teacher()


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "no-such-teacher"
    with pytest.raises(MMKDError, match=str(missing)):
        load_teacher(str(missing))


def test_unknown_hub_name_offline_names_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MMKDError, match="mmkd-tests/no-such-model"):
        load_teacher("mmkd-tests/no-such-model")


def test_directory_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(MMKDError, match="not a Hugging Face model directory"):
        load_teacher(str(tmp_path))


def test_weights_sha256_of_sharded_checkpoint_covers_every_shard(tmp_path):
    for index, payload in enumerate([b"first", b"second"], start=1):
        (tmp_path / f"model-0000{index}-of-00002.safetensors").write_bytes(payload)
    combined = weights_sha256(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"changed")
    assert weights_sha256(tmp_path) != combined
    assert len(combined) == 64 and combined != file_sha256(tmp_path / "model-00001-of-00002.safetensors")

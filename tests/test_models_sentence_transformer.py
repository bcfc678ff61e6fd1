"""The student's sentence-transformers pipeline encodes exactly what `mmkd eval retrieval` scores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmkd.evaluation.retrieval import student_encoder
from mmkd.models.sentence_transformer import save_sentence_transformer
from mmkd.models.student import load_student

D_TEACHER = 24
TEXTS = ["Open the file.", "Save it", "Ouvrez le fichier et fermez-le ensuite.", "Sauvez", "无法打开文件"]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, teacher_tokenizer):
    """A tiny student directory (random 2-layer BERT masked LM, hidden 16) with seeded heads to d_T 24."""
    from transformers import BertConfig, BertForMaskedLM

    plain = tmp_path_factory.mktemp("plain")
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(teacher_tokenizer), hidden_size=16, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
                    ).save_pretrained(plain)
    teacher_tokenizer.save_pretrained(plain)
    student = load_student(str(plain), teacher_hidden_size=D_TEACHER)
    directory = tmp_path_factory.mktemp("student")
    return student.save(directory)


@pytest.mark.parametrize("normalize", [False, True])
def test_sentence_transformer_encodes_what_retrieval_scores(student_dir, tmp_path, capfd, normalize):
    from sentence_transformers import SentenceTransformer

    st_dir = save_sentence_transformer(load_student(student_dir), tmp_path / "st", max_length=32, normalize=normalize)
    capfd.readouterr()
    model = SentenceTransformer(str(st_dir), device="cpu")
    loading = capfd.readouterr()
    assert "LOAD REPORT" not in loading.out + loading.err  # no missing pooler, no unexpected MLM head
    by_st = model.encode(TEXTS, convert_to_tensor=True, batch_size=2)
    student = load_student(student_dir)
    scored = student_encoder(student, max_length=32, batch_size=3, device=torch.device("cpu"),
                             normalize=normalize)(TEXTS)
    assert by_st.shape == scored.shape == (len(TEXTS), D_TEACHER)
    assert float((by_st.cpu() - scored).abs().max()) < 1e-5
    norms = scored.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5) is normalize
    dense = model[2]
    assert dense.linear.bias is None and isinstance(dense.activation_function, nn.Identity)
    torch.testing.assert_close(dense.linear.weight, student.heads.sentence.weight, rtol=0, atol=0)
    assert len(model) == (4 if normalize else 3)

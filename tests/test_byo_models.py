"""Bring your own models: sentence-transformers teachers of any layout (Dense + Normalize, last-token
pooling, a prompt, a Dense that changes the embedding size) give sentence-transformers' own embedding,
fingerprint their pipeline, cache and train (the resizing one through init-student, head fit and export);
students of other families (BERT, XLM-R, DistilBERT) keep their vocabulary, get fitted heads and train; a
RoBERTa-family source copied into a new vocabulary keeps its position offset.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
)

from mmkd.corpus.schema import load_corpus
from mmkd.errors import MMKDError
from mmkd.models.heads import create_projection_heads
from mmkd.models.init_student import bert_from_roberta, make_student
from mmkd.models.pooling import mean_pool
from mmkd.models.student import load_student
from mmkd.models.teacher import load_teacher
from mmkd.teacher_cache import TeacherCache, build_teacher_cache
from tiny_setup import build_tiny, st_teacher, subprocess_env, synthetic_pairs

REPO = Path(__file__).resolve().parents[1]
TEACHER_KINDS = ("dense_normalize", "lasttoken", "prompt")
RESIZE = "dense_resize"  # Dense 32 -> 24: token states d_T = 32, sentence embeddings d_E = 24 (tiny_setup.st_teacher)
STUDENT_KINDS = ("bert", "xlm-roberta", "distilbert")
SENTENCES = ["the red cat sees the dog", "the old tree likes the small bird", "the house finds the cat"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, teacher_dir) -> Path:
    root = build_tiny(tmp_path_factory.mktemp("byo"), teacher_dir)
    for kind in (*TEACHER_KINDS, RESIZE):
        st_teacher(root / "teacher", root / f"teacher_{kind}", kind)
    return root


def st_embeddings(directory: Path, sentences: list[str]) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(directory), device="cpu").encode(sentences, convert_to_tensor=True)


@pytest.mark.parametrize("kind", (*TEACHER_KINDS, RESIZE))
def test_sentence_embedding_is_sentence_transformers_own(tiny, kind):
    teacher = load_teacher(str(tiny / f"teacher_{kind}"))
    batch = teacher.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    outputs = teacher.encode(batch["input_ids"], batch["attention_mask"], SENTENCES)
    torch.testing.assert_close(outputs.sentence_embedding, st_embeddings(tiny / f"teacher_{kind}", SENTENCES),
                               atol=1e-5, rtol=1e-5)
    plain = load_teacher(str(tiny / "teacher")).encode(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(outputs.token_states, plain.token_states)  # the Transformer module's states
    assert (teacher.prompt == "query: ") == (kind == "prompt")


def test_prompt_teacher_needs_the_texts(tiny):
    teacher = load_teacher(str(tiny / "teacher_prompt"))
    batch = teacher.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="prompt"):
        teacher.encode(batch["input_ids"], batch["attention_mask"])


def test_pipeline_fingerprint_covers_modules_weights_and_prompt(tiny):
    directories = [tiny / f"teacher_{kind}" for kind in (*TEACHER_KINDS, RESIZE)] + [tiny / "teacher"]  # plain: mean
    assert len({load_teacher(str(directory)).sentence_pipeline_sha256() for directory in directories}) == 5
    teacher = load_teacher(str(tiny / "teacher_dense_normalize"))
    before = teacher.sentence_pipeline_sha256()
    with torch.no_grad():
        teacher.model[2].linear.weight[0, 0] += 1e-3
    assert teacher.sentence_pipeline_sha256() != before


def test_dense_that_changes_the_size_gives_the_teacher_two_sizes(tiny):
    teacher = load_teacher(str(tiny / f"teacher_{RESIZE}"))
    assert (teacher.hidden_size, teacher.sentence_size) == (32, 24)
    batch = teacher.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    outputs = teacher.encode(batch["input_ids"], batch["attention_mask"], SENTENCES)
    assert outputs.token_states.shape[-1] == 32 and outputs.sentence_embedding.shape == (len(SENTENCES), 24)
    assert load_teacher(str(tiny / "teacher")).sentence_size == 32


def resize_cache(tiny: Path) -> Path:
    """The train split's cache of the resizing teacher (built once: a second call keeps every shard)."""
    cache = tiny / f"cache_{RESIZE}"
    build_teacher_cache(load_teacher(str(tiny / f"teacher_{RESIZE}")), load_corpus(tiny / "corpus")["train"], cache,
                        max_length=32, split="train", corpus_path=str(tiny / "corpus"))
    return cache


def test_cache_of_a_resizing_teacher_records_and_serves_both_sizes(tiny):
    teacher, train = load_teacher(str(tiny / f"teacher_{RESIZE}")), load_corpus(tiny / "corpus")["train"]
    cache_dir = resize_cache(tiny)
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert (manifest["hidden_size"], manifest["sentence_size"]) == (32, 24)
    cache = TeacherCache.open(cache_dir, teacher=teacher, corpus_split=train, max_length=32)
    rows = [0, 7, 30]
    texts = [train[row]["src"] for row in rows]
    batch = teacher.tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    expected = teacher.encode(batch["input_ids"], batch["attention_mask"], texts)
    torch.testing.assert_close(cache.sentence_embeddings(rows).float(), expected.sentence_embedding,
                               atol=2e-3, rtol=2e-3)
    assert cache.sentence_embeddings(rows).shape == (3, 24)
    with pytest.raises(MMKDError, match="sentence_size: cache 24, now 32"):
        TeacherCache.open(cache_dir, teacher=load_teacher(str(tiny / "teacher_dense_normalize")), corpus_split=train,
                          max_length=32)


def test_a_cache_recorded_before_the_sentence_size_still_opens_and_resumes(tiny, tmp_path):
    """Caches written before `sentence_size` was recorded (teachers with d_E = d_T only) keep working."""
    old = tmp_path / "old_cache"
    shutil.copytree(tiny / "cache_train", old)
    for record in old.glob("*.json"):
        data = json.loads(record.read_text())
        (data.get("identity") or data).pop("sentence_size")
        record.write_text(json.dumps(data))
    teacher, train = load_teacher(str(tiny / "teacher")), load_corpus(tiny / "corpus")["train"]
    cache = TeacherCache.open(old, teacher=teacher, corpus_split=train, max_length=32)
    assert (cache.hidden_size, cache.sentence_size) == (32, 32)
    torch.testing.assert_close(cache.sentence_embeddings([0, 5]),
                               TeacherCache(tiny / "cache_train").sentence_embeddings([0, 5]))
    summary = build_teacher_cache(teacher, train, old, max_length=32, split="train", corpus_path=str(tiny / "corpus"))
    assert summary.built == [] and summary.kept == [0]


def test_init_student_fits_p_w_onto_token_states_and_p_s_onto_sentence_embeddings(tiny, tmp_path):
    english = list(load_corpus(tiny / "corpus")["train"]["src"])
    student, report = make_student([], source=str(tiny / "student"), teacher=str(tiny / f"teacher_{RESIZE}"),
                                   english=english, keep_vocab=True)
    assert (report.d_student, report.d_teacher, report.d_sentence) == (48, 32, 24)
    assert student.heads.word.weight.shape == (32, 48) and student.heads.sentence.weight.shape == (24, 48)
    teacher = load_teacher(str(tiny / f"teacher_{RESIZE}"))
    s_enc = student.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    t_enc = teacher.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    random_heads = create_projection_heads(48, 32, 0, d_sentence=24)
    with torch.no_grad():
        fitted = student.sentence_embedding(s_enc["input_ids"], s_enc["attention_mask"])
        pooled = mean_pool(student.hidden_states(s_enc["input_ids"], s_enc["attention_mask"]), s_enc["attention_mask"])
        target = teacher.encode(t_enc["input_ids"], t_enc["attention_mask"]).sentence_embedding
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(fitted, target).mean() > cosine(random_heads.sentence(pooled), target).mean()
    saved = student.save(tmp_path / "student")
    assert json.loads((saved / "mmkd_student.json").read_text())["d_sentence"] == 24
    assert load_student(saved, teacher_hidden_size=32, teacher_sentence_size=24).d_sentence == 24
    with pytest.raises(MMKDError, match="d_E = 24"):  # the plain teacher: sentence embeddings of 32
        load_student(saved, teacher_hidden_size=32)


def roberta_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A tiny XLM-R-style tokenizer: Metaspace BPE, <s> x </s></s> y </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                           special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                           special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
                                   model_max_length=64)


def tiny_student_source(root: Path, kind: str) -> Path:
    """A random 2-layer masked LM of `kind` with its own tokenizer (WordPiece from the tiny setup's
    student for BERT and DistilBERT), saved under root/source_<kind>."""
    from transformers import AutoTokenizer

    texts = [text for row in synthetic_pairs() for text in (row["src"], row["tgt"])]
    torch.manual_seed(0)
    if kind == "xlm-roberta":
        tokenizer = roberta_tokenizer(texts)
        model = XLMRobertaForMaskedLM(XLMRobertaConfig(
            vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=96, max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2))
    else:
        tokenizer = AutoTokenizer.from_pretrained(root / "student")
        model = (BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=96, max_position_embeddings=64))
                 if kind == "bert" else
                 DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(tokenizer), dim=48, n_layers=2, n_heads=2,
                                                        hidden_dim=96, max_position_embeddings=64)))
    out = root / f"source_{kind}"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_roberta_family_source_reads_as_a_bert_with_its_position_offset(tiny):
    source = XLMRobertaForMaskedLM.from_pretrained(tiny_student_source(tiny, "xlm-roberta")).eval()
    bert = bert_from_roberta(source)
    assert bert.config.max_position_embeddings == 64
    ids = torch.tensor([[0, 17, 42, 99, 2], [0, 5, 6, 2, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        expected = source(input_ids=ids, attention_mask=mask).logits
        found = bert(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(found[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-5)


def test_roberta_family_source_is_copied_into_a_new_vocabulary(tiny):
    source = tiny_student_source(tiny, "xlm-roberta")
    english = [row["src"] for row in synthetic_pairs()]
    student, report = make_student(english, source=str(source), teacher=str(tiny / "teacher"), vocab_size=200)
    roberta = XLMRobertaForMaskedLM.from_pretrained(source)
    torch.testing.assert_close(student.mlm.bert.embeddings.position_embeddings.weight,
                               roberta.roberta.embeddings.position_embeddings.weight[2:])
    assert report.embeddings is not None and student.tokenizer.cls_token == "[CLS]"


@pytest.mark.parametrize("kind", STUDENT_KINDS)
def test_keep_vocab_student_keeps_its_tokenizer_and_gets_fitted_heads(tiny, kind):
    source = tiny_student_source(tiny, kind)
    corpus = load_corpus(tiny / "corpus")
    english = list(corpus["train"]["src"])
    student, report = make_student([], source=str(source), teacher=str(tiny / "teacher"), english=english,
                                   keep_vocab=True)
    assert report.embeddings is None and student.mlm.config.model_type == kind
    assert student.tokenizer.get_vocab() == PreTrainedTokenizerFast.from_pretrained(source).get_vocab()
    fit = report.head_fit
    assert fit.tokens >= 2 and fit.sentences == len(set(english))
    # the fit beats the seeded random heads it replaced on its own objective
    random_heads = create_projection_heads(student.d_student, student.d_teacher, 0)
    teacher = load_teacher(str(tiny / "teacher"))
    s_enc = student.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    t_enc = teacher.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = student.hidden_states(s_enc["input_ids"], s_enc["attention_mask"])
        pooled = (states * s_enc["attention_mask"][..., None]).sum(1) / s_enc["attention_mask"].sum(1, keepdim=True)
        target = teacher.encode(t_enc["input_ids"], t_enc["attention_mask"]).sentence_embedding
        fitted = torch.nn.functional.cosine_similarity(student.heads.sentence(pooled), target).mean()
        unfitted = torch.nn.functional.cosine_similarity(random_heads.sentence(pooled), target).mean()
    assert fitted > unfitted and fit.sentence_cosine > 0.5


def train_two_steps(tiny: Path, name: str, overrides: list[str], export: bool = False) -> Path:
    out = tiny / name
    command = [sys.executable, "-m", "mmkd.train", str(tiny / "recipe.yaml"), f"--output_dir={out}", "--max_steps=2",
               "--eval_interval=0", "--eval_retrieval=false", f"--export={str(export).lower()}", *overrides]
    result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert list((out / "checkpoints").iterdir())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", TEACHER_KINDS)
def test_sentence_transformers_teacher_caches_and_trains(tiny, kind):
    teacher_path = tiny / f"teacher_{kind}"
    teacher = load_teacher(str(teacher_path))
    cache = tiny / f"cache_{kind}"
    build_teacher_cache(teacher, load_corpus(tiny / "corpus")["train"], cache, max_length=32, split="train",
                        corpus_path=str(tiny / "corpus"))
    with pytest.raises(MMKDError, match="sentence_pipeline_sha256"):  # the plain teacher's cache is refused
        build_teacher_cache(teacher, load_corpus(tiny / "corpus")["train"], tiny / "cache_train", max_length=32,
                            split="train", corpus_path=str(tiny / "corpus"))
    train_two_steps(tiny, f"run_teacher_{kind}", [f"--teacher={teacher_path}", f"--teacher_cache={cache}"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", STUDENT_KINDS)
def test_init_student_keep_vocab_then_train(tiny, kind):
    source = tiny / f"source_{kind}"
    if not source.exists():
        tiny_student_source(tiny, kind)
    student = tiny / f"student_{kind}"
    from mmkd.cli import main

    assert main(["init-student", "--corpus", str(tiny / "corpus"), "--out", str(student), "--source", str(source),
                 "--teacher", str(tiny / "teacher"), "--keep-vocab"]) == 0
    assert (student / "projection_heads.safetensors").is_file()
    train_two_steps(tiny, f"run_student_{kind}", [f"--student={student}"])


@pytest.mark.slow
def test_resizing_teacher_trains_and_the_export_encodes_as_evaluation_does(tiny):
    """init-student onto the distiluse-style teacher (d_T 32, d_E 24), its cache, 2 steps, the export: the
    sentence-transformers model's encode is the embedding `mmkd eval retrieval` scores for the student."""
    from sentence_transformers import SentenceTransformer

    from mmkd.cli import main
    from mmkd.evaluation.retrieval import load_student_encoder

    teacher_path, student = tiny / f"teacher_{RESIZE}", tiny / f"student_{RESIZE}"
    assert main(["init-student", "--corpus", str(tiny / "corpus"), "--out", str(student), "--source",
                 str(tiny / "student"), "--teacher", str(teacher_path), "--keep-vocab"]) == 0
    out = train_two_steps(tiny, f"run_{RESIZE}", [f"--teacher={teacher_path}", f"--teacher_cache={resize_cache(tiny)}",
                                                  f"--student={student}"], export=True)
    exported = SentenceTransformer(str(out / "export" / "sentence_transformers"), device="cpu")
    assert exported.get_embedding_dimension() == 24
    by_st = exported.encode(SENTENCES, convert_to_tensor=True)
    evaluated = load_student_encoder(str(out / "export" / "hf"), load_teacher(str(teacher_path)), 32, 8,
                                     torch.device("cpu"))(SENTENCES)
    torch.testing.assert_close(by_st, evaluated, atol=1e-5, rtol=1e-5)
    check = json.loads((out / "export" / "embedding_check.json").read_text())
    assert torch.tensor(check["embeddings"]["sentence"]).shape[1] == 24
    assert max(check["max_abs_difference"].values()) < 3e-2

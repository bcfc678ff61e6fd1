"""`mmkd init-student`: a multilingual student made from an English (or any BERT or RoBERTa-family)
encoder, or an existing multilingual masked LM kept whole (`keep_vocab`).

With `keep_vocab` the source (any transformers masked LM: mBERT, XLM-R, DistilBERT, MPNet, DeBERTa, ...)
is the student as it is, its own tokenizer and vocabulary included; only step 4 runs. Otherwise:
1. Train a WordPiece vocabulary on the corpus text (`mmkd.models.vocabulary`).
2. Build a BertForMaskedLM with that vocabulary and the source encoder's shape, and copy every
   encoder weight of the source except the word embeddings (position and segment embeddings,
   embedding LayerNorm, all transformer layers; the MLM head's transform too when the source has one,
   else it is initialised fresh from the seed; the decoder is tied to the word embeddings, its bias 0).
   A RoBERTa-family source (RoBERTa, XLM-R, CamemBERT: the same layers as BERT) is first read as a
   BERT: its position ids start after its padding id (position p of a BERT is its row p + pad + 1),
   its LM head's dense and LayerNorm are BERT's MLM transform.
3. Word embeddings: a student token the source knows (same string, "##" included, and reachable:
   the source's normaliser leaves it unchanged; an uncased source has "é" in its vocabulary but never
   produces it, so that row is untrained) gets the source's row; special tokens take the source's
   special of the same role ([CLS] <- cls_token ...). Every other token gets the mean of the source
   rows of its string (without "##") as the source tokenizer splits it, the source's unknown token left
   out; only when nothing is left does it get the source's unknown-token row.
3b. With parallel pairs (the default of the command: the corpus train split), every row not copied is
   refitted so that a translation's mean input embedding matches its English sentence's
   (`mmkd.models.parallel_embeddings`; `--embedding-init subwords` keeps the sub-token means).
4. Projection heads P_w (d_S -> d_T, the teacher's token states) and P_s (d_S -> d_E, its sentence
   embedding): fitted by least squares on English sentences
   of the corpus when they are given (`mmkd.models.head_fit`), else seeded random; saved with
   `MMKDStudent.save`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as transformers_logging

from mmkd.errors import MMKDError
from mmkd.models.head_fit import HeadFitReport, fit_projection_heads
from mmkd.models.heads import create_projection_heads
from mmkd.models.model_files import model_dir, weights_sha256
from mmkd.models.parallel_embeddings import ParallelFitReport, fit_parallel_embeddings
from mmkd.models.student import MMKDStudent, load_student_mlm
from mmkd.models.teacher import load_teacher
from mmkd.models.vocabulary import CONTINUATION_PREFIX, DEFAULT_VOCAB_SIZE, train_wordpiece

if TYPE_CHECKING:
    from datasets import DatasetDict

SPECIAL_ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert")  # BERT layers, positions offset by pad + 1
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"  # key in the encoder (BertModel) state dict
TRANSFORM_PREFIX = "cls.predictions.transform."  # the MLM head's dense + LayerNorm in BertForMaskedLM


@dataclass
class EmbeddingCounts:
    """How the student's word embeddings were initialised (numbers of tokens)."""

    copied: int  # the source's row of the same token (specials included)
    averaged: int  # mean of the source rows of the token's string, as the source splits it
    unknown: int  # the source's unknown-token row: the source gives nothing for the string
    parallel: int = 0  # of the averaged and unknown ones, refitted on parallel pairs (step 3b)


@dataclass
class InitStudentReport:
    vocab_size: int
    vocab_seconds: float  # wall time of the vocabulary training (0 with keep_vocab)
    embeddings: EmbeddingCounts | None  # None with keep_vocab: the source's own embeddings are kept
    transform_from_source: bool  # the MLM head's transform was copied (else initialised fresh)
    d_student: int
    d_teacher: int  # d_T, P_w's output: the teacher's token states
    d_sentence: int  # d_E, P_s's output: the teacher's sentence embedding
    source: dict[str, str]
    head_fit: HeadFitReport | None  # how P_s and P_w were fitted; None = seeded random heads
    parallel_fit: ParallelFitReport | None = None  # step 3b; None = sub-token means kept (no translations)


def corpus_training_texts(corpus: DatasetDict) -> list[str]:
    """Each distinct src and tgt string of the train split (dev and test never), in first-seen order.

    Distinct: one English message appears once per language it is translated into and would
    otherwise outweigh every translation in the vocabulary's merges.
    """
    train = corpus["train"]
    return list(dict.fromkeys(chain(train["src"], train["tgt"])))


def source_knows(token: str, source_vocab: dict[str, int], source_tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when `token` is in the source vocabulary and the source can produce it (its normaliser
    leaves the token's text unchanged)."""
    if token not in source_vocab:
        return False
    normalizer = source_tokenizer.backend_tokenizer.normalizer
    text = token.removeprefix(CONTINUATION_PREFIX)
    return normalizer is None or normalizer.normalize_str(text) == text


def initial_word_embeddings(student_tokenizer: PreTrainedTokenizerBase, source_tokenizer: PreTrainedTokenizerBase,
                            source_embeddings: Tensor) -> tuple[Tensor, Tensor, EmbeddingCounts]:
    """Student word embeddings (V_S, d) from the source's (V_T, d), see the module docstring, step 3;
    with the bool mask (V_S,) of the rows copied from the source (specials included)."""
    student_vocab = student_tokenizer.get_vocab()
    source_vocab = source_tokenizer.get_vocab()
    source_unknown = source_tokenizer.unk_token_id
    rows: dict[int, int] = {}  # student id -> source id of the row copied
    for role in SPECIAL_ROLES:
        student_token, source_token = getattr(student_tokenizer, role), getattr(source_tokenizer, role)
        if student_token is not None and source_token is not None:
            rows[student_vocab[student_token]] = source_vocab[source_token]
    to_average: dict[int, str] = {}  # student id -> text to split with the source tokenizer
    for token, student_id in student_vocab.items():
        if student_id in rows:
            continue
        if source_knows(token, source_vocab, source_tokenizer):
            rows[student_id] = source_vocab[token]
        else:
            to_average[student_id] = token.removeprefix(CONTINUATION_PREFIX)
    texts = list(to_average.values())
    pieces = source_tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    bags = {student_id: [piece for piece in ids if piece != source_unknown]
            for student_id, ids in zip(to_average, pieces)}
    averaged = {student_id: bag for student_id, bag in bags.items() if bag}
    fallback = [student_id for student_id, bag in bags.items() if not bag]
    embeddings = source_embeddings.new_empty(len(student_vocab), source_embeddings.shape[1])
    embeddings[long_tensor(rows)] = source_embeddings[long_tensor(rows.values())]
    if averaged:
        offsets = long_tensor([0] + [len(bag) for bag in averaged.values()][:-1]).cumsum(0)
        flat = long_tensor([piece for bag in averaged.values() for piece in bag])
        embeddings[long_tensor(averaged)] = torch.nn.functional.embedding_bag(
            flat, source_embeddings, offsets, mode="mean")
    embeddings[long_tensor(fallback)] = source_embeddings[source_unknown]
    copied = torch.zeros(len(student_vocab), dtype=torch.bool)
    copied[long_tensor(rows)] = True
    return embeddings, copied, EmbeddingCounts(len(rows), len(averaged), len(fallback))


def long_tensor(ids: Iterable[int]) -> Tensor:
    return torch.tensor(list(ids), dtype=torch.long)


@contextmanager
def transformers_errors_only():
    """Silence transformers' load report while loading a source whose MLM head may be absent (that is
    expected and handled here, not a corrupted checkpoint)."""
    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(previous)


def load_source(directory: Path) -> tuple[BertForMaskedLM, bool]:
    """The source encoder as a BertForMaskedLM, and whether its checkpoint had the MLM transform.
    A RoBERTa-family source is converted (`bert_from_roberta`); other model types are refused."""
    config = AutoConfig.from_pretrained(directory)
    if config.model_type not in ("bert", *ROBERTA_FAMILY):
        raise MMKDError(f"source {directory}: model_type {config.model_type!r}: init-student copies the layers of "
                        f"a BERT or RoBERTa-family encoder into a new vocabulary; to keep this model and its own "
                        f"vocabulary as the student, use --keep-vocab")
    with transformers_errors_only():
        source, loading = AutoModelForMaskedLM.from_pretrained(directory, output_loading_info=True)
    if config.model_type == "bert":
        has_transform = not any(key.startswith(TRANSFORM_PREFIX) for key in loading["missing_keys"])
        return source, has_transform
    has_transform = not any(key.startswith(("lm_head.dense", "lm_head.layer_norm")) for key in loading["missing_keys"])
    return bert_from_roberta(source), has_transform


def bert_from_roberta(source: PreTrainedModel) -> BertForMaskedLM:
    """A BertForMaskedLM computing what the RoBERTa-family masked LM `source` computes on the same ids:
    position row p is the source's row p + padding_idx + 1 (RoBERTa numbers positions after its pad id),
    so max_position_embeddings shrinks by that offset; the LM head's dense and LayerNorm become the MLM
    transform (the decoder is tied to the word embeddings in both, its bias copied)."""
    offset = source.config.pad_token_id + 1
    config = BertConfig.from_dict({**source.config.to_dict(), "model_type": "bert",
                                   "max_position_embeddings": source.config.max_position_embeddings - offset,
                                   "architectures": ["BertForMaskedLM"], "tie_word_embeddings": True})
    bert = BertForMaskedLM(config)
    state = source.base_model.state_dict()
    state["embeddings.position_embeddings.weight"] = state["embeddings.position_embeddings.weight"][offset:]
    loaded = bert.bert.load_state_dict({key: value for key, value in state.items() if key in bert.bert.state_dict()},
                                       strict=False)
    if loaded.missing_keys:
        raise MMKDError(f"source {source.name_or_path}: weights missing for a BERT of its config: "
                        f"{loaded.missing_keys}")
    head = source.lm_head
    with torch.no_grad():
        bert.cls.predictions.transform.dense.load_state_dict(head.dense.state_dict())
        bert.cls.predictions.transform.LayerNorm.load_state_dict(head.layer_norm.state_dict())
        bert.cls.predictions.bias.copy_(head.bias)
    bert.name_or_path = source.name_or_path
    return bert.eval()


def student_mlm(tokenizer: PreTrainedTokenizerBase, source: BertForMaskedLM, source_has_transform: bool,
                source_tokenizer: PreTrainedTokenizerBase, seed: int, english: Sequence[str] = (),
                translations: Sequence[str] = ()
                ) -> tuple[BertForMaskedLM, EmbeddingCounts, ParallelFitReport | None]:
    """A BertForMaskedLM with `tokenizer`'s vocabulary and everything else from `source` (steps 2, 3),
    with the rows not copied refitted on the pairs (english[i], translations[i]) when given (step 3b)."""
    config = BertConfig.from_dict({**source.config.to_dict(), "vocab_size": len(tokenizer),
                                   "pad_token_id": tokenizer.pad_token_id, "architectures": ["BertForMaskedLM"],
                                   "tie_word_embeddings": True})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mlm = BertForMaskedLM(config)
    encoder_state = {key: value for key, value in source.bert.state_dict().items() if key != WORD_EMBEDDINGS}
    loaded = mlm.bert.load_state_dict(encoder_state, strict=False)
    if loaded.unexpected_keys or loaded.missing_keys != [WORD_EMBEDDINGS]:
        raise MMKDError(f"source {source.name_or_path}: encoder weights do not fit a BERT of its config "
                        f"(missing {loaded.missing_keys}, unexpected {loaded.unexpected_keys})")
    source_embeddings = source.bert.embeddings.word_embeddings.weight.detach()
    embeddings, copied, counts = initial_word_embeddings(tokenizer, source_tokenizer, source_embeddings)
    parallel_fit = None
    if translations:
        embeddings, parallel_fit = fit_parallel_embeddings(embeddings, ~copied, tokenizer, source_tokenizer,
                                                           source_embeddings, english, translations)
        counts.parallel = parallel_fit.fitted
    with torch.no_grad():
        mlm.bert.embeddings.word_embeddings.weight.copy_(embeddings)
        if source_has_transform:
            mlm.cls.predictions.transform.load_state_dict(source.cls.predictions.transform.state_dict())
    mlm.eval()
    return mlm, counts, parallel_fit


def make_student(texts: Iterable[str], source: str | None = None, teacher: str | None = None,
                 vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = 0, english: Sequence[str] = (),
                 keep_vocab: bool = False, progress: bool = False,
                 translations: Sequence[str] = ()) -> tuple[MMKDStudent, InitStudentReport]:
    """A new student (in memory, eval mode). `source` = encoder whose layers are copied into a vocabulary
    trained on `texts` (default: the teacher), or with `keep_vocab` the masked LM kept whole with its own
    tokenizer (`texts` unused); `teacher` = teacher path or hub name (default: the packaged
    all-MiniLM-L6-v2), which sets d_T (P_w) and d_E (P_s). With `english` sentences, the projection
    heads are fitted on them against the teacher (see mmkd.models.head_fit); without, they are seeded
    random. With `translations` (translations[i] of english[i]; a new vocabulary only), the word
    embeddings the source does not give are fitted on those pairs (mmkd.models.parallel_embeddings).
    `progress` shows progress bars for the vocabulary training and the head fit. Raises MMKDError when
    translations and english differ in length or come with keep_vocab."""
    teacher_model = load_teacher(teacher)
    d_teacher, d_sentence = teacher_model.hidden_size, teacher_model.sentence_size
    teacher_sha256 = teacher_model.weights_sha256
    teacher_directory = Path(teacher_model.name) if teacher is None else model_dir(teacher, "teacher")
    if keep_vocab and source is None:
        raise MMKDError("init-student --keep-vocab: name the student model to keep with --source")
    if translations and (keep_vocab or len(translations) != len(english)):
        raise MMKDError(f"init-student: embeddings fitted on parallel pairs need a new vocabulary (not --keep-vocab) "
                        f"and one translation per English sentence ({len(translations)} for {len(english)})")
    source_directory = teacher_directory if source is None else model_dir(source, "source")
    start = time.perf_counter()
    if keep_vocab:
        mlm, tokenizer, counts, transform_from_source = kept_mlm(source_directory)
        parallel_fit = None
    else:
        source_model, transform_from_source = load_source(source_directory)
        source_tokenizer = AutoTokenizer.from_pretrained(source_directory)
        tokenizer = train_wordpiece(texts, vocab_size, model_max_length=source_model.config.max_position_embeddings,
                                    progress=progress)
        mlm, counts, parallel_fit = student_mlm(tokenizer, source_model, transform_from_source, source_tokenizer,
                                                seed, english, translations)
    vocab_seconds = 0.0 if keep_vocab else time.perf_counter() - start
    if source is None:
        source_name, source_sha256 = str(teacher_directory if teacher is None else teacher), teacher_sha256
    else:
        source_name, source_sha256 = source, weights_sha256(source_directory)
    heads = create_projection_heads(mlm.config.hidden_size, d_teacher, seed, d_sentence)
    student = MMKDStudent(mlm, heads, tokenizer, {"name": source_name, "weights_sha256": source_sha256})
    head_fit = fit_projection_heads(student, teacher_model, english, seed=seed, progress=progress) if english else None
    report = InitStudentReport(vocab_size=len(tokenizer), vocab_seconds=vocab_seconds, embeddings=counts,
                               transform_from_source=transform_from_source, d_student=student.d_student,
                               d_teacher=d_teacher, d_sentence=d_sentence, source=student.source, head_fit=head_fit,
                               parallel_fit=parallel_fit)
    return student.eval(), report


def kept_mlm(directory: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, None, bool]:
    """(masked LM, its own fast tokenizer, None, True) of a source kept whole as the student (keep_vocab)."""
    mlm = load_student_mlm(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if not tokenizer.is_fast:
        raise MMKDError(f"source {directory}: no fast tokenizer (tokenizer.json), needed for offsets")
    return mlm.eval(), tokenizer, None, True


def init_student(texts: Iterable[str], out: str | Path, source: str | None = None, teacher: str | None = None,
                 vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = 0, english: Sequence[str] = (),
                 keep_vocab: bool = False, progress: bool = False,
                 translations: Sequence[str] = ()) -> InitStudentReport:
    """`make_student`, saved to `out` (a new or empty directory)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MMKDError(f"{out}: exists and is not an empty directory; init-student writes a new student")
    student, report = make_student(texts, source, teacher, vocab_size, seed, english, keep_vocab, progress,
                                   translations)
    student.save(out)
    return report

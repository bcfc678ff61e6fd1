"""The student as a sentence-transformers model: the embedding MMKD trains and evaluates, as users load it.

    Transformer (the student's encoder) -> Pooling (mean) -> Dense (P_s: d_S -> d_E, no bias, identity)
    [-> Normalize, when the teacher's own pipeline ends with Normalize]

Its output is P_s(mean_pool(last-layer states)), the sentence embedding SentA trains towards the
teacher's (method section 3) and `mmkd eval retrieval` scores (`MMKDStudent.sentence_embedding`),
normalised like the teacher's so that it lives in the same space. sentence-transformers' Dense module
computes activation(W x): with bias=False and the identity it is exactly the linear map P_s.

The Transformer module holds the encoder alone (the student's base model, without its MLM head): a
masked LM's base model has no pooler, so the directory records `add_pooling_layer: false` among the
Transformer's model arguments, and `SentenceTransformer(path)` loads every weight it finds and finds
every weight it needs (no load report).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from mmkd.models.student import MMKDStudent

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ST_CONFIG_FILE = "sentence_bert_config.json"  # sentence-transformers' Transformer module config


def encoder_model_kwargs(student: MMKDStudent) -> dict[str, bool]:
    """Keyword arguments that make AutoModel build the student's encoder as it is: without a pooler
    when its model class has one to leave out (BERT, RoBERTa families), none otherwise (DistilBERT)."""
    encoder = student.mlm.base_model
    takes_flag = "add_pooling_layer" in inspect.signature(type(encoder).__init__).parameters
    return {"add_pooling_layer": False} if takes_flag and getattr(encoder, "pooler", None) is None else {}


def save_sentence_transformer(student: MMKDStudent, st_dir: str | Path, max_length: int, normalize: bool) -> Path:
    """Write the student's sentence-transformers directory (module docstring) to `st_dir`, loadable with
    `SentenceTransformer(st_dir)`; returns it.

    max_length: the Transformer module's max_seq_length (tokens); normalize: end with Normalize.
    """
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

    directory = Path(st_dir)
    student.mlm.base_model.save_pretrained(directory)
    student.tokenizer.save_pretrained(directory)
    model_kwargs = encoder_model_kwargs(student)
    encoder = Transformer(str(directory), max_seq_length=max_length, model_kwargs=model_kwargs)
    projection = Dense(student.d_student, student.d_sentence, bias=False, activation_function=nn.Identity(),
                       init_weight=student.heads.sentence.weight.detach().float().cpu().clone())
    modules = [encoder, Pooling(student.d_student, pooling_mode="mean"), projection]
    model = SentenceTransformer(modules=modules + [Normalize()] if normalize else modules, device="cpu")
    return save_with_model_kwargs(model, directory, model_kwargs)


def read_model_kwargs(st_dir: str | Path) -> dict:
    """The Transformer module's model arguments recorded in a sentence-transformers directory ({} if none)."""
    path = Path(st_dir) / ST_CONFIG_FILE
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return dict(config.get("model_kwargs", {}))


def save_with_model_kwargs(model: SentenceTransformer, st_dir: str | Path, model_kwargs: dict) -> Path:
    """`model.save(st_dir)`, then record `model_kwargs` (which sentence-transformers does not save) among
    the Transformer module's settings, so that loading the directory builds the encoder the same way."""
    directory = Path(st_dir)
    model.save(str(directory))
    config_path = directory / ST_CONFIG_FILE
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["model_kwargs"] = model_kwargs
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return directory

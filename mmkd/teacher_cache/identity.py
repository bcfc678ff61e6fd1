"""What a teacher cache was built from: the teacher's tokenisation and the fields that must match.

A cache is valid for one (teacher weights, tokenizer, layer, sentence pipeline, max_length, corpus
split) combination; `cache_identity` computes those fields and `identity_mismatch` says which differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerBase

from mmkd.corpus.schema import column
from mmkd.errors import MMKDError

if TYPE_CHECKING:
    from datasets import Dataset

    from mmkd.models.teacher import Teacher

FORMAT_VERSION = 2  # 2: only the tokens training reads (no specials), no character offsets
TOKEN_DTYPE = "float16"  # token states and sentence embeddings
# Fields a cache must share with the current teacher/corpus; the others (teacher name, split name,
# corpus path, shard size) are recorded for information and layout only.
CORPUS_FIELDS = ("num_examples", "corpus_sha256")  # the corpus split's part of CHECKED_FIELDS
CHECKED_FIELDS = ("format", "weights_sha256", "tokenizer_sha256", "layer", "sentence_pipeline_sha256",
                  "max_length", "dtype", "hidden_size", "sentence_size", *CORPUS_FIELDS)
# Fields added within a format, and the field whose value they have in a record written before them:
# such caches were built only for teachers whose sentence embedding has the token states' size.
ADDED_FIELDS = {"sentence_size": "hidden_size"}


def tokenizer_sha256(tokenizer: PreTrainedTokenizerBase) -> str:
    """Identity of a fast tokenizer: sha256 of its full serialisation (vocabulary, normaliser,
    pre-tokenizer, post-processor with its special tokens, added tokens) and truncation side,
    without the truncation/padding state that tokenising leaves behind."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise MMKDError(f"teacher tokenizer {type(tokenizer).__name__} is not a fast tokenizer "
                        "(the cache needs its character offsets)")
    state = json.loads(backend.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    state["truncation_side"] = tokenizer.truncation_side
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode("utf-8")).hexdigest()


def src_fingerprint(texts: Iterable[str]) -> str:
    """sha256 (hex) over the English sentences in order (each length-prefixed, UTF-8)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def split_sources(corpus_split: Dataset, where: str) -> list[str]:
    """The `src` column of a corpus split (a datasets.Dataset) as a list; MMKDError naming `where`."""
    if "src" not in getattr(corpus_split, "column_names", ()):
        raise MMKDError(f"{where}: corpus split has no 'src' column (columns: "
                        f"{getattr(corpus_split, 'column_names', None)})")
    texts = column(corpus_split, "src")
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise MMKDError(f"{where}: row {row}: 'src' is {type(text).__name__}, expected a string")
    return texts


def split_identity(corpus_split: Dataset, where: str, stored: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """num_examples, corpus_sha256 and corpus_fingerprint (the datasets fingerprint) of a corpus split.

    When `stored` (a manifest) records the split's datasets fingerprint and length, its corpus_sha256
    is taken as is, without reading the English sentences; otherwise they are read and hashed.
    """
    fingerprint = getattr(corpus_split, "_fingerprint", None)
    if stored is not None and fingerprint is not None and stored.get("corpus_fingerprint") == fingerprint \
            and stored.get("num_examples") == len(corpus_split):
        return {"num_examples": len(corpus_split), "corpus_sha256": stored.get("corpus_sha256"),
                "corpus_fingerprint": fingerprint}
    texts = split_sources(corpus_split, where)
    return {"num_examples": len(texts), "corpus_sha256": src_fingerprint(texts), "corpus_fingerprint": fingerprint}


def cache_identity(teacher: Teacher, texts: Sequence[str], max_length: int, *, split: str | None = None,
                   corpus_path: str | None = None) -> dict[str, Any]:
    """The manifest fields that identify a cache of `teacher` over the sentences `texts`."""
    return {
        "format": FORMAT_VERSION,
        "teacher_name": str(teacher.name),
        "weights_sha256": teacher.weights_sha256,
        "tokenizer_sha256": tokenizer_sha256(teacher.tokenizer),
        "layer": int(teacher.layer) % (teacher.encoder.config.num_hidden_layers + 1),  # -1 -> last index
        "sentence_pipeline_sha256": teacher.sentence_pipeline_sha256(),  # pooling, Dense, Normalize, prompt
        "max_length": int(max_length),
        "dtype": TOKEN_DTYPE,
        "hidden_size": int(teacher.hidden_size),  # d_T: token states
        "sentence_size": int(teacher.sentence_size),  # d_E: sentence embeddings
        "num_examples": len(texts),
        "corpus_sha256": src_fingerprint(texts),
        "split": split,
        "corpus_path": corpus_path,
    }


def recorded(stored: Mapping[str, Any], field: str) -> Any:
    """The value of `field` in a manifest or shard identity; for a field the record predates, the value
    it implies (ADDED_FIELDS); None when absent."""
    if field not in stored and field in ADDED_FIELDS:
        return stored.get(ADDED_FIELDS[field])
    return stored.get(field)


def identity_mismatch(stored: Mapping[str, Any], current: Mapping[str, Any],
                      fields: Sequence[str] = CHECKED_FIELDS) -> list[str]:
    """One "field: cache X, now Y" line per field of `fields` that differs."""
    return [f"{field}: cache {recorded(stored, field)!r}, now {current[field]!r}"
            for field in fields if recorded(stored, field) != current[field]]

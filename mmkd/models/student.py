"""The multilingual student: a Hugging Face masked-LM encoder, its tokenizer and the projection heads.

A student directory is a normal Hugging Face model directory (config.json, model.safetensors,
tokenizer files), loadable with AutoModelForMaskedLM / AutoTokenizer, plus
`projection_heads.safetensors` (P_w, P_s) and `mmkd_student.json` (d_student, d_teacher, d_sentence, source).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from mmkd.errors import MMKDError
from mmkd.models.heads import HEADS_FILE, ProjectionHeads, create_projection_heads
from mmkd.models.model_files import model_dir, weights_sha256
from mmkd.models.pooling import mean_pool

STUDENT_FILE = "mmkd_student.json"
MASKED_LM_HEADS = ("cls", "lm_head", "predictions")  # transformers' attribute names of the MLM head


class MMKDStudent(nn.Module):
    """`mlm` (a transformers *ForMaskedLM), `heads` (P_w: d_S -> d_T, P_s: d_S -> d_E) and `tokenizer` (fast).

    `source` identifies the model the student was made from: {"name": ..., "weights_sha256": ...}.
    """

    def __init__(self, mlm: PreTrainedModel, heads: ProjectionHeads, tokenizer: PreTrainedTokenizerBase,
                 source: dict[str, str]) -> None:
        super().__init__()
        if heads.d_student != mlm.config.hidden_size:
            raise MMKDError(f"projection heads take d_S = {heads.d_student}, the model's hidden size is "
                            f"{mlm.config.hidden_size}")
        self.mlm = mlm
        self.heads = heads
        self.tokenizer = tokenizer
        self.source = dict(source)

    @property
    def d_student(self) -> int:
        return self.heads.d_student

    @property
    def d_teacher(self) -> int:
        """d_T, the teacher's token-state size (P_w's output)."""
        return self.heads.d_teacher

    @property
    def d_sentence(self) -> int:
        """d_E, the teacher's sentence-embedding size (P_s's output)."""
        return self.heads.d_sentence

    @property
    def uses_token_type_ids(self) -> bool:
        """Whether the model has segment embeddings to feed (a type vocabulary larger than 1)."""
        return getattr(self.mlm.config, "type_vocab_size", 0) > 1

    def model_inputs(self, input_ids: Tensor, attention_mask: Tensor,
                     token_type_ids: Tensor | None) -> dict[str, Tensor]:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.uses_token_type_ids:
            inputs["token_type_ids"] = token_type_ids
        return inputs

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (dropout off) and no autograd inside; the previous train/eval mode is restored after."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor,
                      token_type_ids: Tensor | None = None) -> Tensor:
        """Last-layer states (B, L, d_S) of the encoder alone (the MLM head is not run)."""
        inputs = self.model_inputs(input_ids, attention_mask, token_type_ids)
        return self.mlm.base_model(**inputs).last_hidden_state

    def sentence_embedding(self, input_ids: Tensor, attention_mask: Tensor, normalize: bool = False) -> Tensor:
        """P_s(mean_pool(last-layer states)) (B, d_E): the student's sentence embedding in the teacher's space,
        the one SentA trains (method section 3) and the export's Dense module applies; `normalize` as in
        `project_sentence`."""
        return self.project_sentence(mean_pool(self.hidden_states(input_ids, attention_mask), attention_mask),
                                     normalize)

    def project_sentence(self, pooled: Tensor, normalize: bool = False) -> Tensor:
        """P_s of mean-pooled last-layer states (B, d_S) -> (B, d_E), run in P_s's dtype (a pool taken in
        fp32 from bf16 states is cast back); with `normalize`, cast to fp32 and scaled to unit length
        (as a teacher that normalises, and the export's Normalize module)."""
        sentence = self.heads.sentence(pooled.to(self.heads.sentence.weight.dtype))
        return torch.nn.functional.normalize(sentence.float(), dim=-1) if normalize else sentence

    @property
    def masked_lm_head(self) -> nn.Module | None:
        """The module mapping last-layer states (..., d_S) to vocabulary logits (..., V), when the
        model has one under a known name (`cls`: BERT family; `lm_head`: RoBERTa, XLM-R; `predictions`:
        ALBERT); None otherwise (`mlm_forward` then scores every position and selects)."""
        for name in MASKED_LM_HEADS:
            head = getattr(self.mlm, name, None)
            if isinstance(head, nn.Module):
                return head
        return None

    def mlm_forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
                    rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One encoder pass: MLM logits and the last-layer states (B, L, d_S) they come from.

        rows None: logits (B, L, V) at every position. rows a bool (B, L) mask: logits (K, V) of its K
        True positions in row-major order, the head run on those K states only (V x d_S x K
        multiply-adds instead of V x d_S x B x L; TLM passes its masked positions).
        """
        inputs = self.model_inputs(input_ids, attention_mask, token_type_ids)
        head = self.masked_lm_head
        if rows is not None and head is not None:
            hidden = self.mlm.base_model(**inputs).last_hidden_state
            return head(hidden[rows]), hidden
        out = self.mlm(**inputs, output_hidden_states=True)
        return (out.logits if rows is None else out.logits[rows]), out.hidden_states[-1]

    def save(self, path: str | Path) -> Path:
        """Write the student directory (see the module docstring); returns it."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self.mlm.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.heads.save(directory)
        description = {"d_student": self.d_student, "d_teacher": self.d_teacher, "d_sentence": self.d_sentence,
                       "source": self.source}
        (directory / STUDENT_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        return directory


def read_student_file(directory: Path) -> dict | None:
    """Contents of `mmkd_student.json`, None when the directory has none."""
    path = directory / STUDENT_FILE
    if not path.is_file():
        return None
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise MMKDError(f"{path}: cannot read JSON: {err}") from err
    if not isinstance(description, dict) or not isinstance(description.get("source"), dict):
        raise MMKDError(f"{path}: no 'source' object")
    return description


def load_student_mlm(directory: Path) -> PreTrainedModel:
    """The masked-LM model of a local model directory (any transformers family with one)."""
    try:
        return AutoModelForMaskedLM.from_pretrained(directory)
    except ValueError as err:  # a config type without a masked-LM class
        raise MMKDError(f"student {directory}: no masked-LM model for this config: {err}") from err


def load_student(path_or_name: str | Path, teacher_hidden_size: int | None = None,
                 teacher_sentence_size: int | None = None) -> MMKDStudent:
    """Load a student directory, or make a student of any masked-LM model (path or hub name).

    teacher_hidden_size: d_T (P_w's output); teacher_sentence_size: d_E (P_s's output), None = d_T.
    Heads come from `projection_heads.safetensors` when the directory has it (and must then map to
    those sizes when `teacher_hidden_size` is given: MMKDError otherwise); else they are created with a
    fixed seed, which needs `teacher_hidden_size`.
    """
    directory = model_dir(path_or_name, "student")
    mlm = load_student_mlm(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if not tokenizer.is_fast:
        raise MMKDError(f"student {directory}: no fast tokenizer (tokenizer.json), needed for offsets")
    sentence_size = teacher_hidden_size if teacher_sentence_size is None else teacher_sentence_size
    if (directory / HEADS_FILE).is_file():
        heads = ProjectionHeads.load(directory)
        if teacher_hidden_size is not None and (heads.d_teacher, heads.d_sentence) != (teacher_hidden_size,
                                                                                       sentence_size):
            raise MMKDError(f"{directory / HEADS_FILE}: heads map to d_T = {heads.d_teacher} (P_w) and d_E = "
                            f"{heads.d_sentence} (P_s), the teacher has token states of {teacher_hidden_size} and "
                            f"sentence embeddings of {sentence_size}; make the student with this teacher "
                            f"(mmkd init-student --teacher ...)")
    elif teacher_hidden_size is None:
        raise MMKDError(f"student {directory}: no {HEADS_FILE}; the teacher's hidden size is needed to "
                        f"create them")
    else:
        heads = create_projection_heads(mlm.config.hidden_size, teacher_hidden_size, d_sentence=sentence_size)
    description = read_student_file(directory)
    source = (description["source"] if description is not None
              else {"name": str(path_or_name), "weights_sha256": weights_sha256(directory)})
    return MMKDStudent(mlm, heads, tokenizer, source)

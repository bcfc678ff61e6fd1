"""Projection heads P_w (word level, d_S -> d_T: onto the teacher's token states) and P_s (sentence
level, d_S -> d_E: onto its sentence embedding; d_E = d_T unless the teacher's pipeline has a Dense
module that changes the size): learned linear maps, part of the student and saved beside its weights as
`projection_heads.safetensors`."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mmkd.errors import MMKDError

HEADS_FILE = "projection_heads.safetensors"
HEADS_SEED = 0  # seed of freshly created heads: the same student directory always gets the same heads


class ProjectionHeads(nn.Module):
    """`word` = P_w, nn.Linear(d_student, d_teacher, bias=False), and `sentence` = P_s,
    nn.Linear(d_student, d_sentence, bias=False); d_sentence None = d_teacher."""

    def __init__(self, d_student: int, d_teacher: int, d_sentence: int | None = None) -> None:
        super().__init__()
        self.word = nn.Linear(d_student, d_teacher, bias=False)
        self.sentence = nn.Linear(d_student, d_teacher if d_sentence is None else d_sentence, bias=False)

    @property
    def d_student(self) -> int:
        return self.word.in_features

    @property
    def d_teacher(self) -> int:
        """d_T, P_w's output size."""
        return self.word.out_features

    @property
    def d_sentence(self) -> int:
        """d_E, P_s's output size."""
        return self.sentence.out_features

    def save(self, directory: str | Path) -> Path:
        """Write the heads to `directory`/projection_heads.safetensors (float32 on CPU); returns the file."""
        path = Path(directory) / HEADS_FILE
        save_file({name: tensor.detach().to("cpu", torch.float32).contiguous()
                   for name, tensor in self.state_dict().items()}, str(path))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ProjectionHeads:
        """Read heads saved by `save`; their sizes come from the file."""
        path = Path(directory) / HEADS_FILE
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as err:
            raise MMKDError(f"{path}: cannot read projection heads: {err}") from err
        for name in ("word.weight", "sentence.weight"):
            if name not in tensors or tensors[name].dim() != 2:
                raise MMKDError(f"{path}: no 2-d tensor {name!r}")
        d_teacher, d_student = tensors["word.weight"].shape
        heads = cls(d_student, d_teacher, tensors["sentence.weight"].shape[0])
        expected = {name: tuple(tensor.shape) for name, tensor in heads.state_dict().items()}
        found = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
        if found != expected:
            raise MMKDError(f"{path}: tensors {found} are not the heads {expected}")
        heads.load_state_dict(tensors)
        return heads


def create_projection_heads(d_student: int, d_teacher: int, seed: int = HEADS_SEED,
                            d_sentence: int | None = None) -> ProjectionHeads:
    """Fresh heads (P_s to d_sentence, None = d_teacher), initialised (nn.Linear's default) from `seed`
    without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ProjectionHeads(d_student, d_teacher, d_sentence)

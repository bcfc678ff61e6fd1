"""Projection heads P_w (word level) and P_s (sentence level): learned linear maps d_S -> d_T, part of
the student and saved beside its weights as `projection_heads.safetensors`."""

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
    """`word` = P_w and `sentence` = P_s, each a linear map nn.Linear(d_student, d_teacher, bias=False)."""

    def __init__(self, d_student: int, d_teacher: int) -> None:
        super().__init__()
        self.word = nn.Linear(d_student, d_teacher, bias=False)
        self.sentence = nn.Linear(d_student, d_teacher, bias=False)

    @property
    def d_student(self) -> int:
        return self.word.in_features

    @property
    def d_teacher(self) -> int:
        return self.word.out_features

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
        if "word.weight" not in tensors or tensors["word.weight"].dim() != 2:
            raise MMKDError(f"{path}: no 2-d tensor 'word.weight'")
        d_teacher, d_student = tensors["word.weight"].shape
        heads = cls(d_student, d_teacher)
        expected = {name: tuple(tensor.shape) for name, tensor in heads.state_dict().items()}
        found = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
        if found != expected:
            raise MMKDError(f"{path}: tensors {found} are not the heads {expected}")
        heads.load_state_dict(tensors)
        return heads


def create_projection_heads(d_student: int, d_teacher: int, seed: int = HEADS_SEED) -> ProjectionHeads:
    """Fresh heads, initialised (nn.Linear's default) from `seed` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ProjectionHeads(d_student, d_teacher)

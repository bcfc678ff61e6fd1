"""Language-balanced sampling: p_l proportional to n_l^alpha, deterministic, sharded, resumable;
optionally grouped by length within the draw."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from mmkd.data.seeding import seeded_generator
from mmkd.errors import MMKDError


def language_probabilities(counts: Mapping[str, int], alpha: float) -> dict[str, float]:
    """p_l = n_l^alpha / sum_k n_k^alpha over the languages with n_l > 0 (p_l = 0 for the others).

    alpha = 1 samples in proportion to the data, alpha = 0 uniformly over languages; in between,
    small languages are up-sampled. Keys keep the order of `counts`.
    """
    if alpha < 0 or not math.isfinite(alpha):
        raise MMKDError(f"language sampling alpha must be a finite number >= 0, got {alpha}")
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"language_probabilities: negative count in {dict(counts)}")
    weights = {lang: float(n) ** alpha if n > 0 else 0.0 for lang, n in counts.items()}
    total = sum(weights.values())
    if total == 0:
        raise MMKDError("language sampling: no language has any pairs")
    return {lang: weight / total for lang, weight in weights.items()}


class LanguageSampler(Sampler[int]):
    """Dataset indices drawn language by language, p_l proportional to n_l^alpha.

    `langs` is the dataset's `lang` column (e.g. `dataset["lang"]`). Each epoch draws `num_samples`
    (default: the dataset's length) global samples: a language by p_l, then that language's next
    row in a permutation of its rows drawn for the epoch (started again from its beginning when a
    small language runs out). The global sequence depends only on (seed, epoch); it is padded by
    wrapping to a multiple of `world_size`, and rank r takes every world_size-th sample from r, as
    DistributedSampler does. `set_epoch(epoch, consumed_samples)` skips the first consumed_samples
    of the global sequence (all ranks together), so a resumed run continues exactly, even on a
    different world size.

    Length grouping (`lengths` given, `group_window` > 0): the drawn sequence is cut into windows of
    `group_window` x `group_size` samples; each window is sorted by length (ties in a seeded random
    order) and cut into blocks of `group_size` samples (the global micro-batch: micro-batch x world
    size), and the window's blocks are put in a seeded random order (a short last block stays last).
    Every micro-batch of every rank is then a stride of one block, so its rows have similar lengths
    and it pads little. A window holds exactly the samples the language draw put there, so the
    languages' frequencies (alpha) are unchanged. The sequence still depends only on (seed, epoch)
    and the grouping geometry, so `set_epoch(epoch, consumed_samples)` resumes exactly as without
    grouping when `group_size` is the same; with another group size the rest of the current
    window may repeat or skip some of its samples.
    """

    def __init__(self, langs: Sequence[str], alpha: float, num_samples: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, lengths: Sequence[int] | None = None, group_size: int = 1,
                 group_window: int = 64) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"LanguageSampler: need 0 <= rank < world_size, got {rank} and {world_size}")
        if group_size < 1 or group_window < 0:
            raise ValueError(f"LanguageSampler: need group_size >= 1 and group_window >= 0, got {group_size} "
                             f"and {group_window}")
        if lengths is not None and len(lengths) != len(langs):
            raise ValueError(f"LanguageSampler: {len(lengths)} lengths for {len(langs)} rows")
        languages, codes = np.unique(np.asarray(list(langs), dtype=str), return_inverse=True)
        if len(codes) == 0:
            raise MMKDError("LanguageSampler: the dataset is empty")
        self.languages: list[str] = [str(lang) for lang in languages]
        self.counts: dict[str, int] = dict(zip(self.languages, np.bincount(codes).tolist()))
        self.probabilities = language_probabilities(self.counts, alpha)
        self.num_samples = len(codes) if num_samples is None else num_samples
        if self.num_samples < 1:
            raise MMKDError(f"LanguageSampler: num_samples must be >= 1, got {self.num_samples}")
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.consumed_samples = 0, 0
        self._rows_by_language = torch.from_numpy(np.argsort(codes, kind="stable"))
        self._counts = torch.tensor(list(self.counts.values()), dtype=torch.long)
        self._starts = torch.cumsum(self._counts, 0) - self._counts
        self.lengths = None if lengths is None else torch.as_tensor(np.asarray(lengths), dtype=torch.long)
        self.group_size, self.group_window = group_size, group_window

    def set_epoch(self, epoch: int, consumed_samples: int = 0) -> None:
        """Draw epoch `epoch`'s sequence, skipping its first `consumed_samples` global samples.

        consumed_samples counts all ranks' samples (steps x global batch) and must be a multiple of
        world_size so every rank skips the same number.
        """
        if consumed_samples < 0 or consumed_samples % self.world_size:
            raise ValueError(
                f"LanguageSampler: consumed_samples must be a non-negative multiple of world_size "
                f"{self.world_size}, got {consumed_samples}"
            )
        self.epoch, self.consumed_samples = epoch, consumed_samples

    def global_indices(self) -> torch.Tensor:
        """The epoch's global sequence of dataset rows, (num_samples,) long, before padding and sharding."""
        generator = seeded_generator(self.seed, self.epoch)
        permuted = torch.cat([
            self._rows_by_language[start + torch.randperm(n, generator=generator)]
            for start, n in zip(self._starts.tolist(), self._counts.tolist())
        ])
        probabilities = torch.tensor([self.probabilities[lang] for lang in self.languages], dtype=torch.float64)
        drawn = torch.multinomial(probabilities, self.num_samples, replacement=True, generator=generator)
        rows = permuted[self._starts[drawn] + _occurrences(drawn) % self._counts[drawn]]
        if self.lengths is None or self.group_window == 0:
            return rows
        return self._grouped_by_length(rows, generator)

    def _grouped_by_length(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`rows` reordered within each window: sorted by length into blocks of group_size, the
        window's full blocks in a random order, a short block last (see the class docstring)."""
        window = self.group_size * self.group_window
        grouped = []
        for start in range(0, len(rows), window):
            chunk = rows[start:start + window]
            chunk = chunk[torch.randperm(len(chunk), generator=generator)]  # random order among equal lengths
            chunk = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            blocks = list(chunk.split(self.group_size))
            short = [blocks.pop()] if len(blocks[-1]) < self.group_size else []
            grouped += [blocks[i] for i in torch.randperm(len(blocks), generator=generator).tolist()] + short
        return torch.cat(grouped)

    def __iter__(self) -> Iterator[int]:
        padded = self.global_indices()[torch.arange(self._padded_length()) % self.num_samples]
        return iter(padded[self.consumed_samples + self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return max(0, (self._padded_length() - self.consumed_samples) // self.world_size)

    def _padded_length(self) -> int:
        return math.ceil(self.num_samples / self.world_size) * self.world_size


def _occurrences(values: torch.Tensor) -> torch.Tensor:
    """(N,) long: how many times values[i] occurs in values[:i] (values (N,) long, >= 0)."""
    order = torch.sort(values, stable=True).indices
    counts = torch.bincount(values)
    rank_in_sorted = torch.arange(len(values)) - (torch.cumsum(counts, 0) - counts)[values[order]]
    return torch.empty_like(rank_in_sorted).index_put_((order,), rank_in_sorted)

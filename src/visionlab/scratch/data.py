"""Mini-batches that cover every sample once per epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from visionlab.utils.errors import ConfigError
from visionlab.utils.seeding import derive_seed


class BatchGenerator:
    """The notes' BatchGenerator, fixed and shuffled.

    The notes' version does not run (a stray `/` after `batch_size`), never shuffles, and
    its `next()` walks past the end instead of starting a new epoch. Here each epoch is
    one pass over a fresh permutation: every sample exactly once, the last batch smaller
    when the size does not divide. The permutation comes from (seed, epoch) the way
    visionlab's MemoryLoader draws it, so both see the same batches.
    """

    def __init__(
        self, images: Tensor, labels: Tensor, batch_size: int = 128, shuffle: bool = True, seed: int = 0
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(len(self.labels) / self.batch_size)

    def order(self, epoch: int) -> Tensor:
        """The sample indices of `epoch`, in the order they are served."""
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, labels) batches of one epoch."""
        for idx in self.order(epoch).split(self.batch_size):
            yield self.images[idx], self.labels[idx]

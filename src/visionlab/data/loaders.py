"""The in-memory loader: a dataset as one uint8 tensor on the device, served as
ordinary (x, y) batches without workers, collation or per-image Python.

The order of batches depends only on (seed, epoch), so a run resumed mid-epoch (the
DataModule's checkpointed state hands the position to `load_state_dict`) continues with
exactly the batches it missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from visionlab.data.transforms import BatchTransform
from visionlab.utils.errors import ConfigError
from visionlab.utils.seeding import derive_seed

Batch = tuple[Tensor, Tensor]
BLOCK = 16  # batches transformed at once; bounds the waste when a run stops mid-epoch


@dataclass(frozen=True)
class LoaderEnv:
    """What a loader needs to know about the run at the start of each pass."""

    device: torch.device = torch.device("cpu")
    epoch: int = 0
    rank: int = 0
    world_size: int = 1
    steps_done: int = 0  # training batches already completed in this epoch


class MemoryLoader:
    """Iterates over `images` (uint8, N x C x H x W) and `labels` held in memory.

    Training (`shuffle=True`) yields (x, y) batches of a fresh permutation per epoch;
    evaluation yields them in order. Under DDP each
    rank takes every world_size-th sample; training shards are padded to equal length (as
    DistributedSampler does) so every rank runs the same number of steps.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        transform: BatchTransform,
        *,
        shuffle: bool = False,
        seed: int = 0,
        env: Callable[[], LoaderEnv] = LoaderEnv,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        self.images, self.labels = images, labels
        self.batch_size, self.transform = batch_size, transform
        self.shuffle, self.seed = shuffle, seed
        self.env = env
        self._device_copy: tuple[torch.device, Tensor, Tensor] | None = None
        self._resume_at: tuple[int, int] | None = None

    def _shard_size(self, world_size: int) -> int:
        n = len(self.labels)
        return math.ceil(n / world_size) if self.shuffle else len(range(0, n, world_size))

    def __len__(self) -> int:
        """Batches per pass on this rank."""
        return math.ceil(self._shard_size(self.env().world_size) / self.batch_size)

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if self._device_copy is None or self._device_copy[0] != device:
            self._device_copy = (device, self.images.to(device), self.labels.to(device))
        return self._device_copy[1], self._device_copy[2]

    def order(self, env: LoaderEnv) -> Tensor:
        """Sample indices this rank visits in this pass."""
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(env.rank, n, env.world_size)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, env.epoch))
        perm = torch.randperm(n, generator=gen)
        if env.world_size > 1:
            total = self._shard_size(env.world_size) * env.world_size
            perm = torch.cat([perm, perm[: total - n]]) if total > n else perm
            perm = perm[env.rank :: env.world_size]
        return perm

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at batch `steps_done` of epoch `epoch` (from the DataModule's saved state),
        so a run stopped mid-epoch goes on with the next batch rather than replaying the epoch."""
        self._resume_at = (state["epoch"], state["steps_done"])

    def __iter__(self) -> Iterator[Batch]:
        env = self.env()
        skip = 0
        if self._resume_at is not None and self.shuffle:
            if self._resume_at[0] == env.epoch:
                skip = self._resume_at[1]
            self._resume_at = None
        images, labels = self._on(env.device)
        order = self.order(env).to(env.device)[skip * self.batch_size :]
        # Transformed BLOCK batches at a time (one set of tensor ops, then views): the same
        # values as batch by batch, since every image's draws depend on its index only;
        # mixup / cutmix then mix within each batch.
        for block in order.split(self.batch_size * BLOCK):
            if not self.shuffle:
                yield from zip(
                    self.transform(images[block]).split(self.batch_size), labels[block].split(self.batch_size)
                )
                continue
            x = self.transform(images[block], block, env.epoch)
            for xb, yb, ib in zip(
                x.split(self.batch_size), labels[block].split(self.batch_size), block.split(self.batch_size)
            ):
                yield self.transform.mix_batch(xb, yb, ib, env.epoch)

"""A LightningDataModule for image datasets that fit in memory as uint8 tensors.

Subclasses say what the dataset is (classes, shape, files) and how to read it (FileDataModule:
a dataset published as files, fetched and verified first); this class
splits, normalises, augments and serves it, through the in-memory loader (`loader=memory`,
fast: uint8 tensors on the device) or a standard DataLoader (`loader=dataloader`). Both paths hand the model
the same float tensors for the same image, because both run the same BatchTransform.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from visionlab.data.loaders import LoaderEnv, MemoryLoader
from visionlab.data.sources import DatasetFiles, ensure_files
from visionlab.data.transforms import NORMALIZATIONS, Augment, BatchTransform
from visionlab.utils.checks import Check, Lookup, integer, is_int, required, under
from visionlab.utils.errors import ConfigError

log = logging.getLogger("visionlab")
LOADERS = ("memory", "dataloader")
STATS_CHUNK_PIXELS = 1 << 24  # pixels per step of the normalisation statistics (128 MiB as int64)
Split = tuple[Tensor, Tensor]


def _none_done() -> int:
    return 0


def available_cores() -> int:
    """CPU cores this process may run on: DataLoader's own suggested maximum of workers."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class IndexedImages(Dataset):
    """(uint8 image, label, index) triples: the index lets the batch transform find each
    image's augmentation draws on the device."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.images[i], self.labels[i], i


class InMemoryImageDataModule(LightningDataModule):
    """Base DataModule: official train split -> train + val, official test kept as test."""

    CHECKS: ClassVar[tuple[Check, ...]] = (
        *required(integer("batch_size", 1), integer("eval_batch_size", 1)),
        Check(
            "val_size",
            lambda v: (is_int(v) and v >= 0) or (isinstance(v, float) and 0 <= v < 1),
            "a whole count >= 0 (5000) or a fraction below 1 (0.1); 1.0 could mean either",
        ),
        Check(
            "num_workers",
            lambda v: is_int(v) and 0 <= v <= available_cores(),
            f"an integer in 0..{available_cores()} (the cores this process may use; more only adds processes)",
        ),
        *under("augment.", Augment.CHECKS),
    )
    classes: tuple[str, ...] = ()
    input_shape: tuple[int, ...] = (1, 28, 28)
    train_size: int = 0  # images in the official training set, known before reading
    loaders: tuple[str, ...] = LOADERS  # the data.loader values this dataset takes

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: float = 5000,
        split_seed: int = 42,
        normalization: str = "standardize",
        augment: Mapping[str, Any] | None = None,
        loader: str = "memory",
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"data.normalization={normalization!r} is unknown; allowed: {', '.join(NORMALIZATIONS)}")
        if loader not in self.loaders:
            raise ConfigError(f"data.loader={loader!r} is unknown; allowed: {', '.join(self.loaders)}")
        self.data_dir = data_dir
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        resolve_val_size(val_size, self.train_size)  # fail before reading anything
        self.val_size = val_size
        self.split_seed, self.normalization = split_seed, normalization
        self.augment = Augment(**dict(augment or {}))
        self.loader, self.num_workers, self.seed = loader, num_workers, seed
        self.splits: dict[str, Split] = {}
        self._train_position: dict[str, int] | None = None  # a resumed run's, until its loader is built
        self._batches_done: Callable[[], int] = _none_done
        self.mean: tuple[float, ...] = ()
        self.std: tuple[float, ...] = ()

    @classmethod
    def check_config(cls, lookup: Lookup) -> None:
        """An int trainer.val_check_interval must fit in a training epoch of one device,
        which Lightning checks only once the data is read; the epoch's length is known
        before when the dataset's size is (not for an image folder)."""
        interval, limit = lookup("trainer.val_check_interval"), lookup("trainer.limit_train_batches")
        train_size, batch = lookup("data.train_size") or cls.train_size, lookup("data.batch_size")
        if (
            not is_int(interval)
            or not train_size
            or not is_int(batch)
            or lookup("trainer.devices") != 1
            or lookup("trainer.check_val_every_n_epoch") is None
            or lookup("trainer.limit_val_batches") == 0
            or lookup("trainer.fast_dev_run")
        ):
            return
        try:
            batches = math.ceil((train_size - resolve_val_size(lookup("data.val_size") or 0, train_size)) / batch)
        except ValueError:
            return  # val_size's own check reports it
        batches = (
            min(batches, limit) if is_int(limit) else int(batches * limit) if isinstance(limit, float) else batches
        )
        if interval > batches:
            raise ConfigError(
                f"trainer.val_check_interval={interval} is more than the {batches} training batches "
                "of an epoch; expected at most that, or trainer.check_val_every_n_epoch=null to "
                "count batches across epochs"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # --- what a subclass provides -------------------------------------------------------
    def read_split(self, name: str) -> Split:
        """uint8 images (N, C, H, W) and int64 labels of the official 'train' or 'test' set."""
        raise NotImplementedError

    # --- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = self.read_split("train")
        n_val = resolve_val_size(self.val_size, len(labels))
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
        self.splits = {
            "train": (images[train_idx], labels[train_idx]),
            "val": (images[val_idx], labels[val_idx]),
            "test": self.read_split("test"),
        }
        self.check_splits()
        self.mean, self.std = self._stats(self.splits["train"][0])

    def check_splits(self) -> None:
        """Every split must hold what the dataset claims, checked before any training:
        images of `input_shape` and labels in range. A batch larger than the training split is
        one batch of the whole split, as a DataLoader makes it; the log says so."""
        where = getattr(self, "root", None) or self.data_dir
        for name, (images, labels) in self.splits.items():
            if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.input_shape):
                raise ConfigError(
                    f"{where}: {name} images have shape {tuple(images.shape[1:])}; "
                    f"expected {tuple(self.input_shape)} like the training images"
                )
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                bad = int(labels.max()) if int(labels.max()) >= self.num_classes else int(labels.min())
                raise ConfigError(
                    f"{where}: {name} labels hold {bad}; expected 0..{self.num_classes - 1} "
                    f"({self.num_classes} classes)"
                )
        n_train = len(self.splits["train"][1])
        if self.batch_size > n_train:
            log.info(
                "data.batch_size=%d is larger than the %d training images: each epoch is one batch of %d",
                self.batch_size,
                n_train,
                n_train,
            )

    def _stats(self, images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
        channels = images.shape[1]
        if self.normalization == "scale":
            return (0.0,) * channels, (1.0,) * channels
        # exact integer sums, a few million pixels at a time: a float copy of a big image
        # folder's training split would take 4x its decoded size
        sums, squares = torch.zeros(channels, dtype=torch.int64), torch.zeros(channels, dtype=torch.int64)
        per_chunk = max(1, STATS_CHUNK_PIXELS // max(1, images[0].numel()))
        for chunk in images.split(per_chunk):
            pixels = chunk.transpose(0, 1).reshape(channels, -1).to(torch.int64)
            sums += pixels.sum(1)
            squares += (pixels * pixels).sum(1)
        mean, std = channel_stats(sums.tolist(), squares.tolist(), images[:, 0].numel())
        return tuple(mean), tuple(std)

    def transform(self, train: bool = False) -> BatchTransform:
        """The uint8 -> float transform; with augmentation only for the training split. The
        evaluation one is made once (per normalisation), so its constants stay on the device."""
        if not train:
            cached = getattr(self, "_eval_transform", None)
            if cached is None or (cached.mean, cached.std) != (self.mean, self.std):
                self._eval_transform = BatchTransform(self.mean, self.std, None, self.seed, 0, self.num_classes)
            return self._eval_transform
        n = len(self.splits["train"][1])
        return BatchTransform(self.mean, self.std, self.augment, self.seed, n, self.num_classes)

    def follow_position(self, batches_done: Callable[[], int]) -> None:
        """Be told where the training pass stands: `batches_done()` is the number of training
        batches whose step has run in the current epoch. The task says it (from
        Lightning's loop, visionlab.training.trainer_state); a mid-epoch checkpoint saves it so
        the resumed run starts at the next batch. Not followed, every pass counts from 0."""
        self._batches_done = batches_done

    def _env(self) -> LoaderEnv:
        trainer = self.trainer
        if trainer is None:
            return LoaderEnv()
        return LoaderEnv(
            trainer.strategy.root_device,
            trainer.current_epoch,
            trainer.global_rank,
            trainer.world_size,
            self._batches_done(),
        )

    def _loader(self, split: str) -> MemoryLoader | DataLoader:
        if not self.splits:
            self.setup()
        images, labels = self.splits[split]
        train = split == "train"
        batch = self.batch_size if train else self.eval_batch_size
        if self.loader == "memory":
            loader = MemoryLoader(
                images, labels, batch, self.transform(train), shuffle=train, seed=self.seed, env=self._env
            )
            if train and self._train_position is not None:
                loader.load_state_dict(self._train_position)
                self._train_position = None
            return loader
        gen = torch.Generator().manual_seed(self.seed) if train else None
        # pinned batches: Lightning's copy to a GPU (non_blocking) then does not make the host wait
        pin = self._env().device.type == "cuda"
        return DataLoader(
            IndexedImages(images, labels),
            batch_size=batch,
            shuffle=train,
            generator=gen,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=pin,
        )

    # The memory loader's position (epoch, batches done) travels in the DataModule's state:
    # Lightning restores a DataModule before it builds the loaders, but would hand a loader
    # its own saved state only when the loader is built after the checkpoint is read, and a
    # one-cycle schedule (estimated_stepping_batches) builds it before.
    def state_dict(self) -> dict[str, Any]:
        if self.loader != "memory" or self.trainer is None:
            return {}
        env = self._env()
        return {"train_position": {"epoch": env.epoch, "steps_done": env.steps_done}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._train_position = state.get("train_position")

    def train_dataloader(self) -> MemoryLoader | DataLoader:
        if self.loader == "dataloader":
            self._train_transform = self.transform(train=True)
        return self._loader("train")

    def val_dataloader(self) -> MemoryLoader | DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> MemoryLoader | DataLoader:
        return self._loader("test")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """DataLoader path: run the same batch transform as the memory path, on the device.

        Lightning's precision plugin converts a batch (`convert_input`: float64 for
        trainer.precision=64-true) before this hook, when it still holds uint8 images; the
        floats made here go through it too, as the memory loader's do."""
        if self.loader != "dataloader":
            return batch
        images, labels, index = batch
        if self.trainer is not None and self.trainer.training:
            out = self._train_transform.train_batch(images, labels, index, self.trainer.current_epoch)
        else:
            out = self.transform(False)(images), labels
        return self.trainer.precision_plugin.convert_input(out) if self.trainer is not None else out


def channel_stats(sums: Sequence[int], squares: Sequence[int], count: int) -> tuple[list[float], list[float]]:
    """Mean and (unbiased) std per channel of pixels / 255, from exact integer sums of
    `count` pixels per channel (as torch.std_mean gives, without its float rounding)."""
    mean = [int(s) / count / 255 for s in sums]
    var = [(count * int(q) - int(s) ** 2) / (count * (count - 1)) / 255**2 for s, q in zip(sums, squares)]
    return mean, [math.sqrt(max(v, 0.0)) for v in var]


def resolve_val_size(val_size: float, train_size: int) -> int:
    """A count (an integer) stays a count; a fraction in (0, 1) becomes a count of
    `train_size`. 1.0 or 5000.0 could mean either, so they are refused."""
    if val_size < 0:
        raise ConfigError(f"data.val_size={val_size} must be >= 0 (a count, or a fraction below 1)")
    if isinstance(val_size, float) and val_size >= 1:
        raise ConfigError(
            f"data.val_size={val_size} is ambiguous; give a fraction below 1 (e.g. 0.1) "
            f"or a whole count without a decimal point (e.g. {int(val_size)})"
        )
    count = round(val_size * train_size) if 0 < val_size < 1 else int(val_size)
    if train_size and count >= train_size:
        raise ConfigError(f"data.val_size={val_size} must be smaller than the {train_size} training images")
    return count


class FileDataModule(InMemoryImageDataModule):
    """An in-memory dataset whose files `ensure_files` finds, fetches and verifies."""

    files: DatasetFiles

    def __init__(self, *args: Any, verify: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verify = verify

    def prepare_data(self) -> None:
        ensure_files(self.files, self.data_dir, verify=self.verify)

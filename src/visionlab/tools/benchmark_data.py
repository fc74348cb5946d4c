"""What the benchmark's reference paths train on: the config's data read once into
normalised tensors on the training device, and the net seeded as visionlab seeds it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn


def training_device(cfg: DictConfig) -> torch.device:
    """The device Lightning trains on for this config: a GPU when allowed and present."""
    allowed = str(cfg.trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
    return torch.device("cuda" if allowed and torch.cuda.is_available() else "cpu")


def autocast_dtype(precision: object) -> torch.dtype | None:
    """The autocast dtype of a Lightning mixed precision, None for full precision."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))


@dataclass
class Prepared:
    """What both reference paths train on: normalised tensors on the device, the net."""

    device: torch.device
    dtype: torch.dtype | None
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    net: nn.Module

    def batches(
        self, split: str, size: int, generator: torch.Generator | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The split in batches; shuffled (randperm) when a generator is given."""
        x, y = self.splits[split]
        order = torch.randperm(len(y), generator=generator).to(self.device) if generator is not None else None
        if order is None:
            return list(zip(x.split(size), y.split(size)))
        return [(x[i], y[i]) for i in order.split(size)]


def prepare(cfg: DictConfig) -> Prepared:
    """The data read once and normalised (no per-batch work), and the net, seeded as visionlab seeds it."""
    L.seed_everything(cfg.seed, verbose=False)
    device, dtype = training_device(cfg), autocast_dtype(cfg.trainer.get("precision"))
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    to_float = datamodule.transform()
    splits = {}
    for name in ("train", "val", "test"):
        images, labels = datamodule.splits[name]
        x = to_float(images).to(device)
        splits[name] = (x.to(memory_format=torch.channels_last) if cfg.channels_last else x, labels.to(device))
    net = instantiate(cfg.model, input_shape=list(datamodule.input_shape), num_classes=datamodule.num_classes)
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.compile:
        net.compile()
    return Prepared(device, dtype, splits, net)


class Batches:
    """A split's batches as one iterable (Lightning takes any; a list would be many
    loaders), reshuffled each pass when a seed is given."""

    def __init__(self, data: Prepared, split: str, size: int, seed: int | None = None) -> None:
        self.data, self.split, self.size = data, split, size
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __len__(self) -> int:
        return math.ceil(len(self.data.splits[self.split][1]) / self.size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.data.batches(self.split, self.size, self.generator))


def data_accuracy(data: Prepared, split: str, batch_size: int) -> float:
    """Accuracy of the net on a split, in eval mode and the run's autocast dtype, read
    back once (a timing point)."""
    return float(correct_predictions(data, split, batch_size)) / max(len(data.splits[split][1]), 1)


def correct_predictions(data: Prepared, split: str, batch_size: int) -> torch.Tensor:
    """The count of right predictions on a split, on the data's device. The net is put
    there first: Lightning's teardown moves a module back to the CPU after `fit`."""
    net = data.net.to(data.device)
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=data.device)
    with torch.no_grad(), autocast(data):
        for xb, yb in data.batches(split, batch_size):
            correct += (net(xb).argmax(1) == yb).sum()
    return correct


def autocast(data: Prepared) -> AbstractContextManager:
    """The run's autocast, or nothing at full precision."""
    return nullcontext() if data.dtype is None else torch.autocast(data.device.type, dtype=data.dtype)

"""DataModules for datasets published as files: fetched by `ensure_files`, then read.

A dataset of a known kind is a subclass naming its classes, shape and files; the idx kind
(MNIST, Fashion-MNIST) needs nothing more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from visionlab.data.datamodule import InMemoryImageDataModule, Split
from visionlab.data.idx import read_idx
from visionlab.data.sources import DatasetFiles, ensure_files


class FileDataModule(InMemoryImageDataModule):
    """An in-memory dataset whose files `ensure_files` finds, fetches and verifies."""

    files: DatasetFiles

    def __init__(self, *args: Any, verify: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verify = verify

    def prepare_data(self) -> None:
        ensure_files(self.files, self.data_dir, verify=self.verify)


class IdxDataModule(FileDataModule):
    """Grayscale images and labels in the four idx files of the MNIST family."""

    def read_split(self, name: str) -> Split:
        prefix = "train" if name == "train" else "t10k"
        folder = Path(self.data_dir)
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", ndim=3, uint8=True)
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", ndim=1, uint8=True)
        if len(images) != len(labels):
            raise ValueError(f"{folder}: {name} images {tuple(images.shape)} do not match labels {tuple(labels.shape)}")
        return images.unsqueeze(1).contiguous(), labels.to(torch.int64)

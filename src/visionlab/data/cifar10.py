"""CIFAR-10: 50,000 training and 10,000 test images, 32x32 RGB, 10 classes."""

from __future__ import annotations

from pathlib import Path

import torch

from visionlab.data.datamodule import FileDataModule, Split
from visionlab.data.formats.cifar import read_cifar_batch, read_cifar_meta
from visionlab.data.sources import DatasetFiles, FileSpec
from visionlab.utils.errors import ConfigError

FOLDER = "cifar-10-batches-py"
CIFAR10 = DatasetFiles(
    title="CIFAR-10",
    files=(FileSpec("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", raw_md5=True, extract=FOLDER),),
    urls=("https://www.cs.toronto.edu/~kriz",),
    env_var="VISIONLAB_CIFAR10_DIR",
    how_to=(
        "Supply cifar-10-python.tar.gz (or its unpacked cifar-10-batches-py/ folder): put it in "
        "data.data_dir, or point VISIONLAB_CIFAR10_DIR at a folder holding it."
    ),
)


class CIFAR10DataModule(FileDataModule):
    """CIFAR-10 (python version) from local copies or the official download, held in memory.

    Class names come from `batches.meta`; the defaults below are the official ones.
    """

    classes: tuple[str, ...] = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    input_shape = (3, 32, 32)
    train_size = 50_000
    files = CIFAR10

    def read_split(self, name: str) -> Split:
        folder = Path(self.data_dir) / FOLDER
        names = read_cifar_meta(folder / "batches.meta")
        if len(names) != len(self.classes):
            raise ConfigError(f"{folder}/batches.meta: {len(names)} class names, CIFAR-10 has {len(self.classes)}")
        self.classes = names
        files = [f"data_batch_{i}" for i in range(1, 6)] if name == "train" else ["test_batch"]
        parts = [read_cifar_batch(folder / f) for f in files]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

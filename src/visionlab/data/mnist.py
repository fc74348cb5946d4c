"""The MNIST family, published as four idx files each: MNIST (handwritten digits) and
Fashion-MNIST (Zalando's clothes), 60,000 training and 10,000 test images, 28x28
grayscale, 10 classes."""

from __future__ import annotations

from pathlib import Path

import torch

from visionlab.data.datamodule import FileDataModule, Split
from visionlab.data.formats.idx import read_idx
from visionlab.data.sources import DatasetFiles, FileSpec
from visionlab.utils.errors import ConfigError


class IdxDataModule(FileDataModule):
    """Grayscale images and labels in the four idx files of the MNIST family."""

    def read_split(self, name: str) -> Split:
        prefix = "train" if name == "train" else "t10k"
        folder = Path(self.data_dir)
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", ndim=3, uint8=True)
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", ndim=1, uint8=True)
        if len(images) != len(labels):
            raise ConfigError(
                f"{folder}: {name} images {tuple(images.shape)} do not match labels {tuple(labels.shape)}"
            )
        return images.unsqueeze(1).contiguous(), labels.to(torch.int64)


MNIST = DatasetFiles(
    title="MNIST",
    files=(
        # the published md5s are of the .gz files themselves, which the mirrors keep byte for byte
        FileSpec("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", raw_md5=True),
        FileSpec("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", raw_md5=True),
        FileSpec("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", raw_md5=True),
        FileSpec("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", raw_md5=True),
    ),
    urls=("https://ossci-datasets.s3.amazonaws.com/mnist", "http://yann.lecun.com/exdb/mnist"),
    env_var="VISIONLAB_MNIST_DIR",
    how_to=(
        "Supply the four idx .gz files: put them in data.data_dir, or point "
        "VISIONLAB_MNIST_DIR at a folder holding them."
    ),
)


class MNISTDataModule(IdxDataModule):
    """MNIST from local copies or the official download, held in memory."""

    classes = tuple(str(d) for d in range(10))
    input_shape = (1, 28, 28)
    train_size = 60_000
    files = MNIST


FASHION_MNIST = DatasetFiles(
    title="Fashion-MNIST",
    files=(
        # md5 of the decompressed idx content: gzip wrappers differ between mirrors
        FileSpec("train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        FileSpec("train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9"),
        FileSpec("t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a"),
        FileSpec("t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965"),
    ),
    urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
    env_var="VISIONLAB_FASHION_MNIST_DIR",
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    how_to=(
        "Supply the four idx .gz files: put them in data.data_dir, or point "
        "VISIONLAB_FASHION_MNIST_DIR at a folder holding them, or (Debian, as root) "
        "run `apt-get install -y dataset-fashion-mnist`."
    ),
)


class FashionMNISTDataModule(IdxDataModule):
    """Fashion-MNIST from local copies or the official download, held in memory."""

    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    input_shape = (1, 28, 28)
    train_size = 60_000
    files = FASHION_MNIST

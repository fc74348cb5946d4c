"""MNIST: 60,000 training and 10,000 test handwritten digits, 28x28 grayscale, 10 classes."""

from __future__ import annotations

from visionlab.data.file_datamodule import IdxDataModule
from visionlab.data.sources import DatasetFiles, FileSpec

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

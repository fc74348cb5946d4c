"""Fashion-MNIST: 60,000 training and 10,000 test images, 28x28 grayscale, 10 classes."""

from __future__ import annotations

from visionlab.data.file_datamodule import IdxDataModule
from visionlab.data.sources import DatasetFiles, FileSpec

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

    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    input_shape = (1, 28, 28)
    train_size = 60_000
    files = FASHION_MNIST

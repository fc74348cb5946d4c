"""Data: sources (find, fetch, verify), file formats (formats/), batch transforms, loaders,
and the DataModules, one file per dataset (mnist.py holds the MNIST family)."""

from visionlab.data.cifar10 import CIFAR10DataModule
from visionlab.data.datamodule import InMemoryImageDataModule
from visionlab.data.image_folder import ImageFolderDataModule
from visionlab.data.loaders import MemoryLoader
from visionlab.data.mnist import FashionMNISTDataModule, MNISTDataModule
from visionlab.data.synthetic import SyntheticDataModule
from visionlab.data.transforms import Augment, BatchTransform

__all__ = [
    "Augment",
    "BatchTransform",
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "InMemoryImageDataModule",
    "MNISTDataModule",
    "MemoryLoader",
    "SyntheticDataModule",
]

"""Data: sources (find, fetch, verify), readers, batch transforms, loaders, DataModules."""

from visionlab.data.datamodule import InMemoryImageDataModule
from visionlab.data.fashion_mnist import FashionMNISTDataModule
from visionlab.data.loaders import MemoryLoader
from visionlab.data.synthetic import SyntheticDataModule
from visionlab.data.transforms import Augment, BatchTransform

__all__ = ["Augment", "BatchTransform", "FashionMNISTDataModule", "InMemoryImageDataModule",
           "MemoryLoader", "SyntheticDataModule"]
